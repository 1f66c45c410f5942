"""Decomposition accuracy against ground-truth layers: alpha IoU and SAD, background PSNR.

Real DAVIS clips have no true background under the object, so besides PSNR against a given bg layer we
report PSNR against the blend where the ground-truth alpha is 0 (the only pixels whose background is seen).

With K foregrounds, objects are matched by layer index (alpha_k against alpha_k): the layers are in depth order,
each with its own prompt, so the k-th predicted layer is the model's answer for the k-th object. A score `name`
of object k is keyed `name` (k = 0, as for one object) or `name_k`; more than one object adds `name_mean`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from data_engine.schema import alpha_name
from data_engine.video_io import psnr
from evaluation.errors import EvaluationError

ALPHA_THRESHOLD = 128  # a pixel is foreground when alpha >= 128 (0.5)


def _same(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
    if pred.shape != gt.shape:
        raise EvaluationError(
            f"{what}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ; "
            f"render the prediction with the ground truth's frame count and size"
        )


def alpha_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of the binarised mattes over the whole clip; 1.0 when both are empty."""
    _same(pred, gt, "alpha")
    p, g = pred >= ALPHA_THRESHOLD, gt >= ALPHA_THRESHOLD
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def alpha_sad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Matting SAD: sum over a frame of |a_pred - a_gt| (alpha in [0, 1]), in thousands, mean over frames."""
    _same(pred, gt, "alpha")
    diff = np.abs(pred.astype(np.float64) - gt.astype(np.float64)) / 255.0
    return float(diff.reshape(len(diff), -1).sum(axis=1).mean() / 1000.0)


def visible_bg_psnr(pred_bg: np.ndarray, blend: np.ndarray, gt_alpha: np.ndarray) -> tuple[float, int]:
    """(PSNR, pixels): PSNR of the predicted background against the blend over the pixels where the
    ground-truth alpha is 0, and how many such pixels (over all frames) it rests on; NaN when there are none."""
    _same(pred_bg, blend, "background")
    _same(pred_bg[..., 0], gt_alpha, "background vs alpha")
    visible = gt_alpha == 0
    pixels = int(visible.sum())
    if pixels == 0:
        return float("nan"), 0
    err = (pred_bg.astype(np.float64) - blend.astype(np.float64))[visible]
    mse = float(np.mean(err ** 2))
    return (math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)), pixels


def bg_psnr(pred_bg: np.ndarray, gt_bg: np.ndarray) -> float:
    _same(pred_bg, gt_bg, "background")
    return psnr(pred_bg, gt_bg)


def matte_count(layers: Mapping[str, np.ndarray]) -> int:
    """How many mattes alpha, alpha_1, alpha_2, ... a layer dict holds, counted from alpha up to the first gap."""
    k = 0
    while alpha_name(k) in layers:
        k += 1
    return k


def object_mattes(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(predicted, true) matte of each object, matched by layer index."""
    count, predicted = matte_count(gt), matte_count(pred)
    if predicted != count:
        raise EvaluationError(f"the prediction has {predicted} matte(s) but the ground truth {count} object(s); "
                              f"predict one fg / alpha layer per object, in the ground truth's depth order")
    return [(pred[alpha_name(k)], gt[alpha_name(k)]) for k in range(count)]


def per_object(name: str, values: list[float]) -> dict[str, float]:
    """{name: object 0, name_1: object 1, ..., name_mean} (no mean for one object: it would repeat it)."""
    row = {name if k == 0 else f"{name}_{k}": v for k, v in enumerate(values)}
    if len(values) > 1:
        row[f"{name}_mean"] = float(np.mean(values))
    return row


def union_matte(layers: Mapping[str, np.ndarray]) -> np.ndarray:
    """The largest alpha of any object at each pixel: where it is 0 the background is seen (`visible_bg_psnr`)."""
    count = matte_count(layers)
    if count == 0:
        raise EvaluationError(f"no alpha layer among {', '.join(sorted(layers))}; the union of mattes needs one")
    return np.maximum.reduce([layers[alpha_name(k)] for k in range(count)])


def object_alpha_accuracy(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-object alpha IoU and SAD (`per_object` keys: alpha_iou, alpha_sad, alpha_iou_1, ..., their means)."""
    pairs = object_mattes(pred, gt)
    return {**per_object("alpha_iou", [alpha_iou(p, g) for p, g in pairs]),
            **per_object("alpha_sad", [alpha_sad(p, g) for p, g in pairs])}
