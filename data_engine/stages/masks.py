"""Mask utilities shared by the perception stages: compact serialisation, IoU, boxes, dilation.

A mask is uint8 [T, H, W] (0..255) or bool. Serialised forms:
- RLE (COCO-style, column-major runs starting with a run of zeros) per frame, for JSON: `mask_to_rle` / `rle_to_mask`;
- PNG per frame (lossless 8-bit grey, keeps soft values): `mask_to_png` / `png_to_mask`.
"""
from __future__ import annotations

import numpy as np

from data_engine.video_io import decode_png, encode_png


def _binary(mask: np.ndarray) -> np.ndarray:
    return mask if mask.dtype == bool else mask >= 128


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary [T, H, W] -> {"size": [T, H, W], "counts": [[runs of frame 0], ...]} (values >= 128 are foreground)."""
    binary = _binary(mask)
    counts = []
    for frame in binary:
        flat = frame.ravel(order="F")
        edges = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
        runs = np.diff(edges).tolist()
        counts.append([0, *runs] if flat.size and flat[0] else runs)
    return {"size": list(binary.shape), "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of `mask_to_rle`: uint8 [T, H, W] with 0 / 255."""
    t, h, w = rle["size"]
    out = np.zeros((t, h * w), np.uint8)
    for i, runs in enumerate(rle["counts"]):
        pos, value = 0, 0
        for run in runs:
            if value:
                out[i, pos : pos + run] = 255
            pos += run
            value ^= 1
    return out.reshape(t, w, h).transpose(0, 2, 1).copy()


def mask_to_png(mask: np.ndarray) -> list[bytes]:
    """One lossless grey PNG per frame (soft values kept)."""
    return [encode_png(np.ascontiguousarray(frame)) for frame in mask.astype(np.uint8)]


def png_to_mask(frames: list[bytes]) -> np.ndarray:
    return np.stack([decode_png(b, grey=True) for b in frames]).astype(np.uint8)


def matte_of(row: dict) -> np.ndarray:
    """The alpha of a row's object: its `soft_alpha` when `segment` wrote one, else its `mask`."""
    soft = row.get("soft_alpha")
    return row["mask"] if soft is None else soft


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two binary masks of the same shape (spatio-temporal when [T, H, W]); 0 when both are empty."""
    a, b = _binary(a), _binary(b)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """[T, 4] float32 (x0, y0, x1, y1) per frame, pixel-edge coordinates; NaN where the frame's mask is empty."""
    binary = _binary(mask)
    out = np.full((binary.shape[0], 4), np.nan, np.float32)
    for t, frame in enumerate(binary):
        ys, xs = np.nonzero(frame)
        if ys.size:
            out[t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation of each frame by a disc of radius `pixels`; returns bool [T, H, W]."""
    import cv2

    binary = _binary(mask)
    if pixels <= 0:
        return binary.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return np.stack([cv2.dilate(f.astype(np.uint8), kernel) > 0 for f in binary])


def downsample(mask: np.ndarray, stride: int) -> np.ndarray:
    """Bool [T, H/stride, W/stride]: a cell is set when any of its pixels is (keeps thin objects visible)."""
    binary = _binary(mask)
    t, h, w = binary.shape
    hh, ww = -(-h // stride), -(-w // stride)
    padded = np.zeros((t, hh * stride, ww * stride), bool)
    padded[:, :h, :w] = binary
    return padded.reshape(t, hh, stride, ww, stride).any(axis=(2, 4))
