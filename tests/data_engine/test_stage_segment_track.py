"""SegmentTrackStage plumbing with tiny random models: SAM 2 video propagation, the detect -> SAM -> track loop,
the SAM 3 backend, the fan-out rows and the soft mattes. Random weights make the masks themselves meaningless; what
is checked is what the code does with them (frames, order, prompts, object bookkeeping, logits -> mask and alpha).
Random tiny SAM 3 weights score every detection far below the release's thresholds, so its stages here lower them
(`detection_threshold`, `new_detection_threshold`) to have objects to check."""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_engine.stages import segment_track
from data_engine.stages.grouped import OBJECTS
from data_engine.stages.masks import iou
from data_engine.stages.sam3_track import Masklet, sam3_masklets
from data_engine.stages.segment_track import (
    Detection,
    Matte,
    SegmentOptions,
    SegmentTrackStage,
    matte_from_logits,
    sam2_mattes,
    sam3_mattes,
    unpack_siblings,
)

T, S = 6, 128
OPTIONS = dict(preset="tiny", sam_gap=3, box_threshold=0.0, text_threshold=0.0, max_objects=2)
SAM3_OPTIONS = dict(preset="tiny", backend="sam3", detection_threshold=0.0, new_detection_threshold=0.0,
                    max_objects=2)
BACKENDS = ("sam2", "sam3")


@functools.cache
def ready(backend: str, soft: bool = False) -> SegmentTrackStage:
    """The backend's stage on the tiny models, set up once; `soft`: with soft_alpha at temperature 2."""
    s = SegmentTrackStage(**(SAM3_OPTIONS if backend == "sam3" else OPTIONS),
                          **(dict(soft_alpha=True, temperature=2.0) if soft else {}))
    s.ensure_setup()
    return s


@pytest.fixture
def stage() -> SegmentTrackStage:
    return ready("sam2")


@pytest.fixture
def soft_stage() -> SegmentTrackStage:
    return ready("sam2", soft=True)


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


def assert_boxes_bound_masks(boxes: np.ndarray, mask: np.ndarray) -> None:
    """Per frame: NaN where the mask is empty, else the pixel-edge box of exactly its pixels."""
    for box, frame in zip(boxes, mask > 0):
        ys, xs = np.nonzero(frame)
        want = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if ys.size else [np.nan] * 4
        np.testing.assert_array_equal(box, np.asarray(want, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_process_batch_fans_out_one_row_per_object(backend, monkeypatch):
    stage = ready(backend)
    frames, _ = moving_square()
    out = stage.process_batch([clip_row(frames)])
    assert 1 <= len(out) <= 2
    for n, obj_row in enumerate(out, start=1):
        assert obj_row["key"] == f"vid_abc-00003-{n:02d}" and obj_row["obj"] == n
        assert obj_row["clip_key"] == "vid_abc-00003" and obj_row["_unit"] == 0
        assert obj_row["mask"].dtype == np.uint8 and obj_row["mask"].shape == (T, S, S)
        assert set(np.unique(obj_row["mask"])) <= {0, 255} and obj_row["mask"].any()
        assert_boxes_bound_masks(obj_row["boxes"], obj_row["mask"])
        assert obj_row["tag"] in ("red square", "box") and "split" in obj_row["scores"]
        segment = obj_row["scores"]["segment"]
        assert segment["tag"] == obj_row["tag"] and obj_row["mask"][segment["keyframe"]].any()
        assert segment["area"] == pytest.approx(float((obj_row["mask"] > 0).mean()))
        small = unpack_siblings(obj_row["siblings"])
        assert sorted(small) == list(range(1, len(out) + 1))
        assert small[n].shape == (T, S // 4, S // 4)
        assert small[n].any() == obj_row["mask"].any()
    # layers.group_objects: the same objects in one row, its mask their union, its key the clip's `-00`.
    monkeypatch.setattr(stage, "opts", dataclasses.replace(stage.opts, group_objects=True))
    [grouped] = stage.process_batch([clip_row(frames)])
    assert grouped["key"] == "vid_abc-00003-00" and [o["obj"] for o in grouped[OBJECTS]] == [r["obj"] for r in out]
    for obj, obj_row in zip(grouped[OBJECTS], out):
        assert np.array_equal(obj["mask"], obj_row["mask"]) and obj["tag"] == obj_row["tag"]
        assert obj["scores"]["segment"] == obj_row["scores"]["segment"]
    assert np.array_equal(grouped["mask"], np.maximum.reduce([r["mask"] for r in out]))
    assert grouped["siblings"]["objs"] == out[0]["siblings"]["objs"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_clip_gives_the_same_rows(backend):
    stage = ready(backend, soft=True)
    frames, _ = moving_square()
    first, again = stage.process_batch([clip_row(frames)]), stage.process_batch([clip_row(frames)])
    assert [r["key"] for r in first] == [r["key"] for r in again] and first
    for a, b in zip(first, again):
        for field in ("mask", "soft_alpha", "boxes"):
            np.testing.assert_array_equal(a[field], b[field])
        assert a["scores"]["segment"] == b["scores"]["segment"] and a["tag"] == b["tag"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_clip_where_nothing_is_found_is_dropped_with_its_reason(backend, monkeypatch):
    stage = ready(backend)
    if backend == "sam3":  # no detection scores above 1
        monkeypatch.setattr(stage.sam3, "score_threshold_detection", 1.0)
    else:
        monkeypatch.setattr(stage, "detect", lambda frame, tags: [])
    row = clip_row(moving_square()[0])
    assert stage.process_batch([row]) == []
    assert row["scores"]["dropped"] == ["segment: nothing detected for tags ['red square', 'box']"]


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_alpha_rows_threshold_to_the_binary_mask(backend):
    """The soft path on the real tiny models: an alpha with intermediate values that is >= 128 exactly where the
    mask is, and the same binary masks as without the option (same seeds, same models)."""
    stage, soft_stage = ready(backend), ready(backend, soft=True)
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


# -- the sam3 backend ------------------------------------------------------------------------------------------------
def band(x0: int, x1: int, low: int = S // 8) -> torch.Tensor:
    """Low-res logits on a `low` grid: +8 on columns x0 to x1 (exclusive), -8 elsewhere."""
    grid = torch.full((low, low), -8.0)
    grid[:, x0:x1] = 8.0
    return grid


def test_sam3_objects_found_for_several_tags_are_deduped_by_mask_iou(monkeypatch):
    """Known answers for the sam3 bookkeeping: objects in the order SAM 3 first showed them, most confident first;
    one that is, on its first frame, the same as an object kept before it (IoU >= new_object_iou) is dropped
    whatever its tag, and does not count towards max_objects; masks are the logits > 0 at frame size on the
    frames SAM 3 showed the object and empty elsewhere; the alpha is the tempered sigmoid of the same logits."""
    left, right = band(2, 8), band(10, 15)
    found = [Masklet(0, "red square", 0.9, {0: left, 1: left}, [0.8]),
             Masklet(5, "box", 0.7, {0: left.clone()}),  # the same object again, found for the second tag
             Masklet(6, "box", 0.6, {2: right, 3: right}, [0.5, 0.3])]
    monkeypatch.setattr(segment_track, "sam3_masklets", lambda *args: found)
    objects = ready("sam3", soft=True).track_sam3(moving_square()[0], ["red square", "box"])
    assert [(o.obj, o.tag, o.keyframe) for o in objects] == [(1, "red square", 0), (2, "box", 2)]
    assert [(o.det_score, o.sam_score) for o in objects] == [(0.9, 0.8), (0.6, pytest.approx(0.4))]
    # Bilinear upsampling x8 (align_corners=False) puts the +8 / -8 step's zero exactly on the cells' edges.
    want = np.zeros((T, S, S), bool)
    want[:2, :, 16:64] = True
    assert np.array_equal(objects[0].mask, want)
    want = np.zeros((T, S, S), bool)
    want[2:4, :, 80:120] = True
    assert np.array_equal(objects[1].mask, want)
    for obj in objects:
        assert np.array_equal(obj.alpha >= 128, obj.mask)
    # Half a pixel inside the edge the logit is +1 (a sixteenth of the way from +8 to -8): 255 * sigmoid(1 / T).
    assert objects[0].alpha[0, 40, 63] == round(255 / (1 + math.exp(-1 / 2.0)))
    assert objects[0].alpha[0, 40, 64] == round(255 / (1 + math.exp(1 / 2.0)))


def test_sam3_shows_on_each_frame_the_objects_its_own_postprocessing_shows(monkeypatch):
    """Parity with `Sam3VideoProcessor.postprocess_outputs` on the same model's outputs: on every frame the same
    objects (no suppressed, hotstart-removed or empty one) with the same prompts, and masks that contain its masks
    (it then also takes away from an object the pixels a more confident object of the same prompt claims)."""
    frames, _ = moving_square()
    model, processor, prompts = ready("sam3").sam3, ready("sam3").sam3_proc, ["red square", "box"]
    monkeypatch.setattr(model, "max_num_objects", 4)  # room for duplicates, which SAM 3's hotstart then removes
    found = sam3_masklets(model, processor, frames, prompts, "cpu", torch.float32)
    session = processor.init_video_session(video=list(frames), inference_device="cpu")
    processor.add_text_prompt(session, prompts)
    theirs = {out.frame_idx: processor.postprocess_outputs(session, out)
              for out in model.propagate_in_video_iterator(session)}
    assert sorted(theirs) == list(range(T)) and any(len(post["object_ids"]) for post in theirs.values())
    assert session.hotstart_removed_obj_ids  # the case to get right: objects SAM 3 showed at first, then removed
    opts = SegmentOptions(preset="tiny")
    for f, post in theirs.items():
        ours = {m.obj_id: (m.prompt, sam3_mattes(m.logits[f][None], (S, S), opts)[0].mask)
                for m in found if f in m.logits}
        ours = {obj: shown for obj, shown in ours.items() if shown[1].any()}
        assert sorted(ours) == sorted(post["object_ids"].tolist()), f"frame {f}"
        for prompt, ids in post["prompt_to_obj_ids"].items():
            assert all(ours[obj][0] == prompt for obj in ids)
        for obj, mask in zip(post["object_ids"].tolist(), post["masks"].numpy()):
            assert (ours[obj][1] | ~mask).all(), f"frame {f}, object {obj}: a pixel of SAM 3's mask is not ours"


@pytest.mark.parametrize("bad,message", [
    (dict(backend="sam4"), r"segment backend must be one of \('sam2', 'sam3'\), got 'sam4'"),
    (dict(detection_threshold=0.2), r"detection_threshold is an option of backend sam3 \(backend is 'sam2'\)"),
    (dict(backend="sam3", new_detection_threshold=1.5), r"new_detection_threshold must be a probability in \[0, 1\]"),
])
def test_backend_options_are_checked_in_one_line(bad, message):
    with pytest.raises(ValueError, match=message) as info:
        SegmentTrackStage.parse_options({"preset": "tiny", **bad}, "stages.segment")
    assert "\n" not in str(info.value)
