"""Number-for-number parity with VBench's own scores (vbench_ref/scores.json), opt-in.

Needs the weights written by `python vbench_ref/make_weights.py DIR` (4.3 GB); set LAYERFLOW_VBENCH_WEIGHTS=DIR
and run `pytest -m slow tests/evaluation/test_vbench_parity.py`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data_engine.video_io import decode_video
from evaluation.metrics.aesthetic import AestheticQuality
from evaluation.metrics.dynamic_degree import DynamicDegree
from evaluation.metrics.frame_consistency import FrameConsistency

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ref(vbench_ref):
    weights = os.environ.get("LAYERFLOW_VBENCH_WEIGHTS")
    if not weights or not (Path(weights) / "modern").is_dir():
        pytest.skip("set LAYERFLOW_VBENCH_WEIGHTS to a folder written by vbench_ref/make_weights.py")
    scores = json.loads((vbench_ref / "scores.json").read_text())
    videos = {name: decode_video(vbench_ref / info["file"]) for name, info in scores["videos"].items()}
    return Path(weights) / "modern", scores["metrics"], videos


def test_aesthetic_matches_vbench(ref):
    w, metrics, videos = ref
    m = AestheticQuality(w / "clip_vit_l14_openai_keys.safetensors", w / "aesthetic_head_linear768.safetensors")
    want = metrics["aesthetic_quality"]
    for name, frames in videos.items():
        s = m.score_video(frames)
        raw = want["diagnostics"]["per_frame_head_output_raw(before_/10)"][name]
        assert [10 * v for v in s.details["per_frame"]] == pytest.approx(raw, abs=1e-4), name
        assert s.value == pytest.approx(want["per_video"][name], abs=1e-5), name


@pytest.mark.parametrize("backbone, key, file", [
    ("clip", "background_consistency", "clip_vit_b32_openai_keys.safetensors"),
    ("dino", "subject_consistency", "dino_vitb16.safetensors"),
])
def test_consistency_matches_vbench(ref, backbone, key, file):
    w, metrics, videos = ref
    m = FrameConsistency(backbone, w / file)
    for name, frames in videos.items():
        s = m.score_video(frames)
        pairs = metrics[key]["diagnostics"]["per_pair"][name]
        assert s.details["cos_prev"] == pytest.approx(pairs["cos_prev"], abs=1e-4), name
        assert s.details["cos_first"] == pytest.approx(pairs["cos_first"], abs=1e-4), name
        assert s.value == pytest.approx(metrics[key]["per_video"][name], abs=1e-5), name


def test_dynamic_degree_matches_vbench(ref):
    w, metrics, videos = ref
    m = DynamicDegree(w / "raft_large_torchvision.safetensors")
    want = metrics["dynamic_degree"]
    for name, frames in videos.items():
        s = m.score_video(frames, fps=8.0)
        diag = want["diagnostics"][name]
        assert s.details["threshold"] == diag["thres"] and s.details["count_needed"] == diag["count_num"], name
        assert s.details["pair_scores"] == pytest.approx(diag["pair_max_rad_top5pct"], rel=1e-4), name
        assert bool(s.value) == want["per_video"][name], name
