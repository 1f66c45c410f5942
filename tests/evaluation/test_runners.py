"""Runners, reports and the CLI end to end with random-init metric models."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from data_engine.video_io import write_video
from evaluation.cli import main
from evaluation.errors import EvaluationError
from evaluation.layered_io import read_sample
from evaluation.metrics.layer_accuracy import visible_bg_psnr
from evaluation.report.writer import write_comparison
from evaluation.results import RANDOM_WEIGHTS_NOTE, EvalRun
from evaluation.runners.decomposition import DecompositionConfig, run_decomposition
from evaluation.runners.generation import DEFAULT_PROMPTS, read_prompts
from evaluation.runners.score import run_score
from evaluation.suite import SuiteConfig
from model.numerics import FLOAT32_EPS

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
    assert (RANDOM_WEIGHTS_NOTE in report and "| Frame Consistency |" in report
            and "| dog | 1.0000 | 0.0000 | inf |" in report)
    back = EvalRun.load(out)
    assert back.accuracy["dog"]["bg_psnr"] == float("inf") and back.aggregates == run.aggregates
    json.loads((out / "results.json").read_text())  # standard JSON (no bare Infinity)


def test_visible_bg_psnr_says_how_many_pixels_it_rests_on():
    alpha = np.zeros((2, 2, 3), np.uint8)
    alpha[0, 0, :2] = 255  # 2 of the 12 pixels are covered: 10 are visible
    blend = np.full((2, 2, 3, 3), 100, np.uint8)
    pred = blend.copy()
    pred[1, 1, 2] = 110  # one visible pixel off by 10 in each channel
    pred[0, 0, 0] = 0  # a covered pixel: not counted
    value, pixels = visible_bg_psnr(pred, blend, alpha)
    assert pixels == 10
    # MSE over the 10 visible pixels x 3 channels: 3 * 10^2 / 30 = 10; float64 throughout, so only its rounding
    assert value == pytest.approx(10 * math.log10(255 ** 2 / 10), rel=1e-12)
    value, pixels = visible_bg_psnr(pred, blend, np.full_like(alpha, 255))
    assert math.isnan(value) and pixels == 0


def test_decomposition_never_loads_raft_nor_shows_dynamic_degree(tmp_path, make_davis, monkeypatch):
    data = make_davis(tmp_path / "DAVIS", ("a", "b"))

    def no_raft(*args, **kwargs):
        raise AssertionError("decomposition built RAFT, but it never reports Dynamic Degree")

    monkeypatch.setattr("evaluation.metrics.dynamic_degree.build_raft", no_raft)
    suite = SuiteConfig(metrics=("dynamic_degree", "frame_consistency"))
    run, files = run_decomposition(DecompositionConfig(data, predictions=data / "480p"), tmp_path / "out", suite)
    assert set(run.aggregates) == set(run.variants) == {"frame_consistency"}
    assert "Dynamic Degree" not in files["markdown"].read_text()
    # plot_bars draws one 3.2-inch panel per metric at 110 dpi: a single panel, no empty Dynamic Degree one
    assert Image.open(files["bars"]).width == round(3.2 * 110)
    with pytest.raises(EvaluationError, match="none of dynamic_degree is reported for this task"):
        run_decomposition(DecompositionConfig(data, predictions=data / "480p"), tmp_path / "out2",
                          SuiteConfig(metrics=("dynamic_degree",)))


def test_decomposition_predictions_may_be_the_data_root(tmp_path, make_davis):
    data = make_davis(tmp_path / "DAVIS", ("a", "b"))
    run, files = run_decomposition(DecompositionConfig(data, predictions=data), tmp_path / "out", FAST)
    for seq in ("a", "b"):
        row = run.accuracy[seq]  # the ground truth read back as the prediction
        assert (row["alpha_iou"], row["alpha_sad"]) == (1.0, 0.0)
        assert row["bg_psnr"] == row["bg_psnr_visible"] == math.inf
        alpha = read_sample(data / "480p" / seq).layers["alpha"]
        assert row["bg_visible_pixels"] == int((alpha == 0).sum()) == 3 * (64 * 64 - 16 * 16)
    report = files["markdown"].read_text()
    assert "pixels with GT alpha = 0" in report and "| a | 1.0000 | 0.0000 | inf | inf | 11520 |" in report
    flat = tmp_path / "flat"
    shutil.copytree(data / "480p" / "a", flat / "a")  # <predictions>/<seq>/, the layout the pipeline writes
    run, _ = run_decomposition(DecompositionConfig(data, predictions=flat, limit=1), tmp_path / "out2", FAST)
    assert run.accuracy["a"]["alpha_iou"] == 1.0
    with pytest.raises(EvaluationError, match=r"b: no prediction at .*480p/b or .*flat/b; --predictions holds") as err:
        run_decomposition(DecompositionConfig(data, predictions=flat), tmp_path / "out3", FAST)
    assert "\n" not in str(err.value)


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


def test_score_runner_reports_table1_layers(tmp_path, make_layered_samples):
    make_layered_samples(tmp_path / "gen", 2, frames=2)
    cfg = SuiteConfig(metrics=("dynamic_degree", "frame_consistency", "text_alignment"))
    run, files = run_score(tmp_path / "gen", tmp_path / "out", cfg)
    assert run.samples == ["s0", "s1"]
    assert set(run.aggregates["dynamic_degree"]) == {"fg", "blend"}  # Table 1: no BG dynamic degree
    assert set(run.aggregates["text_alignment"]) == {"fg", "bg", "blend"}
    assert run.aggregates["frame_consistency"]["bg"] == pytest.approx(1.0, abs=16 * FLOAT32_EPS)  # static videos
    report = files["markdown"].read_text()
    assert "| Dynamic Degree |" in report and "viclip" in report and "Paper" not in report


def test_compare_and_cli(tmp_path, capsys, make_layered_samples):
    make_layered_samples(tmp_path / "gen", 1, frames=3)
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


def test_generation_runner_generates_every_foreground_of_a_prompt(tmp_path):
    """A prompt line with fg_1 generates two foregrounds; each is scored with its own prompt."""
    from evaluation.runners.generation import GenerationConfig, run_generation

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "two", "fg": "a red disc", "fg_1": "a blue ring", "bg": "a beach", '
                       '"blend": "a red disc before a blue ring on a beach"}\n')
    assert read_prompts(prompts)[0].captions.more_fg == ("a blue ring",)
    cfg = GenerationConfig(prompts=prompts, num_frames=8, height=32, width=32, steps=1)
    run, _ = run_generation(cfg, tmp_path / "out", SuiteConfig(metrics=("frame_consistency",)))
    sample = read_sample(tmp_path / "out" / "samples" / "two")
    assert set(sample.layers) == {"fg", "alpha", "bg", "blend", "fg_1", "alpha_1"}
    assert sample.captions.more_fg == ("a blue ring",)
    assert set(run.aggregates["frame_consistency"]) == {"fg", "fg_1", "bg", "blend"}
    gap = tmp_path / "gap.jsonl"
    gap.write_text('{"id": "a", "fg": "x", "fg_2": "y", "bg": "y", "blend": "z"}\n')
    with pytest.raises(EvaluationError, match="gap.jsonl:1: .*without a gap"):
        read_prompts(gap)
