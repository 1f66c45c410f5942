"""SegmentTrackStage plumbing with tiny random models: SAM 2 video propagation, the detect -> SAM -> track loop,
and the fan-out rows. Random weights make the masks themselves meaningless; what is checked is what the code
does with them (frames, order, prompts, object bookkeeping)."""
from __future__ import annotations

import numpy as np
import pytest

from data_engine.stages.masks import iou
from data_engine.stages.segment_track import Detection, SegmentTrackStage, unpack_siblings

T, S = 6, 128


@pytest.fixture(scope="module")
def stage() -> SegmentTrackStage:
    s = SegmentTrackStage(preset="tiny", sam_gap=3, box_threshold=0.0, text_threshold=0.0, max_objects=2)
    s.ensure_setup()
    return s


def moving_square() -> tuple[np.ndarray, np.ndarray]:
    frames = np.full((T, S, S, 3), 40, np.uint8)
    masks = np.zeros((T, S, S), bool)
    for t in range(T):
        masks[t, 30:70, 10 + 8 * t : 50 + 8 * t] = True
    frames[masks] = (230, 60, 60)
    return frames, masks


def test_sam2_propagates_a_frame0_mask_prompt_through_every_frame_in_order(stage):
    frames, masks = moving_square()
    session = stage.sam2_proc.init_video_session(video=list(frames), inference_device="cpu", dtype=stage.dtype)
    stage.sam2_proc.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[7], input_masks=[masks[0]])
    out = stage._propagate(session, 0, reverse=False, size=(S, S))
    assert list(out) == list(range(T))
    for per_obj in out.values():
        assert list(per_obj) == [7]
        assert per_obj[7].shape == (S, S) and per_obj[7].dtype == bool
    # On its conditioning frame SAM 2 returns the prompt mask itself (up to its low-res round trip).
    assert iou(out[0][7], masks[0]) > 0.9


def test_track_orders_detect_segment_then_propagate_and_backfills_late_objects(stage, monkeypatch):
    frames, masks = moving_square()
    late = np.zeros((S, S), bool)
    late[90:120, 90:120] = True
    calls: list[tuple] = []

    def detect(frame, tags):
        k = next(i for i in range(T) if np.shares_memory(frame, frames[i]))
        calls.append(("detect", k))
        if k == 0:  # the square twice (two tags): the second is the same object, not a new one
            return [Detection(np.array([10.0, 30, 50, 70]), 0.9, tags[0]),
                    Detection(np.array([10.0, 30, 50, 70]), 0.7, tags[1])]
        return [Detection(np.array([90.0, 90, 120, 120]), 0.8, tags[1])]

    def segment(frame, boxes):
        k = next(i for i in range(T) if np.shares_memory(frame, frames[i]))
        calls.append(("segment", k, len(boxes)))
        return (np.stack([masks[0], masks[0]]) if k == 0 else late[None]), np.full(len(boxes), 0.5, np.float32)

    real_propagate = stage._propagate

    def propagate(session, start, reverse, size):
        out = real_propagate(session, start, reverse, size)
        calls.append(("propagate", start, reverse, list(out)))
        return out

    monkeypatch.setattr(stage, "detect", detect)
    monkeypatch.setattr(stage, "segment", segment)
    monkeypatch.setattr(stage, "_propagate", propagate)
    objects = stage.track(frames, ["square", "box"])
    assert [c[0] for c in calls] == ["detect", "segment", "propagate", "detect", "segment", "propagate", "propagate"]
    assert calls[2] == ("propagate", 0, False, [0, 1, 2, 3, 4, 5])
    assert calls[5] == ("propagate", 3, False, [3, 4, 5])
    assert calls[6] == ("propagate", 3, True, [3, 2, 1, 0])
    assert [(o.obj, o.tag, o.keyframe) for o in objects] == [(1, "square", 0), (2, "box", 3)]
    assert iou(objects[1].mask[3], late) > 0.9
    assert all(o.mask.shape == (T, S, S) for o in objects)


def test_sam_turns_boxes_into_one_mask_each(stage):
    frames, _ = moving_square()
    masks, scores = stage.segment(frames[0], np.array([[10.0, 30, 50, 70], [60.0, 60, 100, 100]]))
    assert masks.shape == (2, S, S) and masks.dtype == bool and scores.shape == (2,)


def test_process_batch_fans_out_one_row_per_object(stage):
    frames, _ = moving_square()
    row = {"key": "vid_abc-00003", "clip_key": "vid_abc-00003", "frames": frames, "_unit": 0,
           "tags": [{"tag": "red square", "score": 0.5}, {"tag": "box", "score": 0.2}], "scores": {"split": {}}}
    out = stage.process_batch([row])
    assert 1 <= len(out) <= 2
    for n, obj_row in enumerate(out, start=1):
        assert obj_row["key"] == f"vid_abc-00003-{n:02d}" and obj_row["obj"] == n
        assert obj_row["clip_key"] == "vid_abc-00003" and obj_row["_unit"] == 0
        assert obj_row["mask"].dtype == np.uint8 and obj_row["mask"].shape == (T, S, S)
        assert set(np.unique(obj_row["mask"])) <= {0, 255}
        assert obj_row["boxes"].shape == (T, 4)
        assert obj_row["tag"] in ("red square", "box") and "split" in obj_row["scores"]
        small = unpack_siblings(obj_row["siblings"])
        assert sorted(small) == list(range(1, len(out) + 1))
        assert small[n].shape == (T, S // 4, S // 4)
        assert small[n].any() == obj_row["mask"].any()


@pytest.mark.parametrize("label,tag", [("dog", "dog"), ("hot", "hot dog"), ("red square. box. [sep]", "red square"),
                                       ("box", "box"), ("[unk]", "red square")])
def test_detection_phrases_map_back_to_tags(label, tag):
    assert SegmentTrackStage._tag_of(label, ["red square", "box", "dog", "hot dog"]) == tag
