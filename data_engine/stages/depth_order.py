"""Depth (occlusion) order of a clip's objects from their visible masks alone.

Occlusion evidence. Visible (modal) masks never overlap where one object hides another: the hidden pixels belong
to the occluder. So an object's own motion predicts where it would be, and where that prediction lands on another
object, the other is in front: `evidence[i, j]` counts the pixels of j, moved from frame t-1 to t by j's
motion, that belong to i at t (and the same from t+1 back to t). Each object's motion is the translation that
best overlaps its mask with itself on the next frame (FFT cross-correlation), which its visible part follows
even while it is partly hidden. Motion compensation is what makes the count one-sided: without it, an object
that passes over a still one both covers pixels of the other (for "in front") and uncovers them again (which
reads as "behind"), in equal amounts; with it, only the covering counts, since the uncovered pixels are where
the other was predicted anyway. A pair is ordered by occlusion when one direction beats the other by
`min_occlusion` of the smaller object's mean visible area; two objects moving together, or never touching, give
no such evidence.

Ground-plane fallback. Objects not ordered by occlusion (directly or through others) are ordered by how low their
masks reach in the frame (median over the frames they are visible of the lowest mask row): for a camera above
the ground, the object standing lower in the image is nearer. A guess, right for people and cars on a street,
wrong for a bird above a walker.

The total order: a topological order of the occlusion graph, the lowest-reaching object first whenever several
are free; a cycle of evidence (noisy masks) is broken at the object with the most net evidence.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from data_engine.layers_policy import LayersPolicy

# Evidence is counted on masks subsampled to at most this many pixels on their long side: occlusion bands are
# tens of pixels wide at 480 x 720, and the cross-correlations cost O(pixels log pixels) per frame and object.
EVIDENCE_SIDE = 256
# The fastest motion looked for, as a fraction of the frame's short side per frame; the search is capped so a
# coincidental match across the frame never passes for motion.
MAX_MOTION = 0.25


class DepthOrder(NamedTuple):
    order: tuple[int, ...]  # object ids, front first
    occlusion: tuple[tuple[int, int, int], ...]  # (front, back, net evidence px) of the pairs occlusion ordered


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`mask` moved by (dy, dx), pixels leaving the frame dropped."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def motion(a: np.ndarray, b: np.ndarray, max_shift: int) -> tuple[int, int]:
    """The translation (dy, dx), |dy|, |dx| <= max_shift, that best moves bool mask `a` onto `b`: most pixels of
    moved `a` (what stays in the frame) on `b` minus those off it. Counting only the matches would favour a
    standstill for an object leaving the frame (moving it on pushes pixels out); ties go to the smallest motion."""
    h, w = a.shape
    size = (2 * h, 2 * w)  # zero padding: no wrap-around
    spectrum = np.conj(np.fft.rfft2(a, size))
    on_b = np.fft.irfft2(spectrum * np.fft.rfft2(b, size), size)
    in_frame = np.fft.irfft2(spectrum * np.fft.rfft2(np.ones_like(a), size), size)
    dys = np.r_[0:max_shift + 1, -max_shift:0]
    dxs = np.r_[0:max_shift + 1, -max_shift:0]
    cells = np.ix_(dys % size[0], dxs % size[1])
    score = np.rint(2 * on_b[cells] - in_frame[cells])
    best = np.argwhere(score == score.max())
    dy, dx = min(((int(dys[i]), int(dxs[j])) for i, j in best), key=lambda d: (abs(d[0]) + abs(d[1]), d))
    return dy, dx


def occlusion_evidence(masks: np.ndarray) -> np.ndarray:
    """`masks` bool [K, T, H, W] (visible masks) -> [K, K] pixel counts: evidence[i, j] for "i in front of j"."""
    k, t = masks.shape[:2]
    max_shift = max(1, math.ceil(MAX_MOTION * min(masks.shape[2:])))
    evidence = np.zeros((k, k), np.int64)
    for j in range(k):
        for f in range(t - 1):
            a, b = masks[j, f], masks[j, f + 1]
            if not a.any() or not b.any():
                continue
            dy, dx = motion(a, b, max_shift)
            forward, backward = _shift(a, dy, dx), _shift(b, -dy, -dx)  # j predicted at f + 1 and at f
            for i in range(k):
                if i != j:
                    evidence[i, j] += int((forward & masks[i, f + 1]).sum() + (backward & masks[i, f]).sum())
    return evidence


def ground_contact(masks: np.ndarray) -> np.ndarray:
    """[K]: the median over visible frames of the lowest row each mask reaches, as a fraction of the height
    (-1 for an object never visible)."""
    k, t, h = masks.shape[:3]
    out = np.full(k, -1.0)
    for i in range(k):
        rows = masks[i].any(axis=2)  # [T, H]
        visible = rows.any(axis=1)
        if visible.any():
            lowest = h - 1 - np.argmax(rows[visible, ::-1], axis=1)
            out[i] = float(np.median(lowest)) / h
    return out


def subsample(masks: np.ndarray) -> np.ndarray:
    """Every s-th pixel so the long side is at most EVIDENCE_SIDE (nearest, not max-pooling: pooling would
    merge two objects that merely touch into an overlap)."""
    s = max(1, math.ceil(max(masks.shape[-2:]) / EVIDENCE_SIDE))
    return masks[..., ::s, ::s]


def depth_order(masks: dict[int, np.ndarray], min_occlusion: float = LayersPolicy.min_occlusion) -> DepthOrder:
    """Object ids front first, from visible masks {obj: [T, H, W]} (bool, or uint8 with >= 128 inside)."""
    ids = list(masks)
    if not ids:
        raise ValueError("depth_order needs at least one object mask")
    stack = np.stack([m if m.dtype == bool else m >= 128 for m in masks.values()])
    if stack.ndim != 4:
        raise ValueError(f"depth_order needs [T, H, W] masks, got shape {stack.shape[1:]}")
    small = subsample(stack)
    evidence = occlusion_evidence(small)
    area = small.reshape(len(ids), small.shape[1], -1).sum(axis=2)
    mean_area = np.array([a[a > 0].mean() if (a > 0).any() else 0.0 for a in area])
    net = evidence - evidence.T
    front = np.zeros_like(net, bool)  # front[i, j]: occlusion puts i in front of j
    for i in range(len(ids)):
        for j in range(len(ids)):
            front[i, j] = net[i, j] > 0 and net[i, j] >= min_occlusion * min(mean_area[i], mean_area[j])
    lowest = ground_contact(stack)
    scale = stack.shape[-1] / small.shape[-1]  # report evidence in pixels of the given masks
    order: list[int] = []
    left = set(range(len(ids)))
    while left:
        free = [i for i in left if not any(front[j, i] for j in left)]
        if not free:  # a cycle: take the object the evidence favours most over the others left
            best = max(sum(int(net[i, j]) for j in left) for i in left)
            free = [i for i in left if sum(int(net[i, j]) for j in left) == best]
        pick = max(free, key=lambda i: (lowest[i], -i))
        order.append(pick)
        left.remove(pick)
    pairs = tuple((ids[i], ids[j], round(int(net[i, j]) * scale * scale)) for i in order for j in order
                  if front[i, j])
    return DepthOrder(tuple(ids[i] for i in order), pairs)
