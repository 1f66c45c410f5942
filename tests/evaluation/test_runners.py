"""Runners, reports and the CLI end to end with random-init metric models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_engine.video_io import write_video
from evaluation.cli import main
from evaluation.errors import EvaluationError
from evaluation.layered_io import read_sample
from evaluation.report.writer import write_comparison
from evaluation.results import RANDOM_WEIGHTS_NOTE, EvalRun
from evaluation.runners.decomposition import DecompositionConfig, run_decomposition
from evaluation.runners.generation import DEFAULT_PROMPTS, read_prompts
from evaluation.runners.score import run_score
from evaluation.suite import SuiteConfig

FAST = SuiteConfig(metrics=("frame_consistency",))


@pytest.fixture(scope="module")
def decomposition_run(davis_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("decomp")
    cfg = DecompositionConfig(davis_root, predictions=davis_root / "480p")
    return run_decomposition(cfg, out, FAST) + (out,)


def test_official_layers_as_predictions_give_perfect_alpha_and_plausible_bg(decomposition_run):
    run, files, out = decomposition_run
    assert sorted(run.accuracy) == ["dog", "lucia", "rhino"]
    for seq, row in run.accuracy.items():
        assert row["alpha_iou"] == 1.0 and row["alpha_sad"] == 0.0, seq
        assert row["bg_psnr"] == float("inf"), seq
        assert 28.0 < row["bg_psnr_visible"] < 45.0, seq  # official bg vs the real frames where the object is absent
    assert set(run.aggregates["frame_consistency"]) == {"fg", "bg"}  # Table 3: no blend column, no dynamic degree
    for name in ("json", "markdown", "bars", "distributions", "contact_sheet"):
        assert files[name].is_file() and files[name].stat().st_size > 0, name
    report = files["markdown"].read_text()
    assert RANDOM_WEIGHTS_NOTE in report and "| Frame Consistency |" in report and "| dog | 1.0000 | 0.0000 | inf |" in report
    back = EvalRun.load(out)
    assert back.accuracy["dog"]["bg_psnr"] == float("inf") and back.aggregates == run.aggregates
    json.loads((out / "results.json").read_text())  # standard JSON (no bare Infinity)


def test_prediction_with_wrong_frame_count_is_one_line(davis_root, tmp_path):
    pred = tmp_path / "pred" / "dog"
    gt = read_sample(davis_root / "480p" / "dog")
    write_video(pred / "alpha.mp4", gt.layers["alpha"][:15], 8.0, lossless=True)
    write_video(pred / "bg.mp4", gt.layers["bg"][:15], 8.0)
    data = tmp_path / "data"
    shutil.copytree(davis_root / "480p" / "dog", data / "dog")
    with pytest.raises(EvaluationError, match="prediction has 15 frames but ground truth has 16") as err:
        run_decomposition(DecompositionConfig(data, predictions=tmp_path / "pred"), tmp_path / "out", FAST)
    assert "\n" not in str(err.value)


def _write_samples(root: Path, n: int, frames: int = 6, size: int = 128) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"s{i}"
        base = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        video = np.repeat(base, frames, axis=0)
        alpha = np.zeros((frames, size, size), np.uint8)
        alpha[:, 32:96, 32:96] = 255
        for name in ("fg", "bg", "blend"):
            write_video(folder / f"{name}.mp4", video, 8.0)
        write_video(folder / "alpha.mp4", alpha, 8.0, lossless=True)
        (folder / "clip.json").write_text(json.dumps({"captions": {"fg": "a cat", "bg": "a room", "blend": "a cat in a room"}}))


def test_score_runner_reports_table1_layers(tmp_path):
    _write_samples(tmp_path / "gen", 2, frames=2)
    cfg = SuiteConfig(metrics=("dynamic_degree", "frame_consistency", "text_alignment"))
    run, files = run_score(tmp_path / "gen", tmp_path / "out", cfg)
    assert run.samples == ["s0", "s1"]
    assert set(run.aggregates["dynamic_degree"]) == {"fg", "blend"}  # Table 1: no BG dynamic degree
    assert set(run.aggregates["text_alignment"]) == {"fg", "bg", "blend"}
    assert run.aggregates["frame_consistency"]["bg"] == pytest.approx(1.0, abs=1e-5)  # static videos
    report = files["markdown"].read_text()
    assert "| Dynamic Degree |" in report and "viclip" in report and "Paper" not in report


def test_compare_and_cli(tmp_path, capsys):
    _write_samples(tmp_path / "gen", 1, frames=3)
    assert main(["score", str(tmp_path / "gen"), "--metrics", "aesthetic", "--out", str(tmp_path / "a")]) == 0
    assert main(["score", str(tmp_path / "gen"), "--metrics", "aesthetic", "frame_consistency",
                 "--consistency", "dino", "--out", str(tmp_path / "b")]) == 0
    assert "report.md" in capsys.readouterr().err
    files = write_comparison({"a": EvalRun.load(tmp_path / "a"), "b": EvalRun.load(tmp_path / "b")}, tmp_path / "c")
    text = files["markdown"].read_text()
    assert "| Aesthetic | FG |" in text and "b - a" in text and "0.0000" in text  # same models: zero difference
    assert files["bars"].is_file()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d")]) == 0
    assert main(["score", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a folder" in err and "\n" not in err


def test_prompt_files(tmp_path):
    prompts = read_prompts(DEFAULT_PROMPTS)
    assert len(prompts) == 8 and all(p.captions.fg and p.captions.bg and p.captions.blend for p in prompts)
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "fg": "x", "bg": "y", "blend": "z"}\n{"id": "b", "fg": "x"}\n')
    with pytest.raises(EvaluationError, match=r"p.jsonl:2: missing bg, blend"):
        read_prompts(bad)


def test_generation_runner_with_tiny_pipeline(tmp_path):
    from evaluation.runners.generation import GenerationConfig, run_generation

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(DEFAULT_PROMPTS.read_text().splitlines()[0] + "\n")
    cfg = GenerationConfig(prompts=prompts, num_frames=8, height=32, width=32, steps=1)
    run, files = run_generation(cfg, tmp_path / "out", SuiteConfig(metrics=("aesthetic", "frame_consistency")))
    sample = read_sample(tmp_path / "out" / "samples" / "corgi_beach")
    assert set(sample.layers) == {"fg", "alpha", "bg", "blend"} and sample.num_frames == 8
    assert sample.captions.blend.startswith("A corgi trots along")
    assert run.samples == ["corgi_beach"] and set(run.aggregates["aesthetic"]) == {"fg", "bg", "blend"}
    report = files["markdown"].read_text()
    assert "cf. paper Table 1" in report and "## Paper, Table 1" in report and "0.4859" in report


@pytest.mark.slow
def test_decomposition_runner_with_tiny_pipeline(davis_root, tmp_path):
    cfg = DecompositionConfig(davis_root, num_frames=8, height=32, width=48, steps=1, limit=1)
    run, _ = run_decomposition(cfg, tmp_path, SuiteConfig(metrics=("aesthetic",)))
    row = run.accuracy["dog"]
    assert 0.0 <= row["alpha_iou"] <= 1.0 and np.isfinite(row["bg_psnr_visible"])
