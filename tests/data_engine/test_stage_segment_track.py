"""SegmentTrackStage plumbing with tiny random models: SAM 2 video propagation, the detect -> SAM -> track loop,
the fan-out rows and the soft mattes. Random weights make the masks themselves meaningless; what is checked is
what the code does with them (frames, order, prompts, object bookkeeping, logits -> mask and alpha)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_engine.stages.masks import iou
from data_engine.stages.segment_track import (
    Detection,
    Matte,
    SegmentOptions,
    SegmentTrackStage,
    matte_from_logits,
    sam2_mattes,
    unpack_siblings,
)

T, S = 6, 128
OPTIONS = dict(preset="tiny", sam_gap=3, box_threshold=0.0, text_threshold=0.0, max_objects=2)


@pytest.fixture(scope="module")
def stage() -> SegmentTrackStage:
    s = SegmentTrackStage(**OPTIONS)
    s.ensure_setup()
    return s


@pytest.fixture(scope="module")
def soft_stage() -> SegmentTrackStage:
    s = SegmentTrackStage(**OPTIONS, soft_alpha=True, temperature=2.0)
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
        assert per_obj[7].mask.shape == (S, S) and per_obj[7].mask.dtype == bool and per_obj[7].alpha is None
    # On its conditioning frame SAM 2 returns the prompt mask itself (up to its low-res round trip).
    assert iou(out[0][7].mask, masks[0]) > 0.9


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
        mattes = [Matte(masks[0], None)] * 2 if k == 0 else [Matte(late, None)]
        return mattes, np.full(len(boxes), 0.5, np.float32)

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
    # A new object keeps SAM's keyframe matte, not SAM 2's low-res round trip of it.
    assert np.array_equal(objects[0].mask[0], masks[0]) and np.array_equal(objects[1].mask[3], late)
    assert all(o.mask.shape == (T, S, S) and o.alpha is None for o in objects)


def test_sam_turns_boxes_into_one_mask_each(stage):
    frames, _ = moving_square()
    mattes, scores = stage.segment(frames[0], np.array([[10.0, 30, 50, 70], [60.0, 60, 100, 100]]))
    assert len(mattes) == 2 and scores.shape == (2,)
    assert all(m.mask.shape == (S, S) and m.mask.dtype == bool and m.alpha is None for m in mattes)


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


# -- soft mattes -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature,threshold", [(0.5, 0.0), (2.0, 0.0), (1.0, 1.5)])
def test_sam2_mattes_are_the_sigmoid_of_the_upsampled_logits(stage, temperature, threshold):
    """Parity with an independent implementation: bilinear upsampling (what post_process_masks does), then
    sigmoid((logits - threshold) / T) in float32 torch; within rounding of one 8-bit level."""
    low_res = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 6
    opts = SegmentOptions(preset="tiny", soft_alpha=True, temperature=temperature, mask_threshold=threshold)
    mattes = sam2_mattes(stage.sam2_proc, low_res, (S, S + 40), opts)
    logits = F.interpolate(low_res, (S, S + 40), mode="bilinear", align_corners=False)[:, 0]
    want = torch.sigmoid((logits - threshold) / temperature) * 255
    for matte, logit, alpha in zip(mattes, logits, want):
        assert matte.alpha.dtype == np.uint8 and matte.alpha.shape == (S, S + 40)
        assert np.array_equal(matte.mask, (logit > threshold).numpy())
        assert np.abs(matte.alpha.astype(np.float64) - alpha.double().numpy()).max() <= 0.5 + 1e-3
        assert np.array_equal(matte.alpha >= 128, matte.mask)


def test_the_threshold_is_a_tie_that_stays_out_of_the_mask():
    opts = SegmentOptions(preset="tiny", soft_alpha=True, temperature=3.0, mask_threshold=0.25)
    logits = np.array([[0.25, 0.25 + 1e-6, 0.25 - 1e-6, 1e3, -1e3]], np.float32)
    matte = matte_from_logits(logits, opts)
    assert matte.mask.tolist() == [[False, True, False, True, False]]
    assert matte.alpha.tolist() == [[127, 128, 127, 255, 0]]


def clip_row(frames: np.ndarray) -> dict:
    return {"key": "vid_abc-00003", "clip_key": "vid_abc-00003", "frames": frames, "_unit": 0,
            "tags": [{"tag": "red square", "score": 0.5}, {"tag": "box", "score": 0.2}], "scores": {"split": {}}}


def test_soft_alpha_rows_threshold_to_the_binary_mask(stage, soft_stage):
    """The soft path on the real tiny models: an alpha with intermediate values that is >= 128 exactly where the
    mask is, and the same binary masks as without the option (same seeds, same models)."""
    frames, _ = moving_square()
    soft_rows = soft_stage.process_batch([clip_row(frames)])
    binary_rows = stage.process_batch([clip_row(frames)])
    assert [r["key"] for r in soft_rows] == [r["key"] for r in binary_rows] and soft_rows
    for soft, binary in zip(soft_rows, binary_rows):
        alpha = soft["soft_alpha"]
        assert alpha.dtype == np.uint8 and alpha.shape == (T, S, S)
        assert np.array_equal(soft["mask"], binary["mask"]) and "soft_alpha" not in binary
        assert np.array_equal(alpha >= 128, soft["mask"] == 255)
        assert ((alpha > 0) & (alpha < 255)).any()
        assert soft["scores"]["segment"]["soft_alpha"] == {"mask_threshold": 0.0, "temperature": 2.0}


def test_a_new_objects_keyframe_alpha_is_sams_own(soft_stage, monkeypatch):
    frames, _ = moving_square()
    box = np.array([10.0, 30, 50, 70])
    monkeypatch.setattr(soft_stage, "detect", lambda frame, tags: [Detection(box, 0.9, tags[0])]
                        if np.shares_memory(frame, frames[0]) else [])
    [obj] = soft_stage.track(frames, ["square"])
    [sam], _ = soft_stage.segment(frames[0], box[None])
    assert np.array_equal(obj.alpha[0], sam.alpha) and np.array_equal(obj.mask[0], sam.mask)
    assert np.array_equal(obj.alpha >= 128, obj.mask)


@pytest.mark.parametrize("bad,message", [
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(temperature=-1), "temperature must be > 0"),
    (dict(temperature=math.nan), "temperature must be a finite number"),
    (dict(mask_threshold=math.inf), "mask_threshold must be a finite number"),
    (dict(temperature="2"), r"temperature must be a number, got .2. \(str\)"),
    (dict(soft_alpha="yes"), "soft_alpha must be true or false"),
])
def test_soft_matte_options_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        SegmentTrackStage(preset="tiny", **bad)
