"""Video-matting copy-paste: foreground + alpha videos (VideoMatte240K's layout) pasted over background videos,
the paper's stage-2/3 copy-paste samples made from "attainable foreground video matting data with transparency".

    <root>/fgr/<clip>.mp4 or <root>/fgr/<clip>/ (frames)      the foreground's colour, straight (VideoMatte240K's
                                                              fgr; `foreground: premultiplied` for colour times alpha)
    <root>/pha/<clip>.mp4 or <root>/pha/<clip>/ (frames)      its alpha, same name, size and frame count; or none,
                                                              when fgr/<clip> carries alpha (ProRes 4444, VP9 alpha
                                                              WebM, yuva video, RGBA PNG frames)
    <root>/captions.json                                      optional {clip: caption}; default "a person"
    <backgrounds>/<video>.mp4 or <backgrounds>/<video>/        any background videos (+ optional captions.json)

Videos are read by data_engine/pixels.py: a stream's own range and matrix are honoured; one that states neither is
read as `untagged_range` (default limited, what `ffmpeg -pix_fmt yuv420p` writes from grey PNGs) and
`untagged_matrix` (default bt601) say.

Sample n draws, from a generator seeded by (seed, n): a foreground clip and a background video, a start frame in
each (up to max_start), a scale (the foreground's height over the frame's, in [scale_min, scale_max]) and a
place; the background is scaled to cover height x width and cropped at its centre. The draws are recorded in the
sample's scores, and the sample's origin is copy_paste. A foreground without its alpha, an alpha of another size
or length than its foreground, a clip shorter than num_frames or an alpha that is empty where it is pasted is a
`SourceError` naming the file: the engine quarantines that sample and goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.pixels import Untagged
from data_engine.schema import Captions, LayeredClip, sample_key
from data_engine.sources.base import LayeredSource, SourceError, read_optional_json, require_folder
from data_engine.sources.foreground import check_foreground, foreground_layers
from data_engine.video_io import (
    FRAME_EXTS,
    Geometry,
    NoAlphaError,
    VideoDecodeError,
    cover_geometry,
    decode_video,
    decode_video_rgba,
    read_frame_folder,
    read_frame_folder_rgba,
    resize_crop,
)

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
    foreground: str = "straight"  # what fgr/ colour holds: straight or premultiplied
    untagged_range: str = "limited"  # a video that states no colour range holds this one (or full)
    untagged_matrix: str = "bt601"  # a video that states no YUV matrix uses this one (or bt709)

    def __post_init__(self) -> None:
        check_foreground(self.foreground)
        Untagged(self.untagged_range, self.untagged_matrix)


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


def _read(path: Path, layer: str, frames: int, untagged: Untagged) -> np.ndarray:
    """The first `frames` frames of a video or frame folder: layer "rgb", "alpha" (a matte read as grey) or "rgba"."""
    try:
        if path.is_dir():
            video = read_frame_folder_rgba(path) if layer == "rgba" else read_frame_folder(path, grey=layer == "alpha")
        elif layer == "rgba":
            video = decode_video_rgba(path, max_frames=frames, untagged=untagged)
        else:
            video = decode_video(path, grey=layer == "alpha", max_frames=frames, untagged=untagged)
    except NoAlphaError:
        raise
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
        self.untagged = Untagged(opts.untagged_range, opts.untagged_matrix)
        root, backgrounds = Path(opts.root), Path(opts.backgrounds)
        require_folder(root, "video-matting set")
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
    def from_options(cls, opts: VideoMattingOptions, work_dir: Path) -> VideoMattingSource:
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
        rgb, alpha, alpha_path = self._foreground(fg_name)
        bg_video = self._head(self.backgrounds[bg_name], "rgb")
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
            raise SourceError(f"{alpha_path}: empty alpha in frames {fg_start}..{fg_start + o.num_frames - 1}")
        fg, blend = foreground_layers(canvas, matte, bg, o.foreground)
        fg_caption = self.fg_captions.get(fg_name, DEFAULT_FG_CAPTION)
        bg_caption = self.bg_captions.get(bg_name, "")
        blend_caption = f"{fg_caption.rstrip('.')}, in front of this scene: {bg_caption}" if bg_caption else fg_caption
        return [LayeredClip(
            key=sample_key(f"videomatting_s{o.seed}", n),
            fg=fg, alpha=matte, bg=bg, blend=blend,
            captions=Captions(fg=fg_caption, bg=bg_caption, blend=blend_caption),
            fps=o.fps, kind="video", origin="copy_paste",
            source_id=f"fg={self.fgr[fg_name]};bg={self.backgrounds[bg_name]}", frame_range=(0, o.num_frames),
            scores={"fg_source": fg_name, "bg_source": bg_name, "fg_start": fg_start, "bg_start": bg_start,
                    "scale": round(scale, 4), "top": top, "left": left},
        )]

    def _foreground(self, name: str) -> tuple[np.ndarray, np.ndarray, Path]:
        """A foreground clip's colour [T, H, W, 3] and alpha [T, H, W] (pha/'s, else the one it carries), and the
        alpha's path."""
        colour_path = self.fgr[name]
        if name not in self.pha:
            try:
                rgba = self._head(colour_path, "rgba")
            except NoAlphaError as exc:
                raise SourceError(f"{colour_path}: no alpha beside it (expected pha/{name}) nor in it "
                                  f"({exc})") from None
            return rgba[..., :3], rgba[..., 3], colour_path
        rgb, alpha = self._head(colour_path, "rgb"), self._head(self.pha[name], "alpha")
        if alpha.shape != rgb.shape[:3]:
            raise SourceError(f"{self.pha[name]}: alpha {list(alpha.shape)} is another size or length than its "
                              f"foreground {list(rgb.shape[:3])}")
        return rgb, alpha, self.pha[name]

    def _head(self, path: Path, layer: str) -> np.ndarray:
        """The clip's first max_start + num_frames frames (all it has when shorter, at least num_frames)."""
        video = _read(path, layer, self.opts.max_start + self.opts.num_frames, self.untagged)
        if len(video) < self.opts.num_frames:
            raise SourceError(f"{path}: {len(video)} frames, fewer than num_frames {self.opts.num_frames}")
        return video
