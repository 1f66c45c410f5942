"""Engine stages, one module per step. `STAGES` maps the name used in engine configs to `module:Class`; classes
are imported only when a run uses them, so listing stages never loads a perception model (data_engine/registry.py).
"""
from __future__ import annotations

from data_engine.registry import Registry

STAGES = Registry("stage", {
    # the video path, model-free
    "probe": "data_engine.stages.probe:ProbeStage",
    "split": "data_engine.stages.split:SplitStage",
    "synthetic_layers": "data_engine.stages.synthetic_layers:SyntheticLayersStage",
    "compose": "data_engine.stages.compose:ComposeStage",
    "encode": "data_engine.stages.encode:EncodeStage",
    # the perception chain
    "tag": "data_engine.stages.tag:TagStage",
    "segment": "data_engine.stages.segment_track:SegmentTrackStage",
    "dedup": "data_engine.stages.dedup:DedupStage",
    "fg_check": "data_engine.stages.foreground_check:ForegroundCheckStage",
    "layer_order": "data_engine.stages.layer_order:LayerOrderStage",
    "inpaint": "data_engine.stages.inpaint:InpaintStage",
    "image_inpaint": "data_engine.stages.image_inpaint:ImageInpaintStage",
    "caption": "data_engine.stages.caption:CaptionStage",
})
stage_class = STAGES.load
