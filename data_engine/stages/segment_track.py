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
A clip with no object is dropped with its reason. Masks serialise compactly with `data_engine.stages.masks`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.schema import object_key
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.masks import boxes_from_mask, downsample, iou
from data_engine.stages.models import (GDINO_WEIGHTS, SAM2_WEIGHTS, SAM_WEIGHTS, build_grounding_dino, build_sam,
                                       build_sam2_video, check_preset, device_for)


@dataclass(frozen=True)
class SegmentOptions:
    preset: str = "full"
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

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.sam_gap < 1 or self.max_objects < 1 or self.sibling_stride < 1:
            raise ValueError("segment sam_gap, max_objects and sibling_stride must be >= 1")


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
    writes = frozenset({"key", "clip_key", "obj", "tag", "mask", "boxes", "siblings", "scores"})

    @classmethod
    def weights(cls, opts: SegmentOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else (GDINO_WEIGHTS, SAM_WEIGHTS, SAM2_WEIGHTS)

    def setup(self) -> None:
        import torch

        self.device = device_for(self.resources.num_gpus)
        self.dtype = getattr(torch, self.opts.session_dtype)
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

    def segment(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM masks bool [N, H, W] and predicted IoU scores [N] for N boxes on one frame."""
        import torch

        self.sam.set_image(frame)
        box_t = self.sam.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32, device=self.device),
                                                     frame.shape[:2])
        with torch.inference_mode():
            masks, scores, _ = self.sam.predict_torch(point_coords=None, point_labels=None, boxes=box_t,
                                                      multimask_output=False)
        return masks[:, 0].cpu().numpy(), scores[:, 0].float().cpu().numpy()

    def _propagate(self, session, start: int, reverse: bool, size: tuple[int, int]) -> dict[int, dict[int, np.ndarray]]:
        import torch

        out: dict[int, dict[int, np.ndarray]] = {}
        with torch.inference_mode():
            for step in self.sam2.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                masks = self.sam2_proc.post_process_masks([step.pred_masks.float()], original_sizes=[list(size)],
                                                          binarize=True)[0]
                out[step.frame_idx] = {oid: masks[i, 0].cpu().numpy() for i, oid in enumerate(step.object_ids)}
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
            masks, sam_scores = self.segment(frames[k], np.stack([d.box for d in dets]))
            new: list[TrackedObject] = []
            for det, mask, sam_score in zip(dets, masks, sam_scores):
                known = [o.mask[k] for o in objects] + [o.mask[k] for o in new]
                if not mask.any() or any(iou(mask, m) >= self.opts.new_object_iou for m in known):
                    continue
                full = np.zeros((t, h, w), bool)
                full[k] = mask
                new.append(TrackedObject(len(objects) + len(new) + 1, det.tag, det.score, float(sam_score), k, full))
            new = new[: self.opts.max_objects - len(objects)]
            if not new:
                continue
            self.sam2_proc.add_inputs_to_inference_session(session, frame_idx=k, obj_ids=[o.obj for o in new],
                                                           input_masks=[o.mask[k] for o in new])
            objects.extend(new)
            by_id = {o.obj: o for o in objects}
            for f, per_obj in self._propagate(session, k, reverse=False, size=(h, w)).items():
                for oid, m in per_obj.items():
                    by_id[oid].mask[f] = m
            if k > 0:
                new_ids = {o.obj for o in new}
                for f, per_obj in self._propagate(session, k, reverse=True, size=(h, w)).items():
                    for oid in new_ids & per_obj.keys():
                        by_id[oid].mask[f] = per_obj[oid]
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
            objects = self.track(frames, tags)
            if not objects:
                self.drop(row, f"segment: nothing detected for tags {tags}")
                continue
            clip_key = row.get("clip_key") or row["key"]
            summary = siblings_summary(objects, self.opts.sibling_stride)
            for o in objects:
                mask = o.mask.astype(np.uint8) * 255
                seg = {"tag": o.tag, "det_score": o.det_score, "sam_score": o.sam_score, "keyframe": o.keyframe,
                       "area": float(o.mask.mean())}
                out.append({**row, "key": object_key(clip_key, o.obj), "clip_key": clip_key, "obj": o.obj,
                            "tag": o.tag, "mask": mask, "boxes": boxes_from_mask(mask), "siblings": summary,
                            "scores": {**row.get("scores", {}), "segment": seg}})
        return out
