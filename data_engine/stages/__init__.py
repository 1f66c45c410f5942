"""Engine stages, one module per step. `STAGES` maps the name used in engine configs to `module:Class`; classes
are imported only when a run uses them, so listing stages never loads a perception model.
"""
from __future__ import annotations

import importlib

STAGES: dict[str, str] = {
    # the video path, model-free
    "probe": "data_engine.stages.probe:ProbeStage",
    "split": "data_engine.stages.split:SplitStage",
    "synthetic_layers": "data_engine.stages.compose:SyntheticLayersStage",
    "compose": "data_engine.stages.compose:ComposeStage",
    "encode": "data_engine.stages.encode:EncodeStage",
    # the perception chain
    "tag": "data_engine.stages.tagging:TagStage",
    "segment": "data_engine.stages.segment_track:SegmentTrackStage",
    "dedup": "data_engine.stages.dedup:DedupStage",
    "fg_check": "data_engine.stages.foreground_check:ForegroundCheckStage",
    "layer_order": "data_engine.stages.layer_order:LayerOrderStage",
    "inpaint": "data_engine.stages.inpaint:InpaintStage",
    "image_inpaint": "data_engine.stages.image_inpaint:ImageInpaintStage",
    "caption": "data_engine.stages.caption:CaptionStage",
}


class UnknownStageError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def stage_class(name: str) -> type:
    """The class registered under `name`, or the class at `package.module:Class` (imports its module now).

    An import path plugs in a stage of your own without touching this registry; it must be importable on every
    Ray worker (install it, or put it on PYTHONPATH before the run starts Ray).
    """
    target = STAGES.get(name) or (name if ":" in name else None)
    if target is None:
        raise UnknownStageError(
            f"unknown stage {name!r}; known stages: {', '.join(STAGES)} (or a class as 'package.module:Class')"
        )
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, TypeError) as exc:
        raise UnknownStageError(f"stage {name!r} ({target}) cannot be imported: {exc}") from exc
