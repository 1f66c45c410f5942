"""SAM 3 (transformers `Sam3VideoModel`) for the segment stage's `backend: sam3`: one model finds every instance of
each text prompt on every frame and tracks it through the clip (segment_track.py turns what it finds into rows).

What counts as an object on a frame is what SAM 3's own `Sam3VideoProcessor.postprocess_outputs` would show: the
model's outputs minus the objects it suppressed on that frame and those its hotstart heuristics removed (spurious
or duplicate tracklets, decided a few frames later: `propagate_in_video_iterator` holds outputs back until then).
Unlike `postprocess_outputs`, the masks stay logits (for `soft_alpha`) and the per-pixel non-overlap between
objects of one prompt is not applied: each object's matte is its own, as with the SAM 2 backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Masklet:
    """One object SAM 3 tracked: its prompt, detection score, and low-res mask logits per frame it was shown on."""

    obj_id: int
    prompt: str
    det_score: float
    logits: dict[int, Any] = field(default_factory=dict)  # frame -> torch float32 [h, w]
    tracker_scores: list[float] = field(default_factory=list)

    @property
    def first_frame(self) -> int:
        return min(self.logits)

    @property
    def track_score(self) -> float:
        """The tracker's mean object-presence probability over the frames it propagated the object; the detection
        score for an object it never propagated (seen on the last frame only)."""
        return float(np.mean(self.tracker_scores)) if self.tracker_scores else self.det_score


def configure(model: Any, max_objects: int, detection: float | None, new_detection: float | None) -> None:
    """SAM 3 tracks at most `max_num_objects` at a time (new objects from the top-scoring detections), here the
    stage's `max_objects`, as many as the sam2 backend tracks; it keeps detections scoring above
    `score_threshold_detection` and starts a new object from one at or above `new_det_thresh`. The model reads
    these attributes on every frame; a threshold of None keeps the config's."""
    model.max_num_objects = max_objects
    if detection is not None:
        model.score_threshold_detection = detection
    if new_detection is not None:
        model.new_det_thresh = new_detection


def sam3_masklets(model: Any, processor: Any, frames: np.ndarray, prompts: list[str], device: str,
                  dtype: Any) -> list[Masklet]:
    """Every object SAM 3 finds for `prompts` in `frames` (uint8 [T, H, W, 3]), in the order it first showed
    them, most confident first on a frame."""
    session = processor.init_video_session(video=list(frames), inference_device=device, dtype=dtype)
    processor.add_text_prompt(session, prompts)
    found: dict[int, Masklet] = {}
    for out in model.propagate_in_video_iterator(session):
        # The iterator has already added the hotstart removals of every frame it processed, this one's included.
        hidden = set(out.suppressed_obj_ids or ()) | session.hotstart_removed_obj_ids
        for obj_id, low_res in out.obj_id_to_mask.items():
            if obj_id in hidden:
                continue
            if obj_id not in found:
                prompt = session.prompts[session.obj_id_to_prompt_id[obj_id]]
                found[obj_id] = Masklet(obj_id, prompt, float(out.obj_id_to_score[obj_id]))
            found[obj_id].logits[out.frame_idx] = low_res[0].float().cpu()
            if obj_id in out.obj_id_to_tracker_score:
                found[obj_id].tracker_scores.append(float(out.obj_id_to_tracker_score[obj_id]))
    return sorted(found.values(), key=lambda m: (m.first_frame, -m.det_score, m.obj_id))
