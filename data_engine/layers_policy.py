"""The layers policy: the engine config's `layers:` section, how many foregrounds a perception sample holds.

Off (the default), `segment` fans a clip out into one sample per object, as the paper's data has it. With
`group_objects: true` a clip's objects stay one row: `dedup` and `fg_check` drop objects from it, `layer_order`
(which the engine then inserts before `inpaint`) orders the survivors front first from their masks
(data_engine/stages/depth_order.py) and keeps the `max_foregrounds` nearest, `inpaint` removes them all at once,
and `compose` writes one K-foreground sample `{clip key}-00`. Objects beyond `max_foregrounds` are the farthest
ones, so they stay in the background behind every layer, as the background of a layered clip should show them.

Each setting reaches the stages whose options have a field of the same name (segment: group_objects; layer_order:
all), and is set here only, so the stages can never disagree. Its own module for the reason clip_policy.py gives.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayersPolicy:
    group_objects: bool = False
    max_foregrounds: int = 3
    # The share of the smaller object's mean visible area by which occlusion evidence must favour one of two
    # objects to order them; below it the ground-plane cue decides (data_engine/stages/depth_order.py).
    min_occlusion: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.group_objects, bool):
            raise ValueError(f"layers.group_objects must be true or false, got {self.group_objects!r}")
        if isinstance(self.max_foregrounds, bool) or not isinstance(self.max_foregrounds, int) \
                or self.max_foregrounds < 1:
            raise ValueError(f"layers.max_foregrounds must be a whole number >= 1, got {self.max_foregrounds!r}")
        if isinstance(self.min_occlusion, bool) or not isinstance(self.min_occlusion, (int, float)) \
                or not 0 <= self.min_occlusion < 1:
            raise ValueError(f"layers.min_occlusion must be a number in [0, 1), got {self.min_occlusion!r}")
