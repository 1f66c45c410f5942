"""The layers sidecar: `<video>.layers.json` beside a video whose true layers are known because we rendered it.

It names the generator and its settings, not pixels: `{"generator": "synthetic", "config": {...}, "index": i}`.
The synthetic-videos source writes it with each video; the `synthetic_layers` stage reads it to regenerate the
video's matte, background and captions, which the model-free stages cannot get from the pixels.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from data_engine.synthetic import SyntheticConfig, SyntheticTruth, synthetic_truth
from data_engine.uri import is_uri

LAYERS_SIDECAR = ".layers.json"


class SidecarError(ValueError):
    """A sidecar that does not say how to regenerate its video's layers; the message names the file."""


def sidecar_of(video: str) -> Path | None:
    """The sidecar of a local video, or None (remote videos have none: they were not rendered here)."""
    if is_uri(video):
        return None
    path = Path(video + LAYERS_SIDECAR)
    return path if path.is_file() else None


def write_sidecar(video: Path, cfg: SyntheticConfig, index: int) -> None:
    Path(str(video) + LAYERS_SIDECAR).write_text(
        json.dumps({"generator": "synthetic", "config": asdict(cfg), "index": index}, indent=1))


def read_sidecar(path: Path) -> SyntheticTruth:
    """The true layers of the whole video (all frames, its own size): only what the video cannot give back (the
    matte, the background, the captions) is rendered, not the composites."""
    try:
        meta = json.loads(path.read_text())
        if meta.get("generator") != "synthetic":
            raise SidecarError(f"{path}: unknown generator {meta.get('generator')!r} (expected 'synthetic')")
        return synthetic_truth(SyntheticConfig(**meta["config"]), int(meta["index"]))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SidecarError(f"{path}: not a valid layers sidecar ({exc})") from exc
