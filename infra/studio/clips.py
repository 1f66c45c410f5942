"""Layered clips from the folders our commands write: a sample folder of `generate` / `compose` (or any folder
`evaluation.layered_io` reads), with its clip.json when there is one."""
from __future__ import annotations

import json
from pathlib import Path

from data_engine.schema import LayeredClip, layer_names
from evaluation.errors import EvaluationError
from evaluation.layered_io import read_sample


class StudioInputError(ValueError):
    """A folder the studio cannot read; the message says what is missing and how to fix it."""


def read_sample_clip(folder: str | Path) -> LayeredClip:
    """Every layer of one sample folder (fg, alpha, bg, blend and fg_k, alpha_k) as a LayeredClip."""
    folder = Path(folder)
    try:
        sample = read_sample(folder)
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc
    names = layer_names(sample.num_foregrounds)
    missing = [name for name in names if name not in sample.layers]
    if missing:
        raise StudioInputError(f"{folder}: lacks layer(s) {', '.join(missing)}; a layered sample folder holds "
                               f"{', '.join(f'{n}.mp4' for n in names)} (what `layerflow generate` writes)")
    meta_path = folder / "clip.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta = {**meta, "key": meta.get("key", sample.key), "captions": sample.captions.as_dict(), "fps": sample.fps,
            "num_foregrounds": sample.num_foregrounds}
    try:
        return LayeredClip.from_layers(meta, {name: sample.layers[name] for name in names})
    except ValueError as exc:
        raise StudioInputError(f"{folder}: {exc}") from exc
