"""Dedup stage: drop duplicate objects of a clip and masks that fail the sanity filters.

Works row by row, independent of how the engine batches: every object row carries `siblings`, the segment
stage's summary of all objects of its clip (downsampled masks + detection scores). Each row replays the same
deterministic selection over its siblings and is kept iff its own object survives:
1. sanity: mean mask area (fraction of the frame, over frames where it is visible) within [min_area, max_area];
   the mask visible (area >= min_visible_area) on at least (1 - max_missing) of the frames;
2. duplicates: survivors in order of detection score (then object index); an object whose spatio-temporal IoU
   with an already kept one is >= iou_threshold is a duplicate of it.
Every drop is recorded in the row's `scores["dropped"]` and `scores["dedup"]` (the engine counts them).
Rows without `siblings` (e.g. masks from another source) get the sanity filters on their own mask.
A grouped row (data_engine/stages/grouped.py) keeps the objects that pass (each with `scores["dedup"]`); the
others' reasons go to the row's `scores["dropped"]`, and the row is dropped when none passes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.stages.base import Resources, Row, Stage
from data_engine.stages.grouped import OBJECTS, is_grouped, with_objects
from data_engine.stages.masks import downsample, iou
from data_engine.stages.segment_track import unpack_siblings


@dataclass(frozen=True)
class DedupOptions:
    iou_threshold: float = 0.7
    min_area: float = 0.005
    max_area: float = 0.8
    min_visible_area: float = 0.0005
    max_missing: float = 0.3
    stride: int = 4  # own-mask downsampling when a row has no siblings summary

    def __post_init__(self) -> None:
        if not 0 < self.iou_threshold <= 1 or not 0 <= self.min_area < self.max_area <= 1:
            raise ValueError(f"dedup needs 0 < iou_threshold <= 1 and 0 <= min_area < max_area <= 1, got {self}")


def sanity_reason(mask: np.ndarray, opts: DedupOptions) -> str | None:
    """Why a bool [T, H, W] mask fails the sanity filters, or None."""
    area = mask.reshape(mask.shape[0], -1).mean(axis=1)
    visible = area >= opts.min_visible_area
    missing = 1.0 - visible.mean()
    if missing > opts.max_missing:
        return f"vanishes in {int((~visible).sum())}/{len(area)} frames (max {opts.max_missing:.0%})"
    mean_area = float(area[visible].mean())
    if mean_area < opts.min_area:
        return f"too small (mean area {mean_area:.4f} < {opts.min_area})"
    if mean_area > opts.max_area:
        return f"too large (mean area {mean_area:.3f} > {opts.max_area})"
    return None


def select(masks: dict[int, np.ndarray], det_scores: dict[int, float], opts: DedupOptions) -> dict[int, str | None]:
    """obj -> None (kept) or the drop reason, for all objects of one clip."""
    verdict: dict[int, str | None] = {obj: sanity_reason(m, opts) for obj, m in masks.items()}
    kept: list[int] = []
    for obj in sorted(masks, key=lambda o: (-det_scores.get(o, 0.0), o)):
        if verdict[obj] is not None:
            continue
        for other in kept:
            overlap = iou(masks[obj], masks[other])
            if overlap >= opts.iou_threshold:
                verdict[obj] = f"duplicate of object {other:02d} (IoU {overlap:.2f} >= {opts.iou_threshold})"
                break
        else:
            kept.append(obj)
    return verdict


class DedupStage(Stage):
    name = "dedup"
    default_resources = Resources(num_cpus=0.5, batch_size=8, retries=1)
    Options = DedupOptions
    reads = frozenset({"mask"})
    writes = frozenset({"scores"})

    def verdict(self, row: Row) -> str | None:
        summary = row.get("siblings")
        if summary is None:
            return sanity_reason(downsample(row["mask"], self.opts.stride), self.opts)
        masks = unpack_siblings(summary)
        scores = dict(zip(summary["objs"], summary["det_scores"]))
        return select(masks, scores, self.opts)[row["obj"]]

    def keep_objects(self, row: Row) -> Row | None:
        """A grouped row (data_engine/stages/grouped.py) holding its objects that pass, or None when none does."""
        summary = row["siblings"]
        verdicts = select(unpack_siblings(summary), dict(zip(summary["objs"], summary["det_scores"])), self.opts)
        kept = []
        for o in row[OBJECTS]:
            reason = verdicts[o["obj"]]
            if reason is None:
                kept.append({**o, "scores": {**o["scores"], "dedup": {"kept": True}}})
            else:
                self.drop(row, f"dedup: object {o['obj']:02d} {reason}")
        return with_objects(row, kept) if kept else None

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            if is_grouped(row):
                kept = self.keep_objects(row)
                out += [kept] if kept is not None else []
                continue
            reason = self.verdict(row)
            dedup = {"kept": reason is None, **({"reason": reason} if reason else {})}
            if reason is not None:
                row.setdefault("scores", {})["dedup"] = dedup
                self.drop(row, f"dedup: {reason}")
                continue
            out.append({**row, "scores": {**row.get("scores", {}), "dedup": dedup}})
        return out
