"""Decomposition accuracy against ground-truth layers: alpha IoU and SAD, background PSNR.

Real DAVIS clips have no true background under the object, so besides PSNR against a given bg layer we
report PSNR against the blend where the ground-truth alpha is 0 (the only pixels whose background is seen).
"""
from __future__ import annotations

import math

import numpy as np

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
