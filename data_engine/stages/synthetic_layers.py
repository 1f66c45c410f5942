"""The model-free layer provider for the built-in synthetic videos.

`synthetic_layers` gives a clip of a built-in synthetic video its true matte and background: the video was
rendered by `data_engine.synthetic`, so its layers are regenerated from its sidecar and cut with the
same frame indices and geometry `split` used on the decoded video. It lets the default, model-free config run
raw mp4s through the real video path (probe, split, compose, encode); for any other video it has no answer, and
the perception chain (`segment`, `inpaint`, `caption`) provides `mask`, `bg` and `captions` instead.
"""
from __future__ import annotations

from data_engine.layers_sidecar import SidecarError, read_sidecar, sidecar_of
from data_engine.stages.base import Resources, Row, Stage, StageError
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
                                            "compose makes one foreground per clip; use the `synthetic_world` source "
                                            "for K-object clips, or a perception config for this video"))
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
