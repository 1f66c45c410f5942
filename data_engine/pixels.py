"""Where pixels enter: decoded video frames and image files become uint8 RGB and alpha here, and nowhere else.

Video frames (PyAV):
- colour: swscale converts with the frame's own tags (range and matrix); a YUV stream that tags neither is read as
  `Untagged` says: by default limited range and BT.601, FFmpeg's own assumption, so the pixels are what swscale,
  torchvision and decord make of the same file. A source can say otherwise (video_matting's `untagged_range` and
  `untagged_matrix`).
- alpha read as grey (a matte video): its luma plane mapped from the stream's range and bit depth, rounded:
  limited 16..235 (64..940 at 10 bits) becomes 0..255. A grey pixel format (gray, gray10le, ...) is full range
  unless tagged, as FFmpeg defines it; an untagged YUV one follows `Untagged.range`. `ffmpeg -pix_fmt yuv420p`
  writes grey PNGs as untagged limited range, so the default reads them right. swscale's own grey conversion is
  not used: it is off by one at 8 bits.
- alpha carried in the frame (yuva, ProRes 4444, VP9 alpha, rgba): its plane, full range by definition, scaled
  from its bit depth.
Images (Pillow): PNG (8 and 16 bits), TIFF (16 bits), JPEG, WebP. A 16-bit grey image is scaled to 8 bits with
rounding: Pillow's convert("L") clips it, which turns a soft 16-bit matte binary. 16-bit colour keeps Pillow's high
byte (within 1 of rounding). Alpha carried in the image (RGBA, LA, a palette's transparency) comes beside its
colour, straight as PNG defines it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

RANGES = {"limited": ColorRange.MPEG, "full": ColorRange.JPEG}
MATRICES = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709}
_UNSPECIFIED_MATRIX = 2  # AVCOL_SPC_UNSPECIFIED
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's modes of 16-bit grey PNG and TIFF


@dataclass(frozen=True)
class Untagged:
    """What a YUV video stream that does not tag its colour range or matrix is taken to be."""

    range: str = "limited"
    matrix: str = "bt601"

    def __post_init__(self) -> None:
        if self.range not in RANGES:
            raise ValueError(f"untagged range must be one of {sorted(RANGES)}, got {self.range!r}")
        if self.matrix not in MATRICES:
            raise ValueError(f"untagged matrix must be one of {sorted(MATRICES)}, got {self.matrix!r}")


def _is_yuv(fmt: av.VideoFormat) -> bool:
    return not fmt.is_rgb and sum(not c.is_alpha for c in fmt.components) >= 3


def _source_tags(frame: av.VideoFrame, untagged: Untagged) -> dict:
    """swscale's source range and matrix for what the frame leaves unsaid (nothing for a tagged or RGB frame)."""
    if not _is_yuv(frame.format):
        return {}
    tags = {}
    if frame.color_range == ColorRange.UNSPECIFIED:
        tags["src_color_range"] = RANGES[untagged.range]
    if int(frame.colorspace) == _UNSPECIFIED_MATRIX:
        tags["src_colorspace"] = MATRICES[untagged.matrix]
    return tags


@functools.cache
def _levels(bits: int, full: bool) -> np.ndarray:
    """The uint8 level of every code of a `bits`-deep plane (a lookup table)."""
    codes = np.arange(1 << bits, dtype=np.float64)
    if full:
        scaled = codes * 255 / ((1 << bits) - 1)
    else:
        scaled = (codes - (16 << (bits - 8))) * 255 / (219 << (bits - 8))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _plane_codes(frame: av.VideoFrame, index: int, bits: int) -> np.ndarray:
    plane = frame.planes[index]
    dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype(">u2" if frame.format.name.endswith("be") else "<u2")
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return rows[:, : plane.width]


def _own_plane(fmt: av.VideoFormat, component) -> bool:
    """Whether `component` has a plane to itself (planar and grey formats; not packed ones like rgba or yuyv422)."""
    return sum(c.plane == component.plane for c in fmt.components) == 1


def frame_rgb(frame: av.VideoFrame, untagged: Untagged = Untagged()) -> np.ndarray:
    """A decoded frame's colour as uint8 [H, W, 3]."""
    return frame.to_ndarray(format="rgb24", **_source_tags(frame, untagged))


def frame_grey(frame: av.VideoFrame, untagged: Untagged = Untagged()) -> np.ndarray:
    """A matte video's frame as uint8 [H, W] alpha, 0..255 whatever the stream's range and bit depth."""
    fmt = frame.format
    luma = fmt.components[0]
    if not (luma.is_luma and _own_plane(fmt, luma)):  # RGB or packed YUV: swscale's luma, full range
        return frame.to_ndarray(format="gray", dst_color_range=ColorRange.JPEG, **_source_tags(frame, untagged))
    if frame.color_range != ColorRange.UNSPECIFIED:
        full = frame.color_range == ColorRange.JPEG
    else:
        full = not _is_yuv(fmt) or untagged.range == "full"
    return _levels(luma.bits, full)[_plane_codes(frame, luma.plane, luma.bits)]


def frame_alpha(frame: av.VideoFrame) -> np.ndarray | None:
    """The alpha a frame carries as uint8 [H, W], or None for a format without alpha."""
    fmt = frame.format
    alpha = next((c for c in fmt.components if c.is_alpha), None)
    if alpha is None:
        return None
    if not _own_plane(fmt, alpha):  # packed 8-bit (rgba, argb, ya8): copied as it is
        return frame.to_ndarray(format="rgba")[..., 3]
    return _levels(alpha.bits, True)[_plane_codes(frame, alpha.plane, alpha.bits)]


def image_grey(img: Image.Image) -> np.ndarray:
    """An image as uint8 [H, W] grey (a matte): 16-bit levels scaled with rounding, colour through Pillow's luma."""
    if img.mode in _WIDE_GREY_MODES:
        codes = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
        return _levels(16, True)[codes]
    return np.asarray(img.convert("L"))


def image_rgb(img: Image.Image) -> np.ndarray:
    """An image's colour as uint8 [H, W, 3] (a carried alpha is dropped, not applied: the colour is straight)."""
    if img.mode in _WIDE_GREY_MODES:
        return np.repeat(image_grey(img)[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"))


def image_alpha(img: Image.Image) -> np.ndarray | None:
    """The alpha an image carries as uint8 [H, W] (RGBA, LA, a palette's transparency), or None."""
    if not img.has_transparency_data:
        return None
    return np.asarray(img.convert("RGBA"))[..., 3]
