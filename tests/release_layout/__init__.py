"""Weight trees laid out exactly as each model's release ships them, written by our own code with tiny configs.

One module per registry area (`perception`, `evaluation`, `model`), each with `build(root)` that writes every
entry of that area under `root` (a LAYERFLOW_WEIGHTS folder): the release's file names, key names, folder
structure and serialisation, with the smallest configuration the format allows. Loaders read the architecture
from the files, so a tiny file exercises the same code as the real one.
"""
from __future__ import annotations

import importlib
from pathlib import Path

AREAS = ("perception", "evaluation", "model")


def build_all(root: Path) -> Path:
    for area in AREAS:
        importlib.import_module(f"release_layout.{area}").build(root)
    return root
