"""Segment + track stage: SAM-Track's loop rebuilt on maintained parts.

Per clip, every `sam_gap` frames (a keyframe, starting at frame 0):
1. Grounding DINO (transformers) turns the clip's top tags into boxes on the keyframe (NMS across tags);
2. SAM (segment-anything, `SamPredictor`) turns each box into a keyframe mask;
3. a mask whose IoU with every object already tracked on that frame is below `new_object_iou` is a new object:
   it enters the SAM 2 video session (transformers `Sam2VideoModel`) as a mask prompt on that frame, and the session
   propagates forward to the end of the clip (all objects) and backward to frame 0 (the new objects only, so an
   object that appears mid-clip still gets a mask on every frame).

Reads `frames`, `tags`, `clip_key` (or `key`). Fans out one row per object:
    key       `{clip_key}-{obj:02d}` (the `sample_key` layout)      mask   uint8 [T, H, W], 0 / 255
    obj       object index within the clip (1-based)                 boxes  float32 [T, 4] x0 y0 x1 y1, NaN if absent
    tag       the tag that detected it                               scores["segment"]  det/SAM scores, keyframe
    siblings  a compact summary of ALL objects of the clip (downsampled packed masks, scores), so `dedup` can
              decide each row on its own, whatever batches the engine forms.
    soft_alpha  uint8 [T, H, W], only with `soft_alpha: true` (see "Soft mattes")
With `group_objects: true` (the engine's `layers.group_objects`) the clip stays one row, key `{clip_key}-00`:
`objects` holds those fields per object, `mask` their union (data_engine/stages/grouped.py).
A clip with no object is dropped with its reason. Masks serialise compactly with `data_engine.stages.masks`.

`backend: sam3` (the default is `sam2`, the loop above) runs SAM 3 (transformers `Sam3VideoModel`, registry entry
`sam3`) instead of the three models: the same top tags are its text prompts, it detects every instance of each on
every frame (no `sam_gap`) and tracks it from there to the end of the clip (an object that appears mid-clip has no
mask before; data_engine/stages/sam3_track.py says which objects a frame shows). It tracks at most `max_objects`
at a time; `detection_threshold` and `new_detection_threshold` override its detection thresholds. Objects are
taken in the order SAM 3 first showed them, most confident first, and one that is on that frame the same as an
object taken before (IoU >= `new_object_iou`, for any tag) is dropped, as in the loop above; the rows are the
same, `det_score` being SAM 3's detection score and `sam_score` its tracker's mean presence probability. Its
masks are logits at 288 x 288 over the frame stretched to 1008 x 1008, upsampled as `Sam3VideoProcessor` does;
`mask` and `soft_alpha` come from them as described next.

Soft mattes. SAM and SAM 2 predict mask *logits* at 256 x 256 (SAM: over the padded 1024 square; SAM 2: over the
frame stretched to 1024 x 1024), upsampled bilinearly to the frame. `mask` is `logits > mask_threshold` (0.0,
both models' own decision boundary); with `soft_alpha: true` the row also carries
`soft_alpha = 255 * sigmoid((logits - mask_threshold) / temperature)` (rounded, a tie going down), so
`soft_alpha >= 128` is exactly `mask`. `dedup`, `fg_check` and `inpaint` keep using the binary `mask`; `compose` makes
the alpha layer and the fg from `soft_alpha` when a row has it. The logits were trained on binary masks: they
are a probability of "in the object", not an alpha, at the 256 grid's resolution (a cell is ~2.8 px of a 720-wide
frame), so an edge sharper than a cell comes out about a cell wide, and their scale (how steep the fall-off) is
the model's, not the matte's. `temperature` rescales it: T below 1 steepens the ramp towards the binary mask,
above 1 widens it. Matched to the logits (T = their gain over calibrated ones) the soft alpha follows a soft edge
(motion blur, hair) far better than any binary mask; too large, it widens every edge into a halo, makes the
inside of an object that the model holds with modest logits partly transparent, and turns uncertain pixels
(low-confidence regions, tracking drift) into half-transparent ghosts, and is then worse than binary.
`python benchmarks/soft_matte.py` measures this on calibrated logits of a known soft edge (BENCHMARKS.md); the
figures for the real SAM 2.1 weights need their checkpoint (not available offline here), so the default stays
binary and T = 1.
Keyframes: the object's keyframe matte is SAM's own (`SamPredictor.predict_torch(return_logits=True)`, the same
conversion), not SAM 2's output on its conditioning frame, which is that mask binarised and sent through SAM 2's
4x-down, 4x-up round trip (`mask * 20 - 10`): its soft edge would be resampling blur, not the model's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from data_engine.schema import object_key
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.grouped import OBJECTS, with_objects
from data_engine.stages.masks import boxes_from_mask, downsample, iou
from data_engine.stages.models import (
    GDINO_WEIGHTS,
    SAM2_WEIGHTS,
    SAM3_WEIGHTS,
    SAM_WEIGHTS,
    actor_gpu_gib,
    build_grounding_dino,
    build_sam,
    build_sam2_video,
    build_sam3_video,
    check_preset,
    device_for,
)
from data_engine.stages.sam3_track import configure, sam3_masklets

BACKENDS = ("sam2", "sam3")
# Working set per backend. sam2: SAM ViT-H's image encoder at 1024^2 and a SAM 2 session of 16 frames x 8 objects
# (benchmarks/perception.py). sam3: an estimate, not measured here (no GPU run of the release): SAM 3's ViT at
# 1008^2 (global attention over 72^2 tokens), its detector once per prompt and its tracker's 16 x 8 session.
WORKING_GIB = {"sam2": 3.0, "sam3": 4.0}


@dataclass(frozen=True)
class SegmentOptions:
    preset: str = "full"
    backend: str = "sam2"  # see BACKENDS and the module docstring
    sam_gap: int = 8
    max_tags: int = 3
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou: float = 0.7
    new_object_iou: float = 0.3
    max_objects: int = 8
    sibling_stride: int = 4
    session_dtype: str = "float32"
    seed: int = 0
    # The logit where `mask` starts (SAM's and SAM 2's boundary is 0.0); `soft_alpha` is 0.5 there.
    mask_threshold: float = 0.0
    # Also write `soft_alpha` (see "Soft mattes"); compose then uses it for the alpha layer and the fg.
    soft_alpha: bool = False
    # Divides the logits before the sigmoid: > 1 softer edges, < 1 closer to the binary mask.
    temperature: float = 1.0
    # One grouped row per clip instead of one row per object (the engine's `layers.group_objects`).
    group_objects: bool = False
    # backend sam3: SAM 3 keeps detections scoring above `detection_threshold` and starts an object from one at or
    # above `new_detection_threshold`; unset, the model config's (the release's: 0.5 and 0.7).
    detection_threshold: float | None = None
    new_detection_threshold: float | None = None

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.backend not in BACKENDS:
            raise ValueError(f"segment backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("detection_threshold", "new_detection_threshold"):
            value = getattr(self, name)
            if value is not None and self.backend != "sam3":
                raise ValueError(f"segment {name} is an option of backend sam3 (backend is {self.backend!r})")
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"segment {name} must be a probability in [0, 1], got {value!r}")
        if self.sam_gap < 1 or self.max_objects < 1 or self.sibling_stride < 1:
            raise ValueError("segment sam_gap, max_objects and sibling_stride must be >= 1")
        if not isinstance(self.group_objects, bool):
            raise ValueError(f"segment group_objects must be true or false, got {self.group_objects!r}")
        if not isinstance(self.soft_alpha, bool):
            raise ValueError(f"segment soft_alpha must be true or false, got {self.soft_alpha!r}")
        for name in ("mask_threshold", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"segment {name} must be a finite number, got {value!r}")
        if self.temperature <= 0:
            raise ValueError(f"segment temperature must be > 0 (it divides the mask logits), got {self.temperature}")


class Matte(NamedTuple):
    """One object on one frame: the binary mask and, with `soft_alpha`, the soft alpha (uint8) from the same logits."""

    mask: np.ndarray
    alpha: np.ndarray | None


def matte_from_logits(logits: np.ndarray, opts: SegmentOptions) -> Matte:
    """Mask logits at frame size -> `Matte` (see "Soft mattes" in the module docstring)."""
    mask = logits > opts.mask_threshold
    if not opts.soft_alpha:
        return Matte(mask, None)
    # float64: the sigmoid of a logit just above the threshold stays above 0.5, so the alpha rounds to >= 128;
    # tanh form: no overflow for large negative logits.
    z = (logits.astype(np.float64) - opts.mask_threshold) / opts.temperature
    alpha = 0.5 * (1.0 + np.tanh(0.5 * z))
    # Round half down: a logit exactly at the threshold (alpha 0.5) is outside `mask`, and 127 here.
    return Matte(mask, np.ceil(alpha * 255.0 - 0.5).astype(np.uint8))


def sam2_mattes(processor: Any, low_res: Any, size: tuple[int, int], opts: SegmentOptions) -> list[Matte]:
    """SAM 2's low-resolution mask logits [N, 1, h, w] (a torch tensor) -> one `Matte` per object at frame `size`:
    the processor's own upsampling (`post_process_masks`, unthresholded), then `matte_from_logits`."""
    logits = processor.post_process_masks([low_res.float()], original_sizes=[list(size)], binarize=False)[0]
    return [matte_from_logits(logits[i, 0].cpu().numpy(), opts) for i in range(logits.shape[0])]


def sam3_mattes(low_res: Any, size: tuple[int, int], opts: SegmentOptions) -> list[Matte]:
    """SAM 3's low-resolution mask logits [N, h, w] (a torch tensor) -> one `Matte` per row at frame `size`: the
    bilinear upsampling `Sam3VideoProcessor.postprocess_outputs` applies before it binarises, then
    `matte_from_logits`."""
    import torch.nn.functional as F

    logits = F.interpolate(low_res[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return [matte_from_logits(x.cpu().numpy(), opts) for x in logits]


@dataclass
class Detection:
    box: np.ndarray  # x0 y0 x1 y1 in pixels
    score: float
    tag: str


@dataclass
class TrackedObject:
    obj: int
    tag: str
    det_score: float
    sam_score: float
    keyframe: int
    mask: np.ndarray  # bool [T, H, W]
    alpha: np.ndarray | None = None  # uint8 [T, H, W] with `soft_alpha`, else None

    @classmethod
    def blank(cls, obj: int, tag: str, det_score: float, sam_score: float, keyframe: int, shape: tuple[int, ...],
              soft: bool) -> TrackedObject:
        """An object with no mask (and, when `soft`, a zero alpha) on any frame yet."""
        return cls(obj, tag, det_score, sam_score, keyframe, np.zeros(shape, bool),
                   np.zeros(shape, np.uint8) if soft else None)

    def set(self, frame: int, matte: Matte) -> None:
        self.mask[frame] = matte.mask
        if self.alpha is not None:
            self.alpha[frame] = matte.alpha


def siblings_summary(objects: list[TrackedObject], stride: int) -> dict:
    small = [downsample(o.mask, stride) for o in objects]
    return {
        "objs": [o.obj for o in objects],
        "det_scores": [o.det_score for o in objects],
        "shape": list(small[0].shape) if small else [0, 0, 0],
        "bits": [np.packbits(m.ravel()) for m in small],
    }


def unpack_siblings(summary: dict) -> dict[int, np.ndarray]:
    shape = tuple(summary["shape"])
    n = int(np.prod(shape))
    return {obj: np.unpackbits(bits, count=n).astype(bool).reshape(shape)
            for obj, bits in zip(summary["objs"], summary["bits"])}


class SegmentTrackStage(Stage):
    name = "segment"
    default_resources = Resources(num_cpus=1.0, num_gpus=0.15, batch_size=1, retries=1)
    Options = SegmentOptions
    reads = frozenset({"key", "frames", "tags"})
    writes = frozenset({"key", "clip_key", "obj", "tag", "mask", "boxes", "siblings", "scores", "soft_alpha", OBJECTS})

    @staticmethod
    def models(opts: SegmentOptions) -> dict[str, str]:
        """The backend's weights (registry name -> the dtype they run in)."""
        if opts.backend == "sam3":
            return {SAM3_WEIGHTS: opts.session_dtype}
        return {GDINO_WEIGHTS: "float32", SAM_WEIGHTS: "float32", SAM2_WEIGHTS: opts.session_dtype}

    @classmethod
    def gpu_memory_gib(cls, opts: SegmentOptions) -> float:
        return actor_gpu_gib(opts.preset, cls.models(opts), WORKING_GIB[opts.backend])

    @classmethod
    def weights(cls, opts: SegmentOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else tuple(cls.models(opts))

    def setup(self) -> None:
        import torch

        self.device = device_for(self.resources.num_gpus)
        self.dtype = getattr(torch, self.opts.session_dtype)
        if self.opts.backend == "sam3":
            self.sam3, self.sam3_proc = build_sam3_video(self.opts.preset, seed=self.opts.seed)
            self.sam3.to(self.device, dtype=self.dtype)
            opts = self.opts
            configure(self.sam3, opts.max_objects, opts.detection_threshold, opts.new_detection_threshold)
            return
        self.gdino, self.gdino_proc = build_grounding_dino(self.opts.preset, seed=self.opts.seed)
        self.gdino.to(self.device)
        self.sam = build_sam(self.opts.preset, seed=self.opts.seed)
        self.sam.model.to(self.device)
        self.sam2, self.sam2_proc = build_sam2_video(self.opts.preset, seed=self.opts.seed)
        self.sam2.to(self.device, dtype=self.dtype)

    # -------------------------------------------------------------- the three models
    def detect(self, frame: np.ndarray, tags: list[str]) -> list[Detection]:
        import torch
        from torchvision.ops import nms

        inputs = self.gdino_proc(images=frame, text=[tags], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.gdino(**inputs)
        result = self.gdino_proc.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.opts.box_threshold, text_threshold=self.opts.text_threshold,
            target_sizes=[frame.shape[:2]])[0]
        boxes, scores = result["boxes"].float().cpu(), result["scores"].float().cpu()
        if not len(boxes):
            return []
        h, w = frame.shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = nms(boxes, scores, self.opts.nms_iou).tolist()
        labels = result["text_labels"] if "text_labels" in result else result["labels"]
        return [Detection(boxes[i].numpy(), float(scores[i]), self._tag_of(str(labels[i]), tags)) for i in keep
                if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]

    @staticmethod
    def _tag_of(label: str, tags: list[str]) -> str:
        """The tag a Grounding DINO phrase came from: phrases are spans of the "tag1. tag2." prompt and may be
        a part of one tag or run over several; the earliest tag the phrase contains (or is part of) wins."""
        label = label.strip().lower()
        inside = [(label.find(t.lower()), i) for i, t in enumerate(tags) if t.lower() in label]
        if inside:
            return tags[min(inside)[1]]
        return next((t for t in tags if label and label in t.lower()), tags[0])

    def segment(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[list[Matte], np.ndarray]:
        """SAM mattes (one per box, from SAM's logits at frame size) and predicted IoU scores [N] on one frame."""
        import torch

        self.sam.set_image(frame)
        box_t = self.sam.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32, device=self.device),
                                                     frame.shape[:2])
        with torch.inference_mode():
            logits, scores, _ = self.sam.predict_torch(point_coords=None, point_labels=None, boxes=box_t,
                                                       multimask_output=False, return_logits=True)
        mattes = [matte_from_logits(x, self.opts) for x in logits[:, 0].float().cpu().numpy()]
        return mattes, scores[:, 0].float().cpu().numpy()

    def _propagate(self, session, start: int, reverse: bool, size: tuple[int, int]) -> dict[int, dict[int, Matte]]:
        import torch

        out: dict[int, dict[int, Matte]] = {}
        with torch.inference_mode():
            for step in self.sam2.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                mattes = sam2_mattes(self.sam2_proc, step.pred_masks, size, self.opts)
                out[step.frame_idx] = dict(zip(step.object_ids, mattes))
        return out

    # -------------------------------------------------------------- the loop
    def track(self, frames: np.ndarray, tags: list[str]) -> list[TrackedObject]:
        t, h, w = frames.shape[:3]
        session = self.sam2_proc.init_video_session(video=list(frames), inference_device=self.device,
                                                    dtype=self.dtype)
        objects: list[TrackedObject] = []
        for k in range(0, t, self.opts.sam_gap):
            if len(objects) >= self.opts.max_objects:
                break
            dets = self.detect(frames[k], tags)
            if not dets:
                continue
            mattes, sam_scores = self.segment(frames[k], np.stack([d.box for d in dets]))
            new: list[TrackedObject] = []
            for det, matte, sam_score in zip(dets, mattes, sam_scores):
                if self.known(matte.mask, [o.mask[k] for o in objects + new]):
                    continue
                obj = TrackedObject.blank(len(objects) + len(new) + 1, det.tag, det.score, float(sam_score), k,
                                          (t, h, w), self.opts.soft_alpha)
                obj.set(k, matte)
                new.append(obj)
            new = new[: self.opts.max_objects - len(objects)]
            if not new:
                continue
            self.sam2_proc.add_inputs_to_inference_session(session, frame_idx=k, obj_ids=[o.obj for o in new],
                                                           input_masks=[o.mask[k] for o in new])
            objects.extend(new)
            by_id = {o.obj: o for o in objects}
            new_ids = {o.obj for o in new}
            # On frame k a new object keeps SAM's matte (module docstring, "Keyframes").
            for f, per_obj in self._propagate(session, k, reverse=False, size=(h, w)).items():
                for oid, m in per_obj.items():
                    if not (f == k and oid in new_ids):
                        by_id[oid].set(f, m)
            if k > 0:
                for f, per_obj in self._propagate(session, k, reverse=True, size=(h, w)).items():
                    for oid in new_ids & per_obj.keys():
                        if f != k:
                            by_id[oid].set(f, per_obj[oid])
        return objects

    def known(self, mask: np.ndarray, others: list[np.ndarray]) -> bool:
        """Whether a candidate's mask on its keyframe is empty or one of `others` there already (IoU at least
        `new_object_iou`): then it is not a new object."""
        return not mask.any() or any(iou(mask, m) >= self.opts.new_object_iou for m in others)

    def track_sam3(self, frames: np.ndarray, tags: list[str]) -> list[TrackedObject]:
        """SAM 3's objects for the tags (sam3_track.py) as `TrackedObject`s: an object found for an earlier or more
        confident detection is kept, a later one that is the same on its first frame is not."""
        import torch

        t, h, w = frames.shape[:3]
        objects: list[TrackedObject] = []
        for found in sam3_masklets(self.sam3, self.sam3_proc, frames, tags, self.device, self.dtype):
            if len(objects) >= self.opts.max_objects:
                break
            k = found.first_frame
            obj = TrackedObject.blank(len(objects) + 1, found.prompt, found.det_score, found.track_score, k,
                                      (t, h, w), self.opts.soft_alpha)
            shown = sorted(found.logits)
            for f, matte in zip(shown, sam3_mattes(torch.stack([found.logits[f] for f in shown]), (h, w), self.opts)):
                obj.set(f, matte)
            if not self.known(obj.mask[k], [o.mask[k] for o in objects]):
                objects.append(obj)
        return objects

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out: list[Row] = []
        for row in rows:
            frames, tags = row.get("frames"), [t["tag"] for t in row.get("tags", [])][: self.opts.max_tags]
            if frames is None or frames.ndim != 4 or frames.dtype != np.uint8:
                out.append(self.failed(row, StageError("segment needs frames uint8 [T, H, W, 3] from split")))
                continue
            if not tags:
                out.append(self.failed(row, StageError("segment needs row['tags'] from the tag stage; none found")))
                continue
            objects = (self.track_sam3 if self.opts.backend == "sam3" else self.track)(frames, tags)
            if not objects:
                self.drop(row, f"segment: nothing detected for tags {tags}")
                continue
            clip_key = row.get("clip_key") or row["key"]
            summary = siblings_summary(objects, self.opts.sibling_stride)
            fields = [self.object_fields(o) for o in objects]
            if self.opts.group_objects:  # the clip stays one row, its key the clip's own sample key
                grouped = [{**f, "scores": {"segment": seg}} for f, seg in fields]
                out.append(with_objects(row, grouped, key=object_key(clip_key, 0), clip_key=clip_key,
                                        siblings=summary))
                continue
            for f, seg in fields:
                out.append({**row, **f, "key": object_key(clip_key, f["obj"]), "clip_key": clip_key,
                            "siblings": summary, "scores": {**row.get("scores", {}), "segment": seg}})
        return out

    def object_fields(self, o: TrackedObject) -> tuple[dict, dict]:
        """An object's row fields (obj, tag, mask, boxes, soft_alpha with `soft_alpha: true`) and its scores."""
        mask = o.mask.astype(np.uint8) * 255
        seg = {"tag": o.tag, "det_score": o.det_score, "sam_score": o.sam_score, "keyframe": o.keyframe,
               "area": float(o.mask.mean())}
        fields = {"obj": o.obj, "tag": o.tag, "mask": mask, "boxes": boxes_from_mask(mask)}
        if o.alpha is not None:
            fields["soft_alpha"] = o.alpha
            seg["soft_alpha"] = {"mask_threshold": self.opts.mask_threshold, "temperature": self.opts.temperature}
        return fields, seg
