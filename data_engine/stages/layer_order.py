"""Layer order stage: the depth order of a grouped clip's objects, and the K nearest of them as its layers.

Reads `objects` (a grouped row, data_engine/stages/grouped.py; other rows pass unchanged); writes `objects`
front first and cut to `max_foregrounds`, `mask` (their union: what inpaint removes), `depth_order` (their
object ids, front first) and `scores["layer_order"]` = {"order": all ids front first, "kept": K,
"occlusion": [[front, back, net evidence px], ...] for the pairs occlusion ordered; the others fell back to the
ground-plane cue}. The order comes from the visible masks (data_engine/stages/depth_order.py). The engine
inserts this stage before inpaint when `layers.group_objects` is on; its options are the `layers:` section.

A pixel two masks claim belongs to the nearer object: each farther object's mask and soft alpha are cleared
there, so a layer never shows the pixels of an object in front of it (the blend, the original frames, is the
same whichever layer holds them).
"""
from __future__ import annotations

import numpy as np

from data_engine.layers_policy import LayersPolicy
from data_engine.stages.base import Resources, Row, Stage
from data_engine.stages.depth_order import depth_order
from data_engine.stages.grouped import OBJECTS, is_grouped, with_objects


def exclusive(objects: list[dict]) -> list[dict]:
    """`objects` (front first) with every pixel left only to the nearest object whose mask has it."""
    out, nearer = [], np.zeros(objects[0]["mask"].shape, bool)
    for o in objects:
        own = o["mask"] >= 128
        cleared = {"mask": np.where(nearer, 0, o["mask"]).astype(np.uint8)}
        if o.get("soft_alpha") is not None:
            cleared["soft_alpha"] = np.where(nearer, 0, o["soft_alpha"]).astype(np.uint8)
        out.append({**o, **cleared})
        nearer |= own
    return out


class LayerOrderStage(Stage):
    name = "layer_order"
    default_resources = Resources(num_cpus=0.5, batch_size=2, retries=1)
    Options = LayersPolicy
    reads = frozenset({OBJECTS})
    writes = frozenset({OBJECTS, "mask", "depth_order", "scores"})
    hints = {OBJECTS: "layers.group_objects groups the objects `segment` finds; add the perception stages "
                      "(tag, segment) or turn it off"}

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            if not is_grouped(row):
                out.append(row)
                continue
            by_id = {o["obj"]: o for o in row[OBJECTS]}
            found = depth_order({obj: o["mask"] for obj, o in by_id.items()}, self.opts.min_occlusion)
            kept = exclusive([by_id[obj] for obj in found.order[: self.opts.max_foregrounds]])
            info = {"order": list(found.order), "kept": len(kept), "occlusion": [list(p) for p in found.occlusion]}
            out.append(with_objects(row, kept, depth_order=tuple(o["obj"] for o in kept),
                                    scores={**row.get("scores", {}), "layer_order": info}))
        return out
