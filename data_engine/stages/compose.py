"""Compose the four layers of a clip, and the model-free layer provider for the built-in synthetic videos.

`compose` turns a clip row into the training sample: fg = the original frames where the matte is, mid-grey
elsewhere (`over_grey`), alpha = the matte, bg = the inpainted background, blend = the original frames. The matte
is the row's `soft_alpha` when `segment` wrote one (`soft_alpha: true`), else its `mask`; the blend stays the
original frames either way (they are the true composite; a recomposition from estimated layers would not be).
A grouped row (`layers.group_objects`, data_engine/stages/grouped.py) gives one sample with a foreground per
object, in its order (front first, from `layer_order`), its `depth_order`, and each object's scores under
`scores["objects"]`.

`synthetic_layers` gives a clip of a built-in synthetic video its true matte and background: the video was
rendered by `data_engine.synthetic`, so its layers are regenerated from its sidecar and cut with the
same frame indices and geometry `split` used on the decoded video. It lets the default, model-free config run
raw mp4s through the real video path (probe, split, compose, encode); for any other video it has no answer, and
the perception chain (`segment`, `inpaint`, `caption`) provides `mask`, `bg` and `captions` instead.
"""
from __future__ import annotations

import numpy as np

from data_engine.layers_sidecar import SidecarError, read_sidecar, sidecar_of
from data_engine.schema import Captions, LayeredClip, alpha_name, fg_name, object_key, over_grey
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.grouped import OBJECTS, is_grouped
from data_engine.stages.masks import matte_of
from data_engine.synthetic import SyntheticTruth
from data_engine.video_io import resize_crop

NO_LAYERS = (
    "the model-free stages only handle the built-in synthetic videos; "
    "run a perception config (e.g. --config infra/configs/engine/perception_tiny.yaml) to get layers for real videos"
)


class SyntheticLayersStage(Stage):
    """Reads `source_id` (and its video's sidecar: `known_layers`), `frame_indices`, `geometry`; writes `mask`,
    `bg`, `captions`."""

    name = "synthetic_layers"
    default_resources = Resources(num_cpus=0.5, batch_size=2, retries=1)
    reads = frozenset({"source_id", "known_layers", "frame_indices", "geometry"})
    writes = frozenset({"mask", "bg", "captions"})
    hints = {"known_layers": NO_LAYERS}

    def setup(self) -> None:
        self._cache: tuple[str, SyntheticTruth | None] | None = None

    def _truth(self, uri: str) -> SyntheticTruth | None:
        # Clips of one video arrive together; regenerating the whole video per clip would dominate the stage.
        if self._cache is None or self._cache[0] != uri:
            sidecar = sidecar_of(uri)
            self._cache = (uri, read_sidecar(sidecar) if sidecar else None)
        return self._cache[1]

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            try:
                truth = self._truth(row["source_id"])
            except SidecarError as exc:
                out.append(self.failed(row, exc))
                continue
            if truth is None:
                out.append(self.failed(row, f"{row['source_id']}: no known layers for this video: {NO_LAYERS}"))
                continue
            if truth.num_objects > 1:
                out.append(self.failed(row, f"{row['source_id']}: its sidecar renders {truth.num_objects} objects, but "
                                            "compose makes one foreground per clip; use the `synthetic` source for "
                                            "K-object clips, or a perception config for this video"))
                continue
            idx, geo = row["frame_indices"], row["geometry"]
            if max(idx) >= len(truth.alpha):
                out.append(self.failed(row, StageError(
                    f"{row['source_id']}: frame {max(idx)} is past the {len(truth.alpha)} frames of its true layers")))
                continue
            mask = resize_crop(truth.alpha[idx], geo)
            bg = resize_crop(truth.bg[idx], geo)
            out.append({**row, "mask": mask, "bg": bg, "captions": truth.captions.as_dict()})
        return out


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

