"""A known matte, foreground and background, and writers that encode them as real sets ship them (PyAV: FFmpeg's
own encoders and swscale, as the ffmpeg command uses them), for the fidelity matrix (test_pixel_fidelity.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from data_engine.schema import composite

T, H, W = 3, 32, 48
AVCOL_SPC_BT709 = 1


@dataclass(frozen=True)
class Truth:
    matte: np.ndarray  # float [T, H, W] in 0..1
    fg: np.ndarray  # straight colour uint8 [T, H, W, 3]
    bg: np.ndarray  # uint8 [T, H, W, 3]

    @property
    def alpha(self) -> np.ndarray:
        return np.rint(self.matte * 255).astype(np.uint8)

    @property
    def alpha16(self) -> np.ndarray:
        return np.rint(self.matte * 65535).astype(np.uint16)

    @property
    def blend(self) -> np.ndarray:
        return composite(self.fg, self.alpha, self.bg)

    @property
    def premultiplied(self) -> np.ndarray:
        return np.rint(self.fg * self.matte[..., None]).astype(np.uint8)


def truth(frames: int = T) -> Truth:
    """A disc with a 10-pixel soft edge and a see-through ramp inside (123 of the 256 levels occur), moving a pixel
    a frame; smooth colours, so a lossy codec's error is its own and not the content's."""
    t, ys, xs = np.mgrid[0:frames, 0:H, 0:W].astype(np.float64)
    r = np.hypot(ys - H / 2, xs - W / 2 - t)
    matte = np.clip((14 - r) / 10, 0, 1) * np.clip(0.3 + 0.7 * (xs - t - W / 2 + 14) / 10, 0, 1)
    fg = np.stack([230 - 80 * ys / H, 30 + 150 * xs / W, 60 + 60 * np.sin(xs / 7)], axis=-1)
    bg = np.stack([40 + 150 * xs / W, 200 - 140 * ys / H, 140 + 60 * np.cos(ys / 5)], axis=-1)
    return Truth(matte, np.rint(fg).astype(np.uint8), np.rint(bg).astype(np.uint8))


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    """Frames as a folder of PNGs (RGB, RGBA, 8- or 16-bit grey, by the array's shape and dtype)."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    return folder


def write_video(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, *, options: dict | None = None,
                range_: str | None = None, bt709: bool = False, tag: bool = True) -> Path:
    """Encode frames ([T, H, W] grey, uint8 or uint16; [T, H, W, 3] RGB; [T, H, W, 4] RGBA) as `codec`/`pix_fmt`.

    range_: None leaves the range to swscale (limited for YUV) and the stream untagged, as older ffmpeg writes it;
    "limited" / "full" converts to that range. bt709: convert with BT.709's matrix (swscale's default is BT.601).
    tag: say so in the stream (x264 writes a limited range only beside a matrix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames.ndim == 3:
        source = "gray16le" if frames.dtype == np.uint16 else "gray"
    else:
        source = "rgba" if frames.shape[-1] == 4 else "rgb24"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options or {}
        convert = {"format": pix_fmt}
        if range_:
            convert["dst_color_range"] = {"limited": ColorRange.MPEG, "full": ColorRange.JPEG}[range_]
            if tag:
                stream.codec_context.color_range = convert["dst_color_range"]
        if bt709:
            convert["dst_colorspace"] = Colorspace.ITU709
            if tag:
                stream.codec_context.colorspace = AVCOL_SPC_BT709
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=source).reformat(**convert)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
