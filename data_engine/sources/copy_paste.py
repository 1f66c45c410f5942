"""Copy-paste clips: the foreground and alpha of one clip over the background of another (the paper's stage-2/3
videos). Pairs are drawn deterministically from a seed and never pair a clip with itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import MID_GREY, Captions, LayeredClip, sample_key
from data_engine.shards import read_clips
from data_engine.sources.base import LayeredSource, SourceError


def paste(fg_clip: LayeredClip, bg_clip: LayeredClip, key: str) -> LayeredClip:
    """blend = rgb*a + bg*(1-a), computed from the stored fg (rgb*a + grey*(1-a)) without dividing by alpha."""
    if fg_clip.alpha.shape != bg_clip.alpha.shape:
        raise SourceError(
            f"copy-paste {fg_clip.key} over {bg_clip.key}: sizes differ "
            f"({fg_clip.alpha.shape} vs {bg_clip.alpha.shape}); split both to the same frames and resolution"
        )
    a = fg_clip.alpha.astype(np.float32)[..., None] / 255.0
    blend = fg_clip.fg.astype(np.float32) + (bg_clip.bg.astype(np.float32) - MID_GREY) * (1.0 - a)
    captions = Captions(
        fg=fg_clip.captions.fg,
        bg=bg_clip.captions.bg,
        blend=f"{fg_clip.captions.fg.rstrip('.')}, in front of this scene: {bg_clip.captions.bg}".strip(),
    )
    return LayeredClip(
        key=key,
        fg=fg_clip.fg.copy(),
        alpha=fg_clip.alpha.copy(),
        bg=bg_clip.bg.copy(),
        blend=np.clip(np.rint(blend), 0, 255).astype(np.uint8),
        captions=captions,
        fps=fg_clip.fps,
        kind=fg_clip.kind,
        origin="copy_paste",
        source_id=f"fg={fg_clip.key};bg={bg_clip.key}",
        frame_range=fg_clip.frame_range,
        scores={"fg_source": fg_clip.key, "bg_source": bg_clip.key},
    )


@dataclass(frozen=True)
class CopyPasteOptions:
    shards: str = ""  # a shard folder to draw clips from
    num: int = 8
    seed: int = 0


class CopyPasteSource(LayeredSource):
    name = "copy_paste"
    Options = CopyPasteOptions
    required = ("shards",)

    def __init__(self, clips: Sequence[LayeredClip], num: int, seed: int = 0, shards: str = "") -> None:
        """`shards`: where the clips were read from; it keeps input ids of different shard folders apart."""
        if len(clips) < 2:
            raise SourceError(f"copy-paste needs at least two clips, got {len(clips)}")
        self.clips = list(clips)
        rng = np.random.default_rng(seed)
        self.pairs: list[tuple[int, int]] = []
        for _ in range(num):
            i = int(rng.integers(len(self.clips)))
            j = int(rng.integers(len(self.clips) - 1))
            self.pairs.append((i, j + (j >= i)))
        self.seed = seed
        self.shards = shards

    @classmethod
    def from_options(cls, opts: CopyPasteOptions, work_dir: Path) -> "CopyPasteSource":
        return cls(list(read_clips(opts.shards)), num=opts.num, seed=opts.seed, shards=opts.shards)

    def list_inputs(self) -> list[str]:
        return [f"{n}:{i}:{j}" for n, (i, j) in enumerate(self.pairs)]

    def input_id(self, item: str) -> str:
        return f"copy_paste:{self.shards}:seed={self.seed}:{item}"

    def load(self, item: str) -> list[LayeredClip]:
        n, i, j = (int(x) for x in item.split(":"))
        return [paste(self.clips[i], self.clips[j], sample_key(f"copypaste_s{self.seed}", n))]
