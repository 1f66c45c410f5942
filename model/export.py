"""Write a generated layered clip to the files people use: RGBA foreground(s), alpha, bg, blend and a preview.

- fg RGBA (`fg_rgba/`, `fg_rgba.webm`, `fg_rgba.mov`; foreground k >= 1 of a K-foreground clip as
  `fg_k_rgba/`, `fg_k_rgba.webm`, `fg_k_rgba.mov`): a PNG sequence, WebM VP9 `yuva420p` (alpha kept as VP9's
  alpha side stream, flagged by the `alpha_mode` tag; FFmpeg's built-in vp9 decoder drops it, so
  `decode_video_rgba` decodes with libvpx-vp9) and ProRes 4444 (`prores_ks`, `yuva444p10le`) in .mov;
- fg.mp4 (over mid-grey, as generated), alpha.mp4 (grey H.264, lossless by default), bg.mp4, blend.mp4, and
  fg_k.mp4 / alpha_k.mp4 for k >= 1;
- preview.mp4 / preview.png: a 2-wide grid, one row per foreground front first (fg over a checkerboard, alpha),
  then bg, blend: the paper's 2 x 2 grid for one foreground;
- clip.json: the clip's metadata (`LayeredClip.metadata`: K > 1 adds num_foregrounds and per-foreground captions).

The RGBA colour is the foreground un-composited from the mid-grey it was generated over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data_engine.schema import MID_GREY, LayeredClip, alpha_name, composite, fg_name, is_alpha
from data_engine.video_io import decode_video_rgba, encode_png, write_video

RGBA_FORMATS = ("png", "webm", "mov")


class ExportError(ValueError):
    """A bad export option or an unreadable export; the message says which and how to fix it."""


@dataclass(frozen=True)
class ExportOptions:
    rgba_formats: tuple[str, ...] = ("png", "webm", "mov")
    lossless_alpha: bool = True  # alpha.mp4 bit-exact (H.264 qp 0 on grey)
    webm_lossless: bool = False
    webm_crf: int = 20
    preview: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.rgba_formats) - set(RGBA_FORMATS)
        if unknown:
            raise ExportError(f"unknown RGBA format(s) {sorted(unknown)}; choose from {', '.join(RGBA_FORMATS)}")


@dataclass
class ExportResult:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)


def straight_rgb(fg_over_grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Invert `over_grey`: rgb = (fg - grey * (1 - a)) / a where a > 0 (black where fully transparent)."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    fg = fg_over_grey.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = np.where(a > 0, (fg - MID_GREY * (1.0 - a)) / a, 0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgba_frames(clip: LayeredClip, k: int = 0) -> np.ndarray:
    """[T, H, W, 4]: foreground k (front first) un-composited from grey, with its alpha."""
    alpha = clip.layer(alpha_name(k))
    return np.concatenate([straight_rgb(clip.layer(fg_name(k)), alpha), alpha[..., None]], axis=-1)


def rgba_stem(k: int) -> str:
    """The file stem of foreground k's RGBA exports: fg_rgba (the paper's one foreground), fg_1_rgba, ..."""
    return f"{fg_name(k)}_rgba"


def checkerboard(height: int, width: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    light = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    return np.where(light, np.uint8(204), np.uint8(153)).repeat(3, axis=-1).astype(np.uint8)


def over_checkerboard(fg_over_grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A stored foreground ([..., H, W, 3] over mid-grey, its alpha [..., H, W]) shown over a checkerboard, as every
    picture of ours shows transparency."""
    h, w = alpha.shape[-2:]
    return composite(straight_rgb(fg_over_grey, alpha), alpha, checkerboard(h, w, max(4, h // 16)))


def preview_frames(clip: LayeredClip) -> np.ndarray:
    """[T, (K + 1) H, 2W, 3]: row k is foreground k over a checkerboard | its alpha (front first), the last row
    bg | blend. One foreground gives the 2 x 2 grid."""
    rows = []
    for k in range(clip.num_foregrounds):
        fg, alpha = clip.layer(fg_name(k)), clip.layer(alpha_name(k))
        shown = over_checkerboard(fg, alpha)
        rows.append(np.concatenate([shown, np.repeat(alpha[..., None], 3, axis=-1)], axis=2))
    rows.append(np.concatenate([clip.bg, clip.blend], axis=2))
    return np.concatenate(rows, axis=1)


def write_png_sequence(rgba: np.ndarray, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(rgba):
        (folder / f"{i:04d}.png").write_bytes(encode_png(frame))
    return folder


def _write_rgba_video(rgba: np.ndarray, path: Path, fps: float, codec: str, pix_fmt: str, options: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = rgba.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = options
        for frame in rgba:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgba")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_webm_rgba(rgba: np.ndarray, path: str | Path, fps: float, *, lossless: bool = False, crf: int = 20) -> Path:
    options = {"lossless": "1"} if lossless else {"crf": str(crf), "b": "0"}
    return _write_rgba_video(rgba, Path(path), fps, "libvpx-vp9", "yuva420p", options)


def write_prores_rgba(rgba: np.ndarray, path: str | Path, fps: float) -> Path:
    return _write_rgba_video(rgba, Path(path), fps, "prores_ks", "yuva444p10le", {"profile": "4444"})


def read_rgba_video(path: str | Path) -> np.ndarray:
    """Decode an RGBA WebM (VP9 + alpha) or ProRes 4444 .mov to uint8 [T, H, W, 4] (data_engine/pixels.py)."""
    return decode_video_rgba(path)


def export_rgba(rgba: np.ndarray, folder: Path, stem: str, fps: float, options: ExportOptions) -> dict[str, Path]:
    """One foreground's RGBA files `<stem>/`, `<stem>.webm`, `<stem>.mov` (those asked for), keyed
    `<stem>_png`, `<stem>_webm`, `<stem>_mov`."""
    files = {}
    if "png" in options.rgba_formats:
        files[f"{stem}_png"] = write_png_sequence(rgba, folder / stem)
    if "webm" in options.rgba_formats:
        files[f"{stem}_webm"] = write_webm_rgba(
            rgba, folder / f"{stem}.webm", fps, lossless=options.webm_lossless, crf=options.webm_crf
        )
    if "mov" in options.rgba_formats:
        files[f"{stem}_mov"] = write_prores_rgba(rgba, folder / f"{stem}.mov", fps)
    return files


def export_clip(clip: LayeredClip, out_dir: str | Path, options: ExportOptions = ExportOptions()) -> ExportResult:
    """Write every output of one clip into `out_dir`; returns the paths by name."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    result = ExportResult(folder)
    fps = clip.fps
    for k in range(clip.num_foregrounds):
        result.files.update(export_rgba(rgba_frames(clip, k), folder, rgba_stem(k), fps, options))
    for name in clip.layer_names:
        lossless = options.lossless_alpha and is_alpha(name)
        result.files[name] = write_video(folder / f"{name}.mp4", clip.layer(name), fps, lossless=lossless)
    if options.preview:
        grid = preview_frames(clip)
        result.files["preview"] = write_video(folder / "preview.mp4", grid, fps)
        result.files["preview_png"] = folder / "preview.png"
        result.files["preview_png"].write_bytes(encode_png(grid[0]))
    result.files["meta"] = folder / "clip.json"
    result.files["meta"].write_text(json.dumps(clip.metadata(), indent=2))
    return result
