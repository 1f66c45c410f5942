"""The clip policy: the engine config's `clip:` section, which the video stages (probe, split) take as their options.

Its own module because both sides need it: the engine config types the section, the stages apply it, and the
config must not import the stages (see data_engine/stages/split.py for how it is applied).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipPolicy:
    """Defaults are the paper's training clips: 16 frames at 8 fps, 480 x 720, covered and centre-cropped."""

    num_frames: int = 16
    fps: float = 8.0
    height: int = 480
    width: int = 720
    resize: str = "cover"
    stride: int | None = None
    max_clips: int | None = None
    max_pixels: int = 4096 * 2304

    def __post_init__(self) -> None:
        if self.resize not in ("cover", "stretch"):
            raise ValueError(f"clip.resize must be 'cover' or 'stretch', got {self.resize!r}")
        if self.num_frames < 1 or self.fps <= 0 or self.height < 2 or self.width < 2:
            raise ValueError(f"clip policy needs num_frames >= 1, fps > 0 and a size >= 2x2, got {self}")
