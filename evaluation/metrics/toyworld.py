"""Scores of the four tasks on clips of the tiny synthetic world (`data_engine.synthetic`), pure numpy.

Layers are uint8: fg / bg / blend [T, H, W, 3], alpha [T, H, W]; fg is stored over mid-grey (127) where alpha = 0,
as everywhere in LayerFlow. Conventions shared by every function here:

- A pixel is *on* (foreground) when alpha >= 128, i.e. alpha > 0.5 (`ALPHA_THRESHOLD`, as in `layer_accuracy`).
- PSNR is over every pixel and channel selected, against a peak of 255, pooled over the whole clip (one MSE),
  and capped at `PSNR_CAP` = 100 dB: a perfect match scores 100.0, not inf, so that means over clips stay finite.
  Over an empty selection it is NaN (the caller decides how to count it).
- The *object region* of a true matte is every pixel the object touches at all (alpha > 0, its soft edge
  included), dilated by `REGION_DILATION` = 2 px (Chebyshev) per frame: a halo or ghost that a model leaves just
  outside the edge is scored too.

Clips with K objects (fg_k, alpha_k beside fg, alpha: `data_engine.schema.layer_names`) go through the same
functions: decomposition is scored per object (matched by layer index) and coherence against the composite of
every foreground; one object is the case K = 1, not a separate path.

The world's vocabulary (`SHAPES`, `COLOURS`) and its shapes come from `data_engine.synthetic`, the world itself.
The trivial baseline (`trivial_*`) produces layers that go through the same scores.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from data_engine.schema import MID_GREY, alpha_name, composite, composite_layers, fg_name
from data_engine.synthetic import COLOURS, SHAPES, SyntheticConfig, signed_distance
from evaluation.errors import EvaluationError
from evaluation.metrics.layer_accuracy import (
    ALPHA_THRESHOLD,
    alpha_iou,
    matte_count,
    object_mattes,
    per_object,
    union_matte,
)

PSNR_CAP = 100.0
REGION_DILATION = 2  # px
ALPHA_CLEAR = 12  # a generated matte says "background" where alpha <= 12 (< 5 %)
COVERAGE_RANGE = (0.02, 0.60)  # a non-trivial matte covers 2 % .. 60 % of the clip's pixels
SHAPE_MIN_IOU = 0.8  # a matte is a shape when its mean soft IoU with the fitted template reaches this
COLOUR_MAX_DISTANCE = 80.0  # RGB distance: a mean colour farther than this from every named colour is none of them



def _check(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise EvaluationError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; "
                              f"give layers of the same frame count and size")


def masked_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) of `pred` against `ref` over the pixels where `mask` [T, H, W] is true (all pixels if None).

    One MSE pooled over every selected pixel and channel of the clip, peak 255, capped at `PSNR_CAP` (a perfect
    match gives 100.0); NaN when the mask selects nothing. The building block of every PSNR below."""
    _check(pred, ref, "psnr")
    err = pred.astype(np.float64) - ref.astype(np.float64)
    if mask is not None:
        if mask.shape != pred.shape[:mask.ndim] or mask.dtype != bool:
            raise EvaluationError(f"psnr: the mask must be bool of shape {tuple(pred.shape[:-1])}, got "
                                  f"{mask.dtype} {tuple(mask.shape)}")
        err = err[mask]
    if err.size == 0:
        return math.nan
    mse = float(np.mean(err ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * math.log10(255.0 ** 2 / mse))


def object_region(true_alpha: np.ndarray, dilation: int = REGION_DILATION) -> np.ndarray:
    """Bool [T, H, W]: where the true object is (alpha > 0, its soft edge included), grown by `dilation` px in
    every direction (a (2d+1)^2 square per frame). The pixels whose background a model had to invent, plus a
    margin where its ghost or halo would show."""
    region = true_alpha > 0
    if dilation <= 0:
        return region
    t, h, w = region.shape
    padded = np.pad(region, ((0, 0), (dilation, dilation), (dilation, dilation)))
    grown = np.zeros_like(region)
    for dy in range(2 * dilation + 1):
        for dx in range(2 * dilation + 1):
            grown |= padded[:, dy:dy + h, dx:dx + w]
    return grown


def un_grey(fg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The object's own RGB from its over-grey fg layer: the inverse of `schema.over_grey`,
    rgb = (fg - 127 (1 - a)) / a rounded and clipped, where alpha > 0; mid-grey where alpha = 0 (any value would
    do: it is weighted by 0 wherever it is composited). `composite(un_grey(fg, a), a, bg)` is within 1 level of
    `composite(rgb, a, bg)` when fg = over_grey(rgb, a), since the rounding error of fg is divided by a here and
    multiplied by a again there."""
    _check(fg[..., 0], alpha, "un_grey")
    a = alpha.astype(np.float64)[..., None] / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = (fg.astype(np.float64) - MID_GREY * (1.0 - a)) / a
    rgb = np.where(a > 0, rgb, MID_GREY)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# ---- decomposition: blend -> fg, alpha, bg -------------------------------------------------------------------

def bg_psnr_in_object(pred_bg: np.ndarray, true_bg: np.ndarray, true_alpha: np.ndarray) -> float:
    """PSNR of a predicted background against the true one inside the true object's region (`object_region`).
    Only there is the background hidden in the blend, so only there does it measure what a decomposer or a
    fg-conditioned generator had to invent: a ghost of the object left in the background scores low. NaN when
    the object is absent from the whole clip."""
    _check(pred_bg, true_bg, "background")
    return masked_psnr(pred_bg, true_bg, object_region(true_alpha))


def fg_psnr_on_object(pred_fg: np.ndarray, true_fg: np.ndarray, true_alpha: np.ndarray) -> float:
    """PSNR of a predicted fg layer against the true fg where the true alpha > 0.5: the object's colour where
    the object is. Both layers are over grey; where alpha = 1 that is the object's own RGB, and on the soft edge
    both are mixed with the same grey, so they compare directly. NaN when the object is absent."""
    _check(pred_fg, true_fg, "foreground")
    return masked_psnr(pred_fg, true_fg, true_alpha >= ALPHA_THRESHOLD)


def decomposition_scores(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, float]:
    """Decomposition of a blend of K objects, each layer against the truth (dicts of fg, alpha, fg_k, alpha_k, bg),
    objects matched by layer index (depth order, one prompt each): per object `alpha_iou` (binarised at 0.5,
    pooled over the clip; both mattes empty counts as 1.0, see `layer_accuracy`) and `fg_psnr_object`
    (`fg_psnr_on_object`), keys `name`, `name_k` and, with K > 1, `name_mean` (`layer_accuracy.per_object`); and
    `bg_psnr_object`, the background inside the objects' region (`bg_psnr_in_object` of the largest true alpha:
    every pixel some object hid)."""
    pairs = object_mattes(pred, true)
    fg_psnr = [fg_psnr_on_object(pred[fg_name(k)], true[fg_name(k)], true[alpha_name(k)]) for k in range(len(pairs))]
    return {
        **per_object("alpha_iou", [alpha_iou(p, g) for p, g in pairs]),
        "bg_psnr_object": bg_psnr_in_object(pred["bg"], true["bg"], union_matte(true)),
        **per_object("fg_psnr_object", fg_psnr),
    }


# ---- fg-conditioned: fg, alpha -> bg, blend ------------------------------------------------------------------

def unchanged(given: np.ndarray, returned: np.ndarray) -> bool:
    """True when a conditioning layer comes back exactly as given: same shape, dtype and every value. A
    conditioned model must not alter the layers it was given; any drift (a re-encode through the VAE) fails."""
    return given.shape == returned.shape and given.dtype == returned.dtype and bool(np.array_equal(given, returned))


def fg_conditioned_scores(given: dict[str, np.ndarray], out: dict[str, np.ndarray],
                          true_bg: np.ndarray) -> dict[str, float | bool]:
    """Generation of bg and blend for a given fg and alpha: `bg_psnr_object` (the generated bg inside the object's
    region against the clip's true bg: no ghost of the object; note it also rewards matching the true texture),
    `fg_unchanged` and `alpha_unchanged` (`unchanged`)."""
    return {
        "bg_psnr_object": bg_psnr_in_object(out["bg"], true_bg, given["alpha"]),
        "fg_unchanged": unchanged(given["fg"], out["fg"]),
        "alpha_unchanged": unchanged(given["alpha"], out["alpha"]),
    }


# ---- bg-conditioned: bg -> fg, alpha, blend -----------------------------------------------------------------

def matte_coverage(alpha: np.ndarray) -> float:
    """Fraction of the clip's pixels (all frames) with alpha > 0.5. The matte of a generated object must cover
    some of the frame but not most of it: `nontrivial_coverage` asks for `COVERAGE_RANGE` (2 % .. 60 %), which
    rules out the empty matte (an easy way to keep the given background intact) and the all-on one."""
    return float((alpha >= ALPHA_THRESHOLD).mean()) if alpha.size else 0.0


def nontrivial_coverage(coverage: float, bounds: tuple[float, float] = COVERAGE_RANGE) -> bool:
    return bounds[0] <= coverage <= bounds[1]


def clear_blend_psnr(blend: np.ndarray, given_bg: np.ndarray, alpha: np.ndarray) -> tuple[float, int]:
    """(PSNR, pixels): the generated blend against the given background where the generated matte is clear
    (alpha <= `ALPHA_CLEAR`, under 5 %: a decoded matte is seldom exactly 0), and how many pixels that is over the
    clip. Where there is no object the blend must be the background it was given; NaN when the matte is
    nowhere clear. Read it with `matte_coverage`: the empty matte with blend = bg scores 100."""
    _check(blend, given_bg, "blend vs background")
    _check(blend[..., 0], alpha, "blend vs alpha")
    clear = alpha <= ALPHA_CLEAR
    return masked_psnr(blend, given_bg, clear), int(clear.sum())


def bg_conditioned_scores(given_bg: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, Any]:
    """Generation of fg, alpha and blend for a given bg: `coverage`, `coverage_ok`, `clear_blend_psnr`,
    `clear_pixels`, and `bg_unchanged` when the output carries a bg layer."""
    coverage = matte_coverage(out["alpha"])
    value, pixels = clear_blend_psnr(out["blend"], given_bg, out["alpha"])
    row: dict[str, Any] = {"coverage": coverage, "coverage_ok": nontrivial_coverage(coverage),
                           "clear_blend_psnr": value, "clear_pixels": pixels}
    if "bg" in out:
        row["bg_unchanged"] = unchanged(given_bg, out["bg"])
    return row


# ---- generation from three prompts: fg, alpha, bg, blend ------------------------------------------------------

def implied_blend(layers: dict[str, np.ndarray]) -> np.ndarray:
    """The blend the other layers imply (a dict of fg, alpha, fg_k, alpha_k, bg): `composite_layers` of every
    foreground, un-greyed (`un_grey`), front first, over the bg. Un-greying matters: compositing the over-grey fg
    directly would mix grey into every soft edge (an error of a (1 - a) |rgb - 127|, up to 32 levels), so even the
    true layers would not match; this way they are within 1 level."""
    count = matte_count(layers)
    if count == 0:
        raise EvaluationError(f"coherence needs fg and alpha layers, got {', '.join(sorted(layers))}")
    fgs = [layers[fg_name(k)] for k in range(count)]
    alphas = [layers[alpha_name(k)] for k in range(count)]
    for fg in fgs:
        _check(fg, layers["bg"], "fg vs bg")
    return composite_layers([un_grey(fg, alpha) for fg, alpha in zip(fgs, alphas)], alphas, layers["bg"])


def coherence_psnr(layers: dict[str, np.ndarray]) -> float:
    """Inter-layer coherence of K foregrounds (a dict of fg, alpha, fg_k, alpha_k, bg, blend): PSNR of the
    generated blend against `implied_blend`. The fgs' values where their alpha = 0 carry no weight, so they do
    not count."""
    implied = implied_blend(layers)
    _check(layers["bg"], layers["blend"], "bg vs blend")
    return masked_psnr(layers["blend"], implied)


def caption_words(caption: str) -> tuple[str | None, str | None]:
    """(shape, colour) named in a caption: the first of `SHAPES` / `COLOURS` found as whole words (None if
    none), e.g. "A red rounded square glides to the left ..." -> ("rounded square", "red")."""
    text = caption.lower()

    def first(names) -> str | None:
        hits = [(m.start(), n) for n in names for m in [re.search(rf"\b{re.escape(n)}\b", text)] if m]
        return min(hits)[1] if hits else None

    return first(SHAPES), first(COLOURS)


EDGE_SOFTNESS = SyntheticConfig().edge_softness  # px: the world's anti-aliased alpha ramp
# area of each shape (d < 0) per r^2: disc, rounded square (corner 0.3 r), diamond, ring (0.4 r .. r)
_AREA = {"disc": math.pi, "rounded square": 4.0 - (4.0 - math.pi) * 0.09, "diamond": 2.0, "ring": 0.84 * math.pi}


def shape_fit(alpha: np.ndarray) -> dict[str, float]:
    """Per shape, the mean over frames of the soft IoU (sum of min / sum of max, alpha in [0, 1]) between the
    matte and that shape's template fitted to it.

    The template is the world's own rendering (signed distance, `EDGE_SOFTNESS` ramp) centred at the matte's
    alpha-weighted centroid, with the size whose area equals the matte's (sum of alpha), best of 0.95 / 1 / 1.05
    times it. Using the soft matte keeps the sub-pixel evidence a 4 px object has. Frames whose matte touches the
    frame's border (a clipped object: a biased centroid) are skipped unless every usable frame does; frames with
    under 4 px of alpha are skipped. All zeros when no frame is usable."""
    a_all = alpha.astype(np.float64) / 255.0
    frames = [i for i in range(len(a_all)) if a_all[i].sum() >= 4.0]
    inner = [i for i in frames if not (alpha[i, 0].any() or alpha[i, -1].any()
                                       or alpha[i, :, 0].any() or alpha[i, :, -1].any())]
    frames = inner or frames
    if not frames:
        return {s: 0.0 for s in SHAPES}
    h, w = alpha.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    totals = dict.fromkeys(SHAPES, 0.0)
    for i in frames:
        a = a_all[i]
        area = a.sum()
        cy, cx = float((a * ys).sum() / area), float((a * xs).sum() / area)
        r_max = 1.05 * math.sqrt(area / min(_AREA.values())) + 2 * EDGE_SOFTNESS + 1
        y0, y1 = max(0, int(cy - r_max)), min(h, int(math.ceil(cy + r_max)) + 1)
        x0, x1 = max(0, int(cx - r_max)), min(w, int(math.ceil(cx + r_max)) + 1)
        crop, dy, dx = a[y0:y1, x0:x1], ys[y0:y1, x0:x1] - cy, xs[y0:y1, x0:x1] - cx
        outside = area - crop.sum()  # matte beyond the crop: counted in the union
        for shape in SHAPES:
            best = 0.0
            for scale in (0.95, 1.0, 1.05):
                r = scale * math.sqrt(area / _AREA[shape])
                tpl = np.clip(0.5 - signed_distance(shape, dx, dy, r) / EDGE_SOFTNESS, 0.0, 1.0)
                best = max(best, np.minimum(tpl, crop).sum() / (np.maximum(tpl, crop).sum() + outside))
            totals[shape] += float(best)
    return {s: totals[s] / len(frames) for s in SHAPES}


def detect_shape(alpha: np.ndarray) -> tuple[str | None, float]:
    """(shape, IoU): the best-fitting of `SHAPES` by `shape_fit`, or None when even the best fits worse than
    `SHAPE_MIN_IOU` (an empty matte, a blob or noise is no shape: a guess would be right 1 time in 4)."""
    fits = shape_fit(alpha)
    shape = max(SHAPES, key=lambda s: fits[s])
    return (shape if fits[shape] >= SHAPE_MIN_IOU else None), fits[shape]


def detect_colour(fg: np.ndarray, alpha: np.ndarray) -> tuple[str | None, tuple[float, float, float] | None]:
    """(colour, mean RGB): the mean of the object's own RGB (`un_grey`) over the pixels with alpha > 0.5, and
    the nearest of `COLOURS` (Euclidean RGB), or None when that is farther than `COLOUR_MAX_DISTANCE` or no
    pixel is on. The world shades each object by 0.55..1.25 across it; the mean stays near the named colour."""
    _check(fg[..., 0], alpha, "fg vs alpha")
    on = alpha >= ALPHA_THRESHOLD
    if not on.any():
        return None, None
    mean = un_grey(fg, alpha)[on].astype(np.float64).mean(axis=0)
    dist = {name: float(np.linalg.norm(mean - np.array(rgb, np.float64))) for name, rgb in COLOURS.items()}
    name = min(dist, key=dist.get)
    return (name if dist[name] <= COLOUR_MAX_DISTANCE else None), tuple(float(v) for v in mean)


def prompt_match(fg: np.ndarray, alpha: np.ndarray, fg_caption: str) -> dict[str, Any]:
    """Whether the shape and colour the fg prompt names appear in the generated fg / alpha: the detected and the
    named (shape, colour), and `shape_ok` / `colour_ok` (detected == named; False when either is None)."""
    shape, fit = detect_shape(alpha)
    colour, mean = detect_colour(fg, alpha)
    named_shape, named_colour = caption_words(fg_caption)
    return {
        "shape": shape, "shape_iou": fit, "colour": colour, "mean_rgb": mean,
        "named_shape": named_shape, "named_colour": named_colour,
        "shape_ok": shape is not None and shape == named_shape,
        "colour_ok": colour is not None and colour == named_colour,
    }


def generation_scores(out: dict[str, np.ndarray], fg_caption: str) -> dict[str, Any]:
    """Generation from K + 2 prompts: `coherence_psnr` plus `prompt_match` of the (front) fg prompt."""
    return {"coherence_psnr": coherence_psnr(out),
            **prompt_match(out["fg"], out["alpha"], fg_caption)}


# ---- the trivial baseline -----------------------------------------------------------------------------------

def _grey(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, MID_GREY, np.uint8)


def _no_objects(shape: tuple[int, ...], num_foregrounds: int) -> dict[str, np.ndarray]:
    """Every foreground empty: alpha = 0, fg = mid-grey (what alpha = 0 stores); `shape` is [T, H, W, 3]."""
    out = {}
    for k in range(num_foregrounds):
        out[fg_name(k)] = _grey(shape)
        out[alpha_name(k)] = np.zeros(shape[:-1], np.uint8)
    return out


def trivial_decomposition(blend: np.ndarray, num_foregrounds: int = 1) -> dict[str, np.ndarray]:
    """No object: every alpha = 0, every fg = mid-grey (what alpha = 0 stores), bg = the blend itself."""
    return {**_no_objects(blend.shape, num_foregrounds), "bg": blend.copy(), "blend": blend.copy()}


def trivial_fg_conditioned(fg: np.ndarray, alpha: np.ndarray) -> dict[str, np.ndarray]:
    """The given fg and alpha returned unchanged, bg = mid-grey, blend = their composite (= fg, which is over grey)."""
    bg = _grey(fg.shape)
    return {"fg": fg.copy(), "alpha": alpha.copy(), "bg": bg, "blend": composite(un_grey(fg, alpha), alpha, bg)}


def trivial_bg_conditioned(bg: np.ndarray) -> dict[str, np.ndarray]:
    """No object: alpha = 0, fg = mid-grey, blend = the given bg (returned unchanged)."""
    return {"fg": _grey(bg.shape), "alpha": np.zeros(bg.shape[:-1], np.uint8), "bg": bg.copy(), "blend": bg.copy()}


def trivial_generation(num_frames: int, height: int, width: int, num_foregrounds: int = 1) -> dict[str, np.ndarray]:
    """No object and no picture: every alpha = 0, every fg, the bg and the blend mid-grey."""
    shape = (num_frames, height, width, 3)
    return {**_no_objects(shape, num_foregrounds), "bg": _grey(shape), "blend": _grey(shape)}
