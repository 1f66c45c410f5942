"""Compose the layers of a clip into the training sample.

`compose` turns a clip row into the training sample: fg = the original frames where the matte is, mid-grey
elsewhere (`over_grey`), alpha = the matte, bg = the inpainted background, blend = the original frames. The matte
is the row's `soft_alpha` when `segment` wrote one (`soft_alpha: true`), else its `mask`; the blend stays the
original frames either way (they are the true composite; a recomposition from estimated layers would not be).
A grouped row (`layers.group_objects`, data_engine/stages/grouped.py) gives one sample with a foreground per
object, in its order (front first, from `layer_order`), its `depth_order`, and each object's scores under
`scores["objects"]`.
"""
from __future__ import annotations

import numpy as np

from data_engine.schema import Captions, LayeredClip, alpha_name, fg_name, object_key, over_grey
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.grouped import OBJECTS, is_grouped
from data_engine.stages.masks import matte_of


def composed_clip(row: Row, alpha: np.ndarray, bg: np.ndarray, *, fps: float, kind: str, origin: str,
                  scores: dict, more_alphas: tuple[np.ndarray, ...] = (),
                  depth_order: tuple[int, ...] = ()) -> LayeredClip:
    """The sample of a row's `frames` with its matte(s) and background: fg_k = the frames over mid-grey where
    matte k is (`over_grey`), blend = the frames themselves (the true composite); compose's and image_inpaint's.
    `more_alphas`: the mattes of foregrounds 1 .. K-1, front first."""
    frames, key = row["frames"], row["key"]
    if key == row.get("clip_key"):
        key = object_key(key, 0)  # never fanned out: the clip's single object
    more_layers = {}
    for k, matte in enumerate(more_alphas, start=1):
        more_layers[fg_name(k)] = over_grey(frames, matte)
        more_layers[alpha_name(k)] = matte
    return LayeredClip(key=key, fg=over_grey(frames, alpha), alpha=alpha, bg=bg, blend=frames,
                       captions=Captions.from_dict(row.get("captions", {})), fps=fps, kind=kind, origin=origin,
                       source_id=row.get("source_id", ""),
                       frame_range=tuple(row.get("frame_range", (0, frames.shape[0]))), scores=scores,
                       more_layers=more_layers, depth_order=depth_order)


class ComposeStage(Stage):
    """Reads `key`, `clip_key`, `frames`, `mask` (`soft_alpha` when present), `bg`, `fps`, `frame_range`,
    `captions`, `scores`; writes `clip` and drops the pixel fields it consumed."""

    name = "compose"
    default_resources = Resources(num_cpus=0.5, batch_size=2, retries=1)
    reads = frozenset({"key", "frames", "mask", "bg", "fps"})
    writes = frozenset({"key", "clip"})
    CONSUMED = ("frames", "mask", "soft_alpha", "bg", "fg", OBJECTS)

    def compose(self, row: Row) -> LayeredClip:
        missing = [f for f in ("frames", "mask", "bg") if row.get(f) is None]
        if missing:
            raise StageError(
                f"compose needs {missing} from earlier stages (mask: segment or synthetic_layers; bg: inpaint or "
                f"synthetic_layers); add them to the config's stages before compose"
            )
        frames, bg = row["frames"], row["bg"]
        objects = row[OBJECTS] if is_grouped(row) else [row]
        mattes = [matte_of(o) for o in objects]
        for o, alpha in zip(objects, mattes):
            if alpha.dtype != np.uint8 or alpha.shape != frames.shape[:3]:
                name = "mask" if o.get("soft_alpha") is None else "soft_alpha"
                raise StageError(f"{name} must be uint8 {frames.shape[:3]}, got {alpha.dtype} {alpha.shape}")
        scores = row.get("scores", {})
        if is_grouped(row):  # each object's own scores, front first, beside the clip's
            scores = {**scores, "objects": [{"obj": o["obj"], "tag": o.get("tag"), **o["scores"]} for o in objects]}
        return composed_clip(row, mattes[0], bg, fps=float(row["fps"]), kind="video", origin="engine",
                             scores=scores, more_alphas=tuple(mattes[1:]),
                             depth_order=tuple(row.get("depth_order", ())))

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            try:
                clip = self.compose(row)
            except (StageError, ValueError) as exc:
                out.append(self.failed(row, exc))
                continue
            rest = {k: v for k, v in row.items() if k not in self.CONSUMED}
            out.append({**rest, "key": clip.key, "clip": clip})
        return out

