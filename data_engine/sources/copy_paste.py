"""Copy-paste clips: the foreground and alpha of one clip over the background of another (the paper's stage-2/3
videos), or, with `num_objects` K > 1, the foregrounds of K clips pasted one over the other, each its own layer.
Draws are deterministic from a seed and never paste a clip over itself or twice into one sample.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import MID_GREY, Captions, LayeredClip, alpha_name, fg_name, sample_key
from data_engine.shards import read_clips
from data_engine.sources.base import LayeredSource, SourceError


def paste(fg_clip: LayeredClip, bg_clip: LayeredClip, key: str) -> LayeredClip:
    """The foreground of `fg_clip` over the background of `bg_clip`."""
    return paste_objects([fg_clip], bg_clip, key)


def paste_objects(fg_clips: Sequence[LayeredClip], bg_clip: LayeredClip, key: str) -> LayeredClip:
    """The front foregrounds (fg, alpha) of `fg_clips`, pasted in that order (back to front) over the background of
    `bg_clip`: one layer each, stored front first. Each paste is blend = rgb*a + below*(1-a), computed from the
    stored fg (rgb*a + grey*(1-a)) without dividing by alpha; the blend is rounded once, at the end."""
    for clip in fg_clips:
        if clip.alpha.shape != bg_clip.alpha.shape:
            raise SourceError(
                f"copy-paste {clip.key} over {bg_clip.key}: sizes differ "
                f"({clip.alpha.shape} vs {bg_clip.alpha.shape}); split both to the same frames and resolution"
            )
    blend = bg_clip.bg.astype(np.float32)
    for clip in fg_clips:
        a = clip.alpha.astype(np.float32)[..., None] / 255.0
        blend = clip.fg.astype(np.float32) + (blend - MID_GREY) * (1.0 - a)
    front, *behind = fg_clips[::-1]
    more_layers = {}
    for k, clip in enumerate(behind, start=1):
        more_layers[fg_name(k)] = clip.fg.copy()
        more_layers[alpha_name(k)] = clip.alpha.copy()
    objects = "; ".join(clip.captions.fg.rstrip(".") for clip in (front, *behind))
    captions = Captions(
        fg=front.captions.fg,
        bg=bg_clip.captions.bg,
        blend=f"{objects}, in front of this scene: {bg_clip.captions.bg}".strip(),
        more_fg=tuple(clip.captions.fg for clip in behind),
    )
    fg_keys = ",".join(clip.key for clip in (front, *behind))
    return LayeredClip(
        key=key,
        fg=front.fg.copy(),
        alpha=front.alpha.copy(),
        bg=bg_clip.bg.copy(),
        blend=np.clip(np.rint(blend), 0, 255).astype(np.uint8),
        captions=captions,
        fps=front.fps,
        kind=front.kind,
        origin="copy_paste",
        source_id=f"fg={fg_keys};bg={bg_clip.key}",
        frame_range=front.frame_range,
        scores={"fg_source": fg_keys, "bg_source": bg_clip.key},
        more_layers=more_layers,
        depth_order=tuple(range(len(fg_clips))),
    )


def _draw(rng: np.random.Generator, count: int, num_objects: int) -> tuple[tuple[int, ...], int]:
    """One sample's foreground clips (paste order) and background clip, all different."""
    i = int(rng.integers(count))
    j = int(rng.integers(count - 1))
    j += j >= i
    if num_objects == 1:
        return (i,), j
    # Drawn after i and j, so that one object draws what it drew before more objects were possible.
    rest = [c for c in range(count) if c not in (i, j)]
    return (i, *(int(c) for c in rng.choice(rest, size=num_objects - 1, replace=False))), j


@dataclass(frozen=True)
class CopyPasteOptions:
    shards: str = ""  # a shard folder to draw clips from
    num: int = 8
    seed: int = 0
    num_objects: int = 1  # clips whose foregrounds are pasted into one sample, each its own layer


class CopyPasteSource(LayeredSource):
    name = "copy_paste"
    Options = CopyPasteOptions
    required = ("shards",)

    def __init__(self, clips: Sequence[LayeredClip], num: int, seed: int = 0, shards: str = "",
                 num_objects: int = 1) -> None:
        """`shards`: where the clips were read from; it keeps input ids of different shard folders apart."""
        if num_objects < 1:
            raise SourceError(f"copy-paste num_objects must be >= 1, got {num_objects}")
        if len(clips) < num_objects + 1:
            raise SourceError(f"copy-paste of {num_objects} object(s) needs at least {num_objects + 1} clips, "
                              f"got {len(clips)}")
        self.clips = list(clips)
        rng = np.random.default_rng(seed)
        # Per sample: the foreground clips in paste order (back to front), then the background clip.
        self.draws = [_draw(rng, len(self.clips), num_objects) for _ in range(num)]
        self.seed = seed
        self.shards = shards
        # K-object samples get keys of their own: the one-object samples of the same seed keep theirs.
        self.key_source = f"copypaste_s{seed}" + (f"_o{num_objects}" if num_objects > 1 else "")

    @classmethod
    def from_options(cls, opts: CopyPasteOptions, work_dir: Path) -> CopyPasteSource:
        return cls(list(read_clips(opts.shards)), num=opts.num, seed=opts.seed, shards=opts.shards,
                   num_objects=opts.num_objects)

    def list_inputs(self) -> list[str]:
        # `n:i:j` for one object, as always (resume finds earlier records); `n:i,i2,..:j` for more.
        return [f"{n}:{','.join(map(str, fgs))}:{j}" for n, (fgs, j) in enumerate(self.draws)]

    def input_id(self, item: str) -> str:
        return f"copy_paste:{self.shards}:seed={self.seed}:{item}"

    def load(self, item: str) -> list[LayeredClip]:
        n, fgs, j = item.split(":")
        fg_clips = [self.clips[int(i)] for i in fgs.split(",")]
        return [paste_objects(fg_clips, self.clips[int(j)], sample_key(self.key_source, int(n)))]
