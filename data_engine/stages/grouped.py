"""A grouped row: one clip with all its objects (`layers.group_objects`, data_engine/layers_policy.py).

`segment` writes it instead of one row per object: `objects` is a list with one dict per object, holding the
fields a fanned-out row has for it (`obj`, `tag`, `mask`, `boxes`, `soft_alpha` when segment made one, and its
`scores` from the stages that judged it), front first once `layer_order` has run; the row's own `mask` is the
union of the objects' masks, so the stages that read one mask (inpaint: the hole to fill) work on the group
unchanged. The stages that keep or drop objects rebuild the row with `with_objects`.
"""
from __future__ import annotations

import numpy as np

from data_engine.stages.base import Row

OBJECTS = "objects"


def is_grouped(row: Row) -> bool:
    return row.get(OBJECTS) is not None


def union_mask(objects: list[dict]) -> np.ndarray:
    """uint8 [T, H, W]: 255 where any object's mask is."""
    return np.maximum.reduce([o["mask"] for o in objects])


def with_objects(row: Row, objects: list[dict], **changes) -> Row:
    """The row holding just `objects` (at least one), its `mask` their union."""
    return {**row, OBJECTS: objects, "mask": union_mask(objects), **changes}
