"""`layerflow view PREDICTIONS --truth DATA --results RUN` and `layerflow view EVAL_RUN`: a decomposition against its
ground truth, with the run's per-layer scores (the truth tiles are the truth's pixels, read back from the page's data
and canvas), and a score run's samples with theirs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from studio_browser import canvas_pixels, console_errors, frame_pixels, open_page

from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import encode_png, write_video
from evaluation.results import EvalRun, Score
from layerflow.studio.view_cli import main as view_main
from model.export import ExportOptions, export_clip

WORLD = dict(num_clips=1, num_frames=3, height=16, width=20)


@pytest.fixture(scope="module")
def decomposition(tmp_path_factory):
    """DAVIS-layout truth `data/dog/{fg,mask,bg,bl}/*.png`, predictions `pred/dog/{fg,alpha,bg}.mp4` (the truth's
    layers with the object shifted) and a run that scored them."""
    root = tmp_path_factory.mktemp("decomposition")
    clip = synthetic_clip(SyntheticConfig(**WORLD), 0)
    seq = root / "data" / "dog"
    for layer, name in (("fg", "fg"), ("alpha", "mask"), ("bg", "bg"), ("blend", "bl")):
        (seq / name).mkdir(parents=True)
        for i, frame in enumerate(clip.layer(layer)):
            (seq / name / f"{i:05d}.png").write_bytes(encode_png(frame))
    (seq / "clip.json").write_text(json.dumps({"captions": clip.captions.as_dict()}))
    pred = root / "pred" / "dog"
    write_video(pred / "fg.mp4", np.roll(clip.fg, 2, axis=2), clip.fps)
    write_video(pred / "alpha.mp4", np.roll(clip.alpha, 2, axis=2), clip.fps, lossless=True)
    write_video(pred / "bg.mp4", clip.bg, clip.fps)
    run = EvalRun("decomposition", scores=[Score("dog", "fg", "aesthetic", 0.25)],
                  accuracy={"dog": {"alpha_iou": 0.75}},
                  meta={"data": str(root / "data"), "predictions": str(root / "pred")})
    run.save(root / "run")
    return root, clip


@pytest.fixture(scope="module")
def truth_page(decomposition):
    root, _ = decomposition
    assert view_main([str(root / "pred"), "--truth", str(root / "data"), "--results", str(root / "run"),
                      "--out", str(root / "page")]) == 0
    return root / "page" / "index.html"


def page_samples(index_html):
    return json.loads((index_html.parent / "assets" / "data.js").read_text().split("=", 1)[1].rstrip(";\n"))["samples"]


def test_predictions_against_the_truth_with_the_run_scores(decomposition, truth_page):
    root, clip = decomposition
    (sample,) = page_samples(truth_page)
    layers = {layer["name"]: layer for layer in sample["layers"]}
    assert {"truth_fg", "truth_alpha", "truth_bg", "fg", "alpha", "bg", "blend"} <= set(layers)
    assert np.array_equal(frame_pixels(layers["truth_alpha"]["frames"][1]), clip.alpha[1])
    assert np.array_equal(frame_pixels(layers["truth_fg"]["frames"][0])[..., 3], clip.alpha[0])
    assert np.array_equal(frame_pixels(layers["alpha"]["frames"][0]), np.roll(clip.alpha[0], 2, axis=1))
    assert {"layer": "fg", "metric": "aesthetic", "value": 0.25} in sample["metrics"]
    assert {"layer": "", "metric": "alpha_iou", "value": 0.75} in sample["metrics"]
    # The run folder alone names its predictions and data.
    assert view_main([str(root / "run"), "--out", str(root / "page2")]) == 0
    assert page_samples(root / "page2" / "index.html") == [sample]


def test_a_run_without_kept_predictions_says_what_to_pass(tmp_path, capsys):
    EvalRun("decomposition", meta={"data": str(tmp_path), "predictions": None}).save(tmp_path / "run")
    assert view_main([str(tmp_path / "run")]) == 2
    assert "kept no layers" in capsys.readouterr().err


def test_the_page_draws_the_truth_and_lists_the_scores(chrome, decomposition, truth_page):
    _, clip = decomposition
    assert console_errors(open_page(chrome, truth_page)) == []
    drawn = canvas_pixels(chrome, "layer-truth_alpha")[..., 0]
    assert np.array_equal(drawn, clip.alpha[0])
    table = chrome.find_element("id", "metrics-table").text
    assert "alpha_iou" in table and "0.7500" in table and "aesthetic" in table


def test_a_score_run_shows_its_samples_with_their_scores(tmp_path):
    clip = synthetic_clip(SyntheticConfig(**WORLD), 0)
    export_clip(clip, tmp_path / "outputs" / "s0", ExportOptions(rgba_formats=("png",), preview=False))
    EvalRun("score", scores=[Score("s0", "blend", "frame_consistency", 0.5)],
            meta={"source": str(tmp_path / "outputs")}).save(tmp_path / "run")
    assert view_main([str(tmp_path / "run"), "--out", str(tmp_path / "page")]) == 0
    (sample,) = page_samples(tmp_path / "page" / "index.html")
    assert sample["key"] == clip.key and sample["metrics"] == [
        {"layer": "blend", "metric": "frame_consistency", "value": 0.5}]
