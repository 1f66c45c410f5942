"""Mask serialisation and the dedup stage (no models)."""
from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest

from data_engine.schema import object_key
from data_engine.stages.dedup import DedupOptions, DedupStage, select
from data_engine.stages.masks import boxes_from_mask, dilate, iou, mask_to_png, mask_to_rle, png_to_mask, rle_to_mask
from data_engine.stages.segment_track import TrackedObject, siblings_summary

T, H, W = 6, 40, 48


def square(x0: int, y0: int, size: int, dx: int = 2) -> np.ndarray:
    m = np.zeros((T, H, W), bool)
    for t in range(T):
        m[t, y0 : y0 + size, x0 + dx * t : x0 + dx * t + size] = True
    return m


def rows_for(masks: list[np.ndarray], scores: list[float]) -> list[dict]:
    objects = [TrackedObject(i + 1, "thing", s, 0.9, 0, m) for i, (m, s) in enumerate(zip(masks, scores))]
    summary = siblings_summary(objects, stride=2)
    return [{"key": object_key("clip-00000", o.obj), "clip_key": "clip-00000", "obj": o.obj,
             "mask": o.mask.astype(np.uint8) * 255, "siblings": summary, "scores": {}} for o in objects]


def test_rle_and_png_round_trip_exactly():
    rng = np.random.default_rng(0)
    mask = (rng.random((3, 7, 5)) > 0.6).astype(np.uint8) * 255
    mask[1] = 255  # a frame starting with foreground (RLE's leading zero-run)
    mask[2] = 0
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    soft = rng.integers(0, 256, (2, 9, 11), dtype=np.uint8)
    assert np.array_equal(png_to_mask(mask_to_png(soft)), soft)


def test_rle_matches_coco_layout():
    # COCO RLE is column-major and starts with the count of zeros.
    frame = np.array([[0, 1], [1, 1]], np.uint8) * 255
    assert mask_to_rle(frame[None])["counts"] == [[1, 3]]


def test_boxes_iou_and_dilation():
    m = square(4, 5, 10)
    boxes = boxes_from_mask(m)
    assert boxes[0].tolist() == [4, 5, 14, 15] and boxes[2].tolist() == [8, 5, 18, 15]
    empty = np.zeros((1, H, W), bool)
    assert np.isnan(boxes_from_mask(empty)).all()
    assert iou(m, m) == 1.0 and iou(m, empty.repeat(T, 0)) == 0.0
    grown = dilate(m, 2)
    assert grown[m].all() and grown.sum() > m.sum() and not grown[:, 0, :].any()


def test_dedup_removes_a_duplicate_and_keeps_two_distinct_objects():
    a, b = square(2, 2, 10), square(24, 20, 12, dx=1)
    dup = a.copy()
    dup[:, 2, 2:6] = False  # nearly the same mask sequence as `a`
    rows = rows_for([a, b, dup], scores=[0.8, 0.7, 0.6])
    stage = DedupStage(min_area=0.01, max_area=0.9, max_missing=0.2)
    given = deepcopy(rows)
    kept = stage.process_batch(given)
    assert [r["obj"] for r in kept] == [1, 2]
    assert all(r["scores"]["dedup"]["kept"] for r in kept)
    [dropped] = [r for r in given if r["obj"] not in (1, 2)]
    assert dropped["scores"]["dropped"] == [f"dedup: {dropped['scores']['dedup']['reason']}"]
    assert dropped["scores"]["dedup"]["reason"].startswith("duplicate")


def test_dedup_is_independent_of_batching_and_records_the_reason():
    a, b = square(2, 2, 10), square(24, 20, 12, dx=1)
    rows = rows_for([a, b, a.copy()], scores=[0.5, 0.7, 0.9])  # the copy has the best score: it wins
    stage = DedupStage()
    one_by_one = [stage.process_batch([deepcopy(r)]) for r in rows]
    assert [len(o) for o in one_by_one] == [0, 1, 1]
    seen = deepcopy(rows[0])
    assert stage.process_batch([seen]) == []
    assert seen["scores"]["dropped"] == ["dedup: duplicate of object 03 (IoU 1.00 >= 0.7)"]


@pytest.mark.parametrize("mask,reason", [
    (square(0, 0, 1), "too small"),
    (np.ones((T, H, W), bool), "too large"),
    (np.concatenate([square(2, 2, 10)[:2], np.zeros((T - 2, H, W), bool)]), "vanishes in 4/6 frames"),
])
def test_sanity_filters(mask, reason):
    verdict = select({1: mask}, {1: 1.0}, DedupOptions())
    assert verdict[1] is not None and verdict[1].startswith(reason)
