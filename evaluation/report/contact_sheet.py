"""A contact sheet: the first frame of each layer, one row per sample; the foreground over a checkerboard."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_engine.schema import alpha_name, fg_name, layer_names
from evaluation.layered_io import LayerSet
from model.export import over_checkerboard

CELL_HEIGHT = 120
LABEL_HEIGHT = 14


def layer_tiles(sample: LayerSet) -> dict[str, np.ndarray]:
    """First frame of each present layer as RGB; each fg_k shown with its matte over a checkerboard when alpha_k
    exists."""
    first = {name: arr[0] for name, arr in sample.layers.items()}
    for k in range(sample.num_foregrounds):
        fg, alpha = fg_name(k), alpha_name(k)
        if alpha not in first:
            continue
        a = first[alpha]
        if fg in first:
            first[fg] = over_checkerboard(first[fg], a)
        first[alpha] = np.repeat(a[..., None], 3, axis=-1)
    return first


def _fit(img: np.ndarray, height: int) -> Image.Image:
    im = Image.fromarray(img)
    return im.resize((max(1, round(im.width * height / im.height)), height), Image.BILINEAR)


def contact_sheet(samples: Sequence[LayerSet], path: str | Path, *, max_rows: int = 8) -> Path:
    rows = list(samples)[:max_rows]
    if not rows:
        raise ValueError("contact sheet needs at least one sample")
    tiles = [layer_tiles(s) for s in rows]
    widths = {name: max(_fit(t[name], CELL_HEIGHT).width for t in tiles if name in t)
              for name in layer_names(max(s.num_foregrounds for s in rows)) if any(name in t for t in tiles)}
    label_w = 140
    sheet = Image.new("RGB", (label_w + sum(widths.values()), LABEL_HEIGHT + len(rows) * CELL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    x = label_w
    for name, w in widths.items():
        draw.text((x + 2, 1), name, fill="black")
        x += w
    for r, (sample, t) in enumerate(zip(rows, tiles)):
        y = LABEL_HEIGHT + r * CELL_HEIGHT
        draw.text((2, y + 2), sample.key[:22], fill="black")
        x = label_w
        for name, w in widths.items():
            if name in t:
                sheet.paste(_fit(t[name], CELL_HEIGHT), (x, y))
            x += w
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
