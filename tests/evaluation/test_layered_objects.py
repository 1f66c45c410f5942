"""K foregrounds in evaluation: reading them, per-object accuracy, the runners' tables and the toy-world scores."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from data_engine.schema import Captions, LayeredClip, composite, composite_layers, over_grey
from evaluation.errors import EvaluationError
from evaluation.layered_io import LayerSet, read_sample
from evaluation.metrics import toyworld as tw
from evaluation.metrics.base import Metric, VideoScore
from evaluation.metrics.layer_accuracy import alpha_iou, object_alpha_accuracy
from evaluation.report.contact_sheet import layer_tiles
from evaluation.results import layer_title, report_layers
from evaluation.runners.decomposition import DecompositionConfig, run_decomposition
from evaluation.suite import SuiteConfig, sample_layers, score_samples
from model.export import ExportOptions, export_clip

T, S = 3, 32
FAST = SuiteConfig(metrics=("frame_consistency",))
# Two 8 x 8 squares overlapping in 4 x 4: IoU of one against the other 16 / (64 + 64 - 16) = 1 / 7, and per frame
# 2 * (64 - 16) = 96 pixels differ by a whole alpha, so SAD (in thousands) is 0.096.
SWAPPED_IOU = 16 / 112
SWAPPED_SAD = 96 / 1000


def _square(top: int, left: int, size: int = 8) -> np.ndarray:
    alpha = np.zeros((T, S, S), np.uint8)
    alpha[:, top:top + size, left:left + size] = 255
    return alpha


def _solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (T, S, S, 3)).copy()


def _two_objects() -> dict[str, np.ndarray]:
    """A red square (object 0, front) over a blue one (object 1) on a textured bg; the blend composited exactly."""
    alpha, alpha_1 = _square(4, 4), _square(8, 8)
    red, blue = _solid((220, 20, 20)), _solid((20, 20, 220))
    bg = np.random.default_rng(0).integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    return {"fg": over_grey(red, alpha), "alpha": alpha, "fg_1": over_grey(blue, alpha_1), "alpha_1": alpha_1,
            "bg": bg, "blend": composite_layers([red, blue], [alpha, alpha_1], bg)}


def _soft_object(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    alpha = rng.integers(0, 256, (T, S, S), dtype=np.uint8)
    return {"fg": over_grey(rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8), alpha), "alpha": alpha,
            "bg": rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8),
            "blend": rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)}


def _swap_objects(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**layers, "fg": layers["fg_1"], "alpha": layers["alpha_1"], "fg_1": layers["fg"],
            "alpha_1": layers["alpha"]}


# ---- per-object alpha accuracy ------------------------------------------------------------------------------

def test_per_object_alpha_accuracy_known_answers():
    truth = _two_objects()
    assert object_alpha_accuracy(truth, truth) == {"alpha_iou": 1.0, "alpha_iou_1": 1.0, "alpha_iou_mean": 1.0,
                                                   "alpha_sad": 0.0, "alpha_sad_1": 0.0, "alpha_sad_mean": 0.0}
    swapped = object_alpha_accuracy(_swap_objects(truth), truth)
    assert swapped == {"alpha_iou": SWAPPED_IOU, "alpha_iou_1": SWAPPED_IOU, "alpha_iou_mean": SWAPPED_IOU,
                       "alpha_sad": SWAPPED_SAD, "alpha_sad_1": SWAPPED_SAD, "alpha_sad_mean": SWAPPED_SAD}
    half = object_alpha_accuracy({**truth, "alpha_1": truth["alpha"]}, truth)  # object 1 wrong, object 0 right
    assert (half["alpha_iou"], half["alpha_iou_1"], half["alpha_iou_mean"]) == (1.0, SWAPPED_IOU,
                                                                                (1.0 + SWAPPED_IOU) / 2)


def test_one_object_keeps_the_paper_keys_and_counts_must_match():
    one = _soft_object(1)
    assert set(object_alpha_accuracy(one, one)) == {"alpha_iou", "alpha_sad"}  # no mean of one value
    with pytest.raises(EvaluationError, match="prediction has 1 matte.* ground truth 2 object") as err:
        object_alpha_accuracy(one, _two_objects())
    assert "\n" not in str(err.value)


# ---- toy-world K-object scores ------------------------------------------------------------------------------

def test_decomposition_scores_of_two_objects_known_answers():
    truth = _two_objects()
    perfect = tw.decomposition_scores(truth, truth)
    assert perfect == {"alpha_iou": 1.0, "alpha_iou_1": 1.0, "alpha_iou_mean": 1.0, "bg_psnr_object": tw.PSNR_CAP,
                       "fg_psnr_object": tw.PSNR_CAP, "fg_psnr_object_1": tw.PSNR_CAP,
                       "fg_psnr_object_mean": tw.PSNR_CAP}
    swapped = tw.decomposition_scores(_swap_objects(truth), truth)
    assert (swapped["alpha_iou"], swapped["alpha_iou_1"], swapped["alpha_iou_mean"]) == (SWAPPED_IOU,) * 3
    # A ghost at (17, 17): in object 1's region (rows / columns 8..15 grown by 2 px) but not object 0's (4..11 + 2).
    ghost = {**truth, "bg": truth["bg"].copy()}
    ghost["bg"][:, 17, 17] = truth["bg"][:, 17, 17] ^ 8  # every channel off by exactly 8
    # The union of the two grown squares: 12^2 + 12^2 - 8^2 (their overlap, rows / columns 6..13) = 224 pixels.
    union_mse = 3 * 8 ** 2 / (224 * 3)
    got = tw.decomposition_scores(ghost, truth)["bg_psnr_object"]
    assert got == pytest.approx(10 * math.log10(255 ** 2 / union_mse), rel=1e-12)
    assert tw.bg_psnr_in_object(ghost["bg"], truth["bg"], truth["alpha"]) == tw.PSNR_CAP  # object 0 alone misses it


def test_one_object_is_scored_by_its_own_matte_and_region():
    """K = 1 is a case of the K-object scores: each number is the one-object building block's."""
    pred, true = _soft_object(2), _soft_object(3)
    assert tw.decomposition_scores(pred, true) == {
        "alpha_iou": alpha_iou(pred["alpha"], true["alpha"]),
        "bg_psnr_object": tw.bg_psnr_in_object(pred["bg"], true["bg"], true["alpha"]),
        "fg_psnr_object": tw.fg_psnr_on_object(pred["fg"], true["fg"], true["alpha"])}
    implied = composite(tw.un_grey(pred["fg"], pred["alpha"]), pred["alpha"], pred["bg"])
    assert tw.coherence_psnr(pred) == tw.masked_psnr(pred["blend"], implied)


def test_coherence_of_two_objects_known_answers():
    clip = _two_objects()
    assert tw.coherence_psnr(clip) == tw.PSNR_CAP  # hard mattes: un_grey is exact, so is the composite
    front_only = {n: clip[n] for n in ("fg", "alpha", "bg", "blend")}
    assert tw.coherence_psnr(front_only) < 40  # object 1 ignored
    off = {**clip, "blend": clip["blend"].copy()}
    off["blend"][0, 0, 0, 0] ^= 16  # one value of T * S * S * 3 off by 16
    assert tw.coherence_psnr(off) == pytest.approx(10 * math.log10(255 ** 2 * T * S * S * 3 / 16 ** 2), rel=1e-12)
    with pytest.raises(EvaluationError, match="coherence needs fg and alpha layers"):
        tw.coherence_psnr({"bg": clip["bg"], "blend": clip["blend"]})


# ---- reading K-foreground folders and scoring every foreground ---------------------------------------------

def test_read_sample_finds_every_foreground_of_an_export(tmp_path):
    layers = _two_objects()
    clip = LayeredClip("gen-00000-00", layers["fg"], layers["alpha"], layers["bg"], layers["blend"],
                       Captions("red square", "noise", "two squares", more_fg=("blue square",)),
                       more_layers={"fg_1": layers["fg_1"], "alpha_1": layers["alpha_1"]})
    export_clip(clip, tmp_path / "s", ExportOptions(rgba_formats=(), preview=False))
    sample = read_sample(tmp_path / "s")
    assert list(sample.layers) == ["fg", "alpha", "bg", "blend", "fg_1", "alpha_1"]
    assert sample.num_foregrounds == 2 and sample.captions.as_dict()["fg_1"] == "blue square"
    assert np.array_equal(sample.layers["alpha_1"], layers["alpha_1"])  # lossless alpha_1.mp4
    assert set(read_sample(tmp_path / "s", layers=("fg", "alpha")).layers) == {"fg", "alpha"}


def test_metrics_of_the_foreground_cover_every_foreground_with_its_own_prompt():
    layers = _two_objects()
    sample = LayerSet("s", layers, Captions("front", "back", "all", more_fg=("behind",)))
    assert sample_layers(sample, ("fg", "bg", "blend")) == ["fg", "fg_1", "bg", "blend"]
    assert sample_layers(LayerSet("p", {k: layers[k] for k in ("fg", "blend")}), ("fg", "bg", "blend")) == \
        ["fg", "blend"]

    class Prompted(Metric):  # scores a layer by the length of its prompt: which prompt went where, exactly
        name, needs_prompt, variant, random_init = "prompted", True, "test", False

        def score_video(self, frames, *, fps=8.0, prompt=None):
            return VideoScore(float(len(prompt)))

    run = score_samples([sample], {"text_alignment": Prompted()}, {"text_alignment": ("fg", "bg")}, "score")
    assert run.aggregates == {"text_alignment": {"fg": 5.0, "fg_1": 6.0, "bg": 4.0}}


def test_contact_sheet_shows_every_foreground_over_a_checkerboard():
    layers = _two_objects()
    tiles = layer_tiles(LayerSet("s", layers))
    assert set(tiles) == {"fg", "alpha", "fg_1", "alpha_1", "bg", "blend"}
    assert np.array_equal(tiles["alpha_1"], np.repeat(layers["alpha_1"][0, ..., None], 3, axis=-1))
    back = layers["alpha_1"][0] == 255
    assert (tiles["fg_1"][back] == (20, 20, 220)).all()
    assert set(np.unique(tiles["fg_1"][~back])) == {153, 204}


def test_report_order_and_titles():
    assert report_layers(["blend", "fg_2", "bg", "fg", "fg_1", "fg"]) == ["fg", "fg_1", "fg_2", "bg", "blend"]
    assert [layer_title(x) for x in ("fg", "fg_1", "bg", "blend")] == ["FG", "FG_1", "BG", "BL"]


# ---- the decomposition benchmark with two objects ----------------------------------------------------------

def _write_frames(folder, stack) -> None:
    folder.mkdir(parents=True)
    for t, frame in enumerate(stack):
        Image.fromarray(frame).save(folder / f"{t:04d}.png")


def _two_object_davis(root, swap: bool = False):
    """`<root>/480p/two/{fg,mask,fg_1,mask_1,bg,bl}` of `_two_objects` (objects swapped if `swap`)."""
    layers = _swap_objects(_two_objects()) if swap else _two_objects()
    names = {"fg": "fg", "alpha": "mask", "fg_1": "fg_1", "alpha_1": "mask_1", "bg": "bg", "blend": "bl"}
    for layer, name in names.items():
        _write_frames(root / "480p" / "two" / name, layers[layer])
    prompts = {"fg_prompt": "a red square", "bg_prompt": "noise", "bl_prompt": "two squares"}
    (root / "480p" / "meta_test.json").write_text(json.dumps({"videos": {"two": prompts}}))
    return root


def test_decomposition_runner_reports_each_object_and_their_mean(tmp_path):
    data = _two_object_davis(tmp_path / "DAVIS")
    run, files = run_decomposition(DecompositionConfig(data, predictions=data), tmp_path / "out", FAST)
    row = run.accuracy["two"]
    assert (row["alpha_iou"], row["alpha_iou_1"], row["alpha_iou_mean"]) == (1.0, 1.0, 1.0)
    assert (row["alpha_sad"], row["alpha_sad_1"], row["alpha_sad_mean"]) == (0.0, 0.0, 0.0)
    # The background is seen where neither square is: 32^2 - (64 + 64 - 16) pixels per frame.
    assert row["bg_visible_pixels"] == T * (S * S - 112) and row["bg_psnr_visible"] == math.inf
    assert list(run.aggregates["frame_consistency"]) == ["fg", "fg_1", "bg"]
    report = files["markdown"].read_text()
    assert "| Metric | FG | FG_1 | BG |" in report
    assert ("| Sample | alpha IoU | alpha IoU, object 1 | alpha IoU, mean over objects | alpha SAD (x1000) | "
            "alpha SAD (x1000), object 1 | alpha SAD (x1000), mean over objects |") in report
    assert "| two | 1.0000 | 1.0000 | 1.0000 | 0.0000 | 0.0000 | 0.0000 | inf |" in report

    swapped = _two_object_davis(tmp_path / "swapped", swap=True)
    run, _ = run_decomposition(DecompositionConfig(data, predictions=swapped), tmp_path / "out2", FAST)
    row = run.accuracy["two"]
    assert (row["alpha_iou"], row["alpha_iou_1"], row["alpha_iou_mean"]) == (SWAPPED_IOU,) * 3
    assert (row["alpha_sad"], row["alpha_sad_1"], row["alpha_sad_mean"]) == (SWAPPED_SAD,) * 3

    one = tmp_path / "one" / "two"
    shutil.copytree(data / "480p" / "two", one)
    shutil.rmtree(one / "fg_1")
    shutil.rmtree(one / "mask_1")
    with pytest.raises(EvaluationError, match="two: the prediction has 1 matte.*ground truth 2 object") as err:
        run_decomposition(DecompositionConfig(data, predictions=tmp_path / "one"), tmp_path / "out3", FAST)
    assert "\n" not in str(err.value)
