"""Video and image encode/decode with PyAV (FFmpeg's libraries).

Colour: H.264 (libx264), 4:4:4 chroma at CRF 16 by default. 4:2:0 smears saturated object edges (measured
37.7 dB on a red ring vs >= 44 dB at 4:4:4, with smaller files); every FFmpeg-based reader (PyAV, torchvision,
decord, ffmpeg) decodes High 4:4:4, browsers may not: pass `pix_fmt="yuv420p"` for those.
Alpha: 8-bit grey H.264 (`gray` pixel format) at constant quantiser 1 by default (max error 2/255 measured on
soft mattes); `lossless=True` uses qp 0, which is bit-exact. Mattes are mostly flat, so qp 0 is often no bigger.
Streams written here say what they hold: colour as BT.601 limited range, alpha as full range. Alpha written before
they did is untagged full range: readers of this project's own files pass `OWN_UNTAGGED_ALPHA`.
Reading: every frame and image becomes pixels in `data_engine.pixels` (range, matrix, bit depth, carried alpha).
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from data_engine.pixels import Untagged, frame_alpha, frame_grey, frame_rgb, image_alpha, image_grey, image_rgb

DEFAULT_CRF = 16
DEFAULT_PIX_FMT = "yuv444p"
DEFAULT_ALPHA_QP = 1
OWN_UNTAGGED_ALPHA = Untagged(range="full")
_AVCOL_SPC_SMPTE170M = 6  # BT.601, the matrix swscale converts rgb24 with
_codec_threads = 0  # 0: FFmpeg picks (one per core); the engine sets its actors' CPU share


def set_codec_threads(n: int) -> None:
    """Threads each encoder and decoder may use in this process (0 = FFmpeg's choice).

    An engine actor owns one core or less: codec threads beyond that only contend with other actors, and x264's
    frame threads cost ~10% more CPU per clip than one thread (measured on 16x240x360 clips).
    """
    global _codec_threads
    _codec_threads = max(0, int(n))


def apply_codec_threads(stream) -> None:
    """Give an opened PyAV video stream the process's codec thread count."""
    if _codec_threads:
        stream.codec_context.thread_count = _codec_threads


class VideoDecodeError(ValueError):
    """A file that is not a decodable video; the message names the file and what is wrong."""


class NoAlphaError(VideoDecodeError):
    """A video or image read for the alpha it carries that carries none."""


def unreadable(label: str, exc: Exception, what: str = "truncated or corrupt video") -> VideoDecodeError:
    """FFmpeg's own words (e.g. "[Errno 1094995529] Invalid data found ...") mean little to a user: say what it
    is first, keep FFmpeg's detail after it."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VideoDecodeError(f"{label}: {what} ({detail})")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    codec: str
    variable_frame_rate: bool


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _even(x: int) -> int:
    return x + (x % 2)


def encode_video(
    frames: np.ndarray,
    fps: float,
    *,
    crf: int = DEFAULT_CRF,
    qp: int | None = None,
    pix_fmt: str = DEFAULT_PIX_FMT,
    lossless: bool = False,
    preset: str = "medium",
) -> bytes:
    """Encode uint8 frames [T, H, W, 3] (colour) or [T, H, W] (grey) to MP4/H.264 bytes.

    Quality: `crf` (default), or a constant quantiser `qp`; `lossless` is qp 0.

    Odd sizes are padded by edge replication to even sizes (H.264 needs even dimensions for 4:2:0); the true
    size is restored on decode only when the caller crops, so callers keep even sizes.
    """
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    grey = frames.ndim == 3
    if grey:
        pix_fmt = "gray"
    elif frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] or [T, H, W], got {frames.shape}")
    t, h, w = frames.shape[:3]
    if t == 0:
        raise ValueError("cannot encode a video with no frames")
    if h % 2 or w % 2:
        pad = ((0, 0), (0, h % 2), (0, w % 2)) + (((0, 0),) if not grey else ())
        frames = np.pad(frames, pad, mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height = _even(w), _even(h)
        stream.pix_fmt = pix_fmt
        opts = {"preset": preset}
        if lossless or qp is not None:
            opts["qp"] = "0" if lossless else str(qp)
        else:
            opts["crf"] = str(crf)
        stream.options = opts
        apply_codec_threads(stream)
        if grey:  # the matte as it is: tagged full range, so no reader takes 0..255 for 16..235
            stream.codec_context.color_range = ColorRange.JPEG
        else:
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray" if grey else "rgb24")
            if not grey:
                vf = vf.reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def encode_alpha(alpha: np.ndarray, fps: float, *, lossless: bool = False) -> bytes:
    return encode_video(alpha, fps, qp=DEFAULT_ALPHA_QP, lossless=lossless)


def _open(src: str | Path | bytes | BinaryIO, name: str):
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise VideoDecodeError(f"{name}: empty data (0 bytes)")
        src = io.BytesIO(src)
    elif isinstance(src, (str, Path)):
        p = Path(src)
        if p.is_symlink() and not p.exists():
            raise VideoDecodeError(f"{name}: dangling symlink (it points to {os.readlink(p)}, which does not exist); "
                                   "fix or remove the link")
        if not p.exists():
            raise VideoDecodeError(f"{name}: no such file")
        if p.stat().st_size == 0:
            raise VideoDecodeError(f"{name}: zero-byte file")
    try:
        container = av.open(src if not isinstance(src, Path) else str(src), mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise unreadable(name, exc) from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{name}: no video stream")
    return container


def _frames(container, stream):
    """The stream's decoded frames. VP9 with alpha goes through libvpx-vp9: FFmpeg's own vp9 decoder drops the
    alpha that WebM carries beside the colour."""
    if stream.codec_context.name == "vp9" and stream.metadata.get("alpha_mode") == "1":
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        if _codec_threads:
            decoder.thread_count = _codec_threads
        for packet in container.demux(stream):
            yield from decoder.decode(packet)
    else:
        apply_codec_threads(stream)
        yield from container.decode(stream)


def _decode(src, convert, max_frames: int | None, label: str) -> np.ndarray:
    container = _open(src, label)
    frames: list[np.ndarray] = []
    try:
        with container:
            for frame in _frames(container, container.streams.video[0]):
                frames.append(convert(frame))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        if not frames:
            raise unreadable(label, exc) from exc
        raise unreadable(label, exc, f"truncated or corrupt video after frame {len(frames)}") from exc
    if not frames:
        raise VideoDecodeError(f"{label}: no decodable frames")
    return np.stack(frames)


def _label(src, name: str | None) -> str:
    return name or (str(src) if isinstance(src, (str, Path)) else "<video bytes>")


def decode_video(
    src: str | Path | bytes | BinaryIO,
    *,
    grey: bool = False,
    max_frames: int | None = None,
    name: str | None = None,
    untagged: Untagged = Untagged(),
) -> np.ndarray:
    """Decode to uint8 [T, H, W, 3], or with grey=True a matte video to alpha [T, H, W] (its range and bit depth
    undone); `untagged` says what a stream that tags no colour range or matrix holds. Raises VideoDecodeError
    naming `name`."""
    if grey:
        return _decode(src, lambda f: frame_grey(f, untagged), max_frames, _label(src, name))
    return _decode(src, lambda f: frame_rgb(f, untagged), max_frames, _label(src, name))


def decode_video_rgba(
    src: str | Path | bytes | BinaryIO,
    *,
    max_frames: int | None = None,
    name: str | None = None,
    untagged: Untagged = Untagged(),
) -> np.ndarray:
    """Decode a video that carries alpha (yuva, ProRes 4444, VP9 alpha, rgba) to uint8 [T, H, W, 4], straight
    colour; a stream without alpha is a NoAlphaError."""
    label = _label(src, name)

    def rgba(frame: av.VideoFrame) -> np.ndarray:
        alpha = frame_alpha(frame)
        if alpha is None:
            raise NoAlphaError(f"{label}: decoded as {frame.format.name}, which has no alpha channel")
        return np.concatenate([frame_rgb(frame, untagged), alpha[..., None]], axis=-1)

    return _decode(src, rgba, max_frames, label)


def presentation_times(container, stream, label: str) -> np.ndarray:
    """The stream's packet timestamps in order, found by demuxing (no decode)."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                pts.append(packet.pts)
    except av.error.FFmpegError as exc:
        raise unreadable(label, exc) from exc
    return np.sort(np.asarray(pts, np.int64))


def probe_video(src: str | Path | bytes | BinaryIO, *, name: str | None = None) -> VideoInfo:
    """Duration, fps, size, codec and frame count; counts frames by demuxing (cheap, no decode)."""
    label = _label(src, name)
    container = _open(src, label)
    with container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        pts = presentation_times(container, stream, label).tolist()
        tb = float(stream.time_base) if stream.time_base else 0.0
        deltas = np.diff(pts) if len(pts) > 1 else np.array([])
        vfr = bool(deltas.size and (deltas.max() - deltas.min()) > 0.01 * max(1, np.median(deltas)))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else (1.0 / (np.median(deltas) * tb) if deltas.size and tb else 0.0)
        duration = (pts[-1] - pts[0]) * tb + (1.0 / fps if fps else 0.0) if pts else 0.0
        return VideoInfo(
            path=label,
            width=int(ctx.width),
            height=int(ctx.height),
            fps=float(fps),
            num_frames=len(pts),
            duration=float(duration),
            codec=ctx.name,
            variable_frame_rate=vfr,
        )


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] or [H, W] to PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _without_addresses(text: str) -> str:
    """Pillow names its file object as `<_io.BytesIO object at 0x7f...>`: an address tells the user nothing."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", text)


def _open_image(data: bytes, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # Pillow raises several unrelated types for corrupt data
        raise VideoDecodeError(f"{name}: not a readable image ({_without_addresses(str(exc))})") from None
    return img


def decode_png(data: bytes, *, grey: bool = False, name: str = "<png bytes>") -> np.ndarray:
    """Image bytes (PNG, JPEG, TIFF, WebP) as uint8 [H, W, 3], or [H, W] with grey=True (16 bits scaled)."""
    img = _open_image(data, name)
    return image_grey(img) if grey else image_rgb(img)


def _file_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(f"{p}: zero-byte file")
    return p.read_bytes()


def read_image(path: str | Path, *, grey: bool = False) -> np.ndarray:
    return decode_png(_file_bytes(path), grey=grey, name=str(path))


def read_image_rgba(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An image's straight colour uint8 [H, W, 3] and the alpha it carries [H, W] (None when it carries none)."""
    img = _open_image(_file_bytes(path), str(path))
    return image_rgb(img), image_alpha(img)


FRAME_EXTS = (".png", ".jpg", ".jpeg")


def frame_files(folder: str | Path) -> list[Path]:
    """The frames of a folder of frames, in name order (the official layout numbers them: 00000.png, ...)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_EXTS)


def _stack_folder(folder: str | Path, read) -> np.ndarray:
    files = frame_files(folder)
    if not files:
        raise VideoDecodeError(f"{folder}: no {'/'.join(FRAME_EXTS)} frames in this folder")
    frames = [read(f) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(f"{folder}: frames differ in size {sorted(shapes)}")
    return np.stack(frames)


def read_frame_folder(folder: str | Path, *, grey: bool = False) -> np.ndarray:
    """A folder of frames as uint8 [T, H, W, 3] (grey: [T, H, W]); VideoDecodeError names an empty folder, an
    unreadable frame or frames of different sizes."""
    return _stack_folder(folder, lambda f: read_image(f, grey=grey))


def read_frame_folder_rgba(folder: str | Path) -> np.ndarray:
    """A folder of frames that carry alpha (RGBA PNG) as uint8 [T, H, W, 4]; a frame without alpha is named."""
    def rgba(path: Path) -> np.ndarray:
        rgb, alpha = read_image_rgba(path)
        if alpha is None:
            raise NoAlphaError(f"{path}: an image without alpha")
        return np.concatenate([rgb, alpha[..., None]], axis=-1)

    return _stack_folder(folder, rgba)


def write_video(path: str | Path, frames: np.ndarray, fps: float, **kwargs) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(encode_video(frames, fps, **kwargs))
    return p


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@dataclass(frozen=True)
class Geometry:
    """Scale a (src_h, src_w) frame to (scaled_h, scaled_w), then crop (height, width) at (top, left)."""

    scaled_h: int
    scaled_w: int
    top: int
    left: int
    height: int
    width: int


def cover_geometry(src_h: int, src_w: int, height: int, width: int) -> Geometry:
    """Scale to cover height x width (aspect kept, the overflowing side rounded), then crop the centre."""
    scale = max(height / src_h, width / src_w)
    sh, sw = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    return Geometry(sh, sw, (sh - height) // 2, (sw - width) // 2, height, width)


def resize_crop(frames: np.ndarray, geo: Geometry) -> np.ndarray:
    """uint8 frames [T, H, W, 3] or [T, H, W] scaled and cropped by `geo`.

    The data engine, the trainer and generation all resize here, with PyTorch's antialiased bilinear on uint8:
    torch is a core dependency while OpenCV comes only with the engine extra; the filter is PIL's bilinear (a
    triangle widened by the scale when shrinking), so a downscale averages every source pixel as cv2's
    INTER_AREA does; and its fixed-point uint8 path scaled a 1080p frame to 480 x 853 in 2.9 ms on one core
    (INTER_AREA 6.6 ms, float32 24 ms, which it matches within 1/255).
    """
    import torch
    import torch.nn.functional as F

    grey = frames.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(frames[..., None] if grey else frames)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != (geo.scaled_h, geo.scaled_w):
        x = F.interpolate(x, size=(geo.scaled_h, geo.scaled_w), mode="bilinear", antialias=True, align_corners=False)
    out = x[..., geo.top : geo.top + geo.height, geo.left : geo.left + geo.width].permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(out[..., 0] if grey else out)


def apply_geometry(frame: np.ndarray, geo: Geometry) -> np.ndarray:
    """One frame ([H, W, 3] or [H, W]) scaled and cropped by `geo`."""
    return resize_crop(frame[None], geo)[0]
