"""The built-in synthetic videos as raw input: each one's blend written as an mp4 into the work dir, with a layers
sidecar, so the real video stages run on it and the model-free `synthetic_layers` stage can recover its layers."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from data_engine.layers_sidecar import write_sidecar
from data_engine.sources.base import Source
from data_engine.synthetic import SyntheticConfig, synthetic_clip, world_name
from data_engine.video_io import encode_video


def synthetic_video_name(cfg: SyntheticConfig, index: int) -> str:
    return f"{world_name(cfg)}_{index:05d}.mp4"


def write_synthetic_video(cfg: SyntheticConfig, index: int, folder: str | Path) -> Path:
    """The blend of synthetic clip `index` as an mp4, plus a sidecar naming how to regenerate its true layers.

    Idempotent and crash-safe: the sidecar is written first and the mp4 appears by rename, so an existing mp4
    always has its sidecar.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / synthetic_video_name(cfg, index)
    if path.exists():
        return path
    clip = synthetic_clip(cfg, index)
    write_sidecar(path, cfg, index)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_video(clip.blend, clip.fps))
    os.replace(tmp, path)
    return path


class SyntheticVideoSource(Source):
    name = "synthetic_videos"
    Options = SyntheticConfig
    # `known_layers`: every video has its sidecar (see data_engine/stages/base.py)
    writes = frozenset({"key", "source_id", "source_name", "known_layers"})

    def __init__(self, cfg: SyntheticConfig, folder: Path) -> None:
        self.cfg, self.folder = cfg, folder

    @classmethod
    def from_options(cls, opts: SyntheticConfig, work_dir: Path) -> SyntheticVideoSource:
        return cls(opts, work_dir / "synthetic_videos")

    def list_inputs(self) -> list[str]:
        return [str(i) for i in range(self.cfg.num_clips)]

    def input_id(self, item: str) -> str:
        # Keyed by generator settings, not by where the work dir is: the same video gets the same keys anywhere.
        return str((self.folder / synthetic_video_name(self.cfg, int(item))).resolve())

    def rows(self, item: str) -> list[dict[str, Any]]:
        path = write_synthetic_video(self.cfg, int(item), self.folder)
        return [{"key": self.input_id(item), "source_id": str(path.resolve()), "source_name": path.stem}]
