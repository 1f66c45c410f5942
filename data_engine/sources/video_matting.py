"""Video-matting copy-paste: foreground + alpha videos (VideoMatte240K's layout) pasted over background videos,
the paper's stage-2/3 copy-paste samples made from "attainable foreground video matting data with transparency".

    <root>/fgr/<clip>.mp4 or <root>/fgr/<clip>/ (frames)      the foreground's colour
    <root>/pha/<clip>.mp4 or <root>/pha/<clip>/ (frames)      its alpha, same name, size and frame count
    <root>/captions.json                                      optional {clip: caption}; default "a person"
    <backgrounds>/<video>.mp4 or <backgrounds>/<video>/        any background videos (+ optional captions.json)

Sample n draws, from a generator seeded by (seed, n): a foreground clip and a background video, a start frame in
each (up to max_start), a scale (the foreground's height over the frame's, in [scale_min, scale_max]) and a place; the background
is scaled to cover height x width and cropped at its centre. The draws are recorded in the sample's scores, and
the sample's origin is copy_paste. A foreground without its alpha, an alpha of another size or length than its
foreground, a clip shorter than num_frames or an alpha that is empty where it is pasted is a `SourceError`
naming the file: the engine quarantines that sample and goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import Captions, LayeredClip, composite, over_grey, sample_key
from data_engine.sources.base import LayeredSource, SourceError, read_optional_json
from data_engine.video_io import FRAME_EXTS, Geometry, VideoDecodeError, cover_geometry, decode_video, \
    read_frame_folder, resize_crop

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_FG_CAPTION = "a person"  # VideoMatte240K's foregrounds are people


@dataclass(frozen=True)
class VideoMattingOptions:
    root: str = ""  # holds fgr/ and pha/
    backgrounds: str = ""  # a folder of background videos or frame folders
    num: int = 8
    seed: int = 0
    num_frames: int = 16
    fps: float = 8.0
    height: int = 480
    width: int = 720
    scale_min: float = 0.5
    scale_max: float = 1.0
    max_start: int = 32  # the latest frame a window may start at (clips are decoded this far, not to the end)


def _clips(folder: Path) -> dict[str, Path]:
    """Videos and frame folders of `folder` by name (a frame folder holds at least one frame file)."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out[p.stem] = p
        elif p.is_dir() and any(c.suffix.lower() in FRAME_EXTS for c in p.iterdir()):
            out[p.name] = p
    return out


def _read(path: Path, grey: bool, frames: int) -> np.ndarray:
    try:
        video = read_frame_folder(path, grey=grey) if path.is_dir() else decode_video(path, grey=grey, max_frames=frames)
    except VideoDecodeError as exc:
        raise SourceError(str(exc)) from None
    return video[:frames]


def _captions(folder: Path) -> dict[str, str]:
    data = read_optional_json(folder / "captions.json")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class VideoMattingSource(LayeredSource):
    name = "video_matting"
    Options = VideoMattingOptions
    required = ("root", "backgrounds")

    def __init__(self, opts: VideoMattingOptions) -> None:
        self.opts = opts
        root, backgrounds = Path(opts.root), Path(opts.backgrounds)
        self.fgr, self.pha = _clips(root / "fgr"), _clips(root / "pha")
        if not self.fgr:
            raise SourceError(f"{root / 'fgr'}: no foreground videos or frame folders (VideoMatte240K layout: "
                              "<root>/fgr/<clip> and <root>/pha/<clip>)")
        self.backgrounds = _clips(backgrounds)
        if not self.backgrounds:
            raise SourceError(f"{backgrounds}: no background videos or frame folders")
        if not 0 < opts.scale_min <= opts.scale_max:
            raise SourceError(f"need 0 < scale_min <= scale_max, got {opts.scale_min} and {opts.scale_max}")
        self.fg_names, self.bg_names = sorted(self.fgr), sorted(self.backgrounds)
        self.fg_captions, self.bg_captions = _captions(root), _captions(backgrounds)

    @classmethod
    def from_options(cls, opts: VideoMattingOptions, work_dir: Path) -> "VideoMattingSource":
        return cls(opts)

    def list_inputs(self) -> list[str]:
        return [str(n) for n in range(self.opts.num)]

    def input_id(self, item: str) -> str:
        return f"video_matting:{self.opts.root}:{self.opts.backgrounds}:seed={self.opts.seed}:{item}"

    def load(self, item: str) -> list[LayeredClip]:
        o, n = self.opts, int(item)
        rng = np.random.default_rng([o.seed, n])
        fg_name = self.fg_names[int(rng.integers(len(self.fg_names)))]
        bg_name = self.bg_names[int(rng.integers(len(self.bg_names)))]
        if fg_name not in self.pha:
            raise SourceError(f"{self.fgr[fg_name]}: no alpha beside it (expected pha/{fg_name})")
        rgb = self._head(self.fgr[fg_name], False)
        alpha = self._head(self.pha[fg_name], True)
        if alpha.shape != rgb.shape[:3]:
            raise SourceError(f"{self.pha[fg_name]}: alpha {list(alpha.shape)} is another size or length than its "
                              f"foreground {list(rgb.shape[:3])}")
        bg_video = self._head(self.backgrounds[bg_name], False)
        fg_start = int(rng.integers(len(rgb) - o.num_frames + 1))
        bg_start = int(rng.integers(len(bg_video) - o.num_frames + 1))
        scale = float(rng.uniform(o.scale_min, o.scale_max))
        rgb, alpha = rgb[fg_start:fg_start + o.num_frames], alpha[fg_start:fg_start + o.num_frames]
        bg_video = bg_video[bg_start:bg_start + o.num_frames]
        bg = resize_crop(bg_video, cover_geometry(*bg_video.shape[1:3], o.height, o.width))
        h = max(1, min(o.height, round(o.height * scale)))
        w = max(1, min(o.width, round(rgb.shape[2] * h / rgb.shape[1])))
        geo = Geometry(h, w, 0, 0, h, w)
        rgb_s, alpha_s = resize_crop(rgb, geo), resize_crop(alpha, geo)
        top, left = int(rng.integers(o.height - h + 1)), int(rng.integers(o.width - w + 1))
        canvas = np.zeros((o.num_frames, o.height, o.width, 3), np.uint8)
        matte = np.zeros((o.num_frames, o.height, o.width), np.uint8)
        canvas[:, top:top + h, left:left + w] = rgb_s
        matte[:, top:top + h, left:left + w] = alpha_s
        if not matte.any():
            raise SourceError(f"{self.pha[fg_name]}: empty alpha in frames {fg_start}..{fg_start + o.num_frames - 1}")
        fg_caption = self.fg_captions.get(fg_name, DEFAULT_FG_CAPTION)
        bg_caption = self.bg_captions.get(bg_name, "")
        blend_caption = f"{fg_caption.rstrip('.')}, in front of this scene: {bg_caption}" if bg_caption else fg_caption
        return [LayeredClip(
            key=sample_key(f"videomatting_s{o.seed}", n),
            fg=over_grey(canvas, matte), alpha=matte, bg=bg, blend=composite(canvas, matte, bg),
            captions=Captions(fg=fg_caption, bg=bg_caption, blend=blend_caption),
            fps=o.fps, kind="video", origin="copy_paste",
            source_id=f"fg={self.fgr[fg_name]};bg={self.backgrounds[bg_name]}", frame_range=(0, o.num_frames),
            scores={"fg_source": fg_name, "bg_source": bg_name, "fg_start": fg_start, "bg_start": bg_start,
                    "scale": round(scale, 4), "top": top, "left": left},
        )]

    def _head(self, path: Path, grey: bool) -> np.ndarray:
        """The clip's first max_start + num_frames frames (all it has when shorter, at least num_frames)."""
        video = _read(path, grey, self.opts.max_start + self.opts.num_frames)
        if len(video) < self.opts.num_frames:
            raise SourceError(f"{path}: {len(video)} frames, fewer than num_frames {self.opts.num_frames}")
        return video
