"""Known answers of the tiny-world task scores (`evaluation.metrics.toyworld`)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from data_engine.schema import MID_GREY, composite, over_grey
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from evaluation.errors import EvaluationError
from evaluation.metrics import toyworld as tw

HELD_OUT = SyntheticConfig(seed=1000, num_clips=4, height=32, width=48)


def db(mse: float) -> float:
    return 10.0 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(HELD_OUT, 0)


def layers(c) -> dict[str, np.ndarray]:
    return {"fg": c.fg, "alpha": c.alpha, "bg": c.bg, "blend": c.blend}


def test_masked_psnr_caps_perturbs_and_says_nan_when_empty():
    a = np.random.default_rng(0).integers(20, 200, (2, 8, 8, 3), dtype=np.uint8)
    assert tw.masked_psnr(a, a) == tw.PSNR_CAP == 100.0
    assert tw.masked_psnr(a + 10, a) == pytest.approx(db(100.0))  # 28.13 dB
    mask = np.zeros(a.shape[:-1], bool)
    mask[0, :4] = True
    b = a.copy()
    b[mask] += 20
    assert tw.masked_psnr(b, a, mask) == pytest.approx(db(400.0))
    assert tw.masked_psnr(b, a, ~mask) == 100.0
    assert math.isnan(tw.masked_psnr(b, a, np.zeros_like(mask)))
    with pytest.raises(EvaluationError):
        tw.masked_psnr(a[:1], a)


def test_object_region_is_any_alpha_grown_by_two_pixels():
    alpha = np.zeros((1, 9, 9), np.uint8)
    alpha[0, 4, 4] = 1
    region = tw.object_region(alpha)
    assert region.sum() == 25 and region[0, 2:7, 2:7].all()
    assert tw.object_region(alpha, dilation=0).sum() == 1


def test_decomposition_perfect_and_perturbed(clip):
    truth = layers(clip)
    assert tw.decomposition_scores(truth, truth) == {"alpha_iou": 1.0, "bg_psnr_object": 100.0,
                                                     "fg_psnr_object": 100.0}
    region = tw.object_region(clip.alpha)
    bg = clip.bg.astype(np.int16)
    bg[region] += np.where(bg[region] < 128, 10, -10)  # +-10 levels inside the region only
    bg[~region] = 0  # outside it nothing counts
    pred = dict(truth, bg=bg.astype(np.uint8))
    assert tw.decomposition_scores(pred, truth)["bg_psnr_object"] == pytest.approx(db(100.0))
    empty = np.zeros_like(clip.alpha)
    assert tw.alpha_iou(empty, empty) == 1.0  # both empty: they agree there is no object


def test_un_grey_inverts_over_grey_within_one_level():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1, 500, 500, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (1, 500, 500), dtype=np.uint8)
    bg = rng.integers(0, 256, (1, 500, 500, 3), dtype=np.uint8)
    back = composite(tw.un_grey(over_grey(rgb, alpha), alpha), alpha, bg)
    assert np.abs(back.astype(int) - composite(rgb, alpha, bg).astype(int)).max() <= 1


def test_coherence_of_true_layers_and_of_a_perturbed_blend(clip):
    true = tw.coherence_psnr({"fg": clip.fg, "alpha": clip.alpha, "bg": clip.bg, "blend": clip.blend})
    grey_direct = tw.masked_psnr(clip.blend, composite(clip.fg, clip.alpha, clip.bg))
    assert true > 55.0 and grey_direct < true - 10  # why fg is un-greyed first
    hard = np.where(clip.alpha >= 128, 255, 0).astype(np.uint8)  # a hard matte: no rounding anywhere
    fg = over_grey(clip.blend, hard)
    blend = composite(clip.blend, hard, clip.bg)
    layers = {"fg": fg, "alpha": hard, "bg": clip.bg}
    assert tw.coherence_psnr({**layers, "blend": blend}) == 100.0
    off = (blend.astype(int) + np.where(blend < 128, 5, -5)).astype(np.uint8)
    assert tw.coherence_psnr({**layers, "blend": off}) == pytest.approx(db(25.0))


def test_unchanged_is_exact():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    assert tw.unchanged(a, a.copy())
    b = a.copy()
    b[1, 2, 3, 0] = 1
    assert not tw.unchanged(a, b)
    assert not tw.unchanged(a, a.astype(np.int16)) and not tw.unchanged(a, a[:1])


def test_bg_conditioned_coverage_and_clear_blend():
    alpha = np.zeros((2, 20, 20), np.uint8)
    alpha[:, 5:15, 5:15] = 255
    assert tw.matte_coverage(alpha) == 0.25 and tw.nontrivial_coverage(0.25)
    assert not tw.nontrivial_coverage(0.0) and not tw.nontrivial_coverage(0.01) and not tw.nontrivial_coverage(0.7)
    bg = np.full((2, 20, 20, 3), 90, np.uint8)
    blend = composite(np.full_like(bg, 200), alpha, bg)
    blend[0, 0, 0] = 100  # one clear pixel off by 10 in every channel
    row = tw.bg_conditioned_scores(bg, {"fg": over_grey(np.full_like(bg, 200), alpha), "alpha": alpha, "blend": blend})
    assert row["coverage_ok"] and row["clear_pixels"] == 600
    assert row["clear_blend_psnr"] == pytest.approx(db(100.0 / 600))


def test_caption_words():
    assert tw.caption_words("A red rounded square glides to the left against a plain backdrop.") == \
        ("rounded square", "red")
    assert tw.caption_words("A white ring glides up over a striped ocean coloured pattern.") == ("ring", "white")
    assert tw.caption_words("a cat") == (None, None)


@pytest.mark.parametrize("size", [(32, 48), (64, 64)])
def test_shape_and_colour_recognised_on_the_worlds_own_layers(size):
    cfg = SyntheticConfig(seed=1000, height=size[0], width=size[1])
    seen: dict[str, set[str]] = {s: set() for s in tw.SHAPES}
    for index in range(48):
        c = synthetic_clip(cfg, index)
        got = tw.prompt_match(c.fg, c.alpha, c.captions.fg)
        assert (got["shape"], got["colour"]) == (c.scores["shape"], c.scores["colour"]), (index, got)
        assert got["shape_ok"] and got["colour_ok"] and got["shape_iou"] > 0.95
        seen[c.scores["shape"]].add(c.scores["colour"])
    assert all(len(colours) >= 3 for colours in seen.values()), seen


def test_noise_and_an_empty_matte_are_no_shape():
    noise = np.random.default_rng(2).integers(0, 256, (4, 32, 48), dtype=np.uint8)
    assert tw.detect_shape(noise)[0] is None
    assert tw.detect_shape(np.zeros((4, 32, 48), np.uint8)) == (None, 0.0)
    grey = np.full((4, 32, 48, 3), MID_GREY, np.uint8)
    assert tw.detect_colour(grey, np.full((4, 32, 48), 255, np.uint8))[0] is None  # grey is no named colour


def test_trivial_baseline_scores_on_a_synthetic_clip(clip):
    truth = layers(clip)
    t, h, w = clip.alpha.shape
    region = tw.object_region(clip.alpha)
    on = clip.alpha >= 128

    def mse(a, b, m):
        return float(np.mean((a.astype(float) - b.astype(float))[m] ** 2))

    dec = tw.decomposition_scores(tw.trivial_decomposition(clip.blend), truth)
    assert dec["alpha_iou"] == 0.0
    assert dec["bg_psnr_object"] == pytest.approx(db(mse(clip.blend, clip.bg, region)))
    assert dec["fg_psnr_object"] == pytest.approx(db(mse(np.full_like(clip.fg, 127), clip.fg, on)))

    out = tw.trivial_fg_conditioned(clip.fg, clip.alpha)
    assert np.array_equal(out["blend"], clip.fg)  # fg is already over grey
    fgc = tw.fg_conditioned_scores({"fg": clip.fg, "alpha": clip.alpha}, out, clip.bg)
    assert fgc["fg_unchanged"] and fgc["alpha_unchanged"]
    assert fgc["bg_psnr_object"] == pytest.approx(db(mse(np.full_like(clip.bg, 127), clip.bg, region)))

    bgc = tw.bg_conditioned_scores(clip.bg, tw.trivial_bg_conditioned(clip.bg))
    assert bgc == {"coverage": 0.0, "coverage_ok": False, "clear_blend_psnr": 100.0, "clear_pixels": t * h * w,
                   "bg_unchanged": True}

    gen = tw.generation_scores(tw.trivial_generation(t, h, w), clip.captions.fg)
    assert gen["coherence_psnr"] == 100.0
    assert (gen["shape"], gen["colour"], gen["shape_ok"], gen["colour_ok"]) == (None, None, False, False)
    assert (gen["named_shape"], gen["named_colour"]) == (clip.scores["shape"], clip.scores["colour"])
