"""Sources: where the engine's rows come from. `SOURCES` maps the `type:` of a config's `sources:` entry to
`module:Class` of a `Source` (data_engine/sources/base.py), whose `Options` type that entry's other keys; classes
are imported only when a config uses them.

Video sources point rows at videos for the video stages; layered sources load finished clips, no model needed.
A bad input raises `SourceError` naming the file, so the engine can quarantine it and go on.
"""
from __future__ import annotations

from data_engine.registry import Registry

SOURCES = Registry("source type", {
    # video sources
    "videos": "data_engine.sources.videos:VideoFileSource",
    "synthetic_videos": "data_engine.sources.synthetic_videos:SyntheticVideoSource",
    "frames": "data_engine.sources.frames:FrameFolderSource",
    # layered sources
    "synthetic_world": "data_engine.sources.synthetic_world:SyntheticWorldSource",
    "official": "data_engine.sources.official:OfficialSampleSource",
    "layered_images": "data_engine.sources.layered_images:LayeredImageSource",
    "mulan": "data_engine.sources.mulan:MulanSource",
    "image_matting": "data_engine.sources.image_matting:ImageMattingSource",
    "copy_paste": "data_engine.sources.copy_paste:CopyPasteSource",
    "video_matting": "data_engine.sources.video_matting:VideoMattingSource",
})
source_class = SOURCES.load
