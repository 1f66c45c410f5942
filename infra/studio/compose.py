"""Recompose a layered clip: a new background, each foreground moved, scaled, retimed and faded, a new depth order.

Alpha semantics. Layers are stored as the data stores them: `fg_k` is the object's straight colour composited over
mid-grey where alpha = 0, `alpha_k` its coverage. Composing works on premultiplied colour,
c = fg_k - MID_GREY * (1 - a), which needs no division by alpha (so nothing is lost where alpha is small) and is
what resampling must interpolate (interpolating straight colour drags grey into the edges). The blend is then
c_k + out * (1 - a_k), farthest foreground first, each nearer one over the result: `composite_layers`'s order.
Opacity o scales a foreground's coverage: a -> o * a, c -> o * c. Composing a clip's own layers unchanged
reproduces its blend within 1/255 (tested on the synthetic world).

A transform maps output pixel (x, y) back to source ((x - dx - cx) / s + cx, (y - dy - cy) / s + cy) with
(cx, cy) the frame centre, sampled bilinearly; outside the frame the foreground is transparent. A time offset n
shows source frame t - n at frame t; frames before the object starts or after it ends are transparent.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from data_engine.schema import MID_GREY, LayeredClip, alpha_name, fg_name
from data_engine.video_io import FRAME_EXTS, cover_geometry, decode_video, read_image, resize_crop


class ComposeError(ValueError):
    """A bad compose option or input; the message says which and how to fix it."""


@dataclass(frozen=True)
class Transform:
    """Where one foreground goes: a shift in pixels (right, down), a scale about the frame centre, a time offset in
    frames (positive: later) and an opacity in [0, 1]."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    time_offset: int = 0
    opacity: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ComposeError(f"scale must be > 0, got {self.scale}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ComposeError(f"opacity must be in [0, 1], got {self.opacity}")

    @property
    def is_identity(self) -> bool:
        return self == Transform()


@dataclass(frozen=True)
class Composition:
    """A recomposition of a K-foreground clip. `order`: the clip's foreground indices, front first, in the new depth
    order (None keeps it); `transforms`: {foreground index in the input clip: Transform}; `background`: a new
    [T, H, W, 3] or [H, W, 3] uint8 background (None keeps the clip's)."""

    order: tuple[int, ...] | None = None
    transforms: dict[int, Transform] = field(default_factory=dict)
    background: np.ndarray | None = None


def premultiplied(fg_over_grey: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, a) in float32, c = fg - MID_GREY * (1 - a) with a in [0, 1]: the stored layer un-composited from grey.
    c is clipped to [0, 255 a], the range a premultiplied colour has: a layer decoded from a lossy video is not
    exactly grey where a = 0, and that noise must not show through as a ghost."""
    a = alpha.astype(np.float32) / 255.0
    colour = fg_over_grey.astype(np.float32) - MID_GREY * (1.0 - a[..., None])
    return np.clip(colour, 0.0, 255.0 * a[..., None]), a


def _sample_bilinear(image: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """image [T, H, W, C] at source coordinates (sx, sy) [H, W]; zero outside the frame."""
    h, w = image.shape[1:3]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    out = np.zeros(image.shape, np.float32)
    for oy, wy in ((0, 1.0 - fy), (1, fy)):
        for ox, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + ox, y0 + oy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            weight = np.where(inside[..., None], wx * wy, 0.0).astype(np.float32)
            out += image[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)] * weight
    return out


def transform_layer(colour: np.ndarray, alpha: np.ndarray, t: Transform) -> tuple[np.ndarray, np.ndarray]:
    """A premultiplied foreground (colour [T, H, W, 3], alpha [T, H, W], float) moved, scaled, retimed, faded."""
    if t.is_identity:
        return colour, alpha
    frames, h, w = alpha.shape
    stacked = np.concatenate([colour, alpha[..., None]], axis=-1)
    if t.scale != 1.0 or t.dx or t.dy:
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        stacked = _sample_bilinear(stacked, (xx - t.dx - cx) / t.scale + cx, (yy - t.dy - cy) / t.scale + cy)
    if t.time_offset:
        source = np.arange(frames) - t.time_offset
        shown = (source >= 0) & (source < frames)
        stacked = np.where(shown[:, None, None, None], stacked[np.clip(source, 0, frames - 1)], 0.0)
    stacked = stacked * np.float32(t.opacity)
    return stacked[..., :3], stacked[..., 3]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def fit_background(background: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """An image held for every frame, or a video's first `num_frames` frames, scaled to cover and centre-cropped."""
    if background.dtype != np.uint8 or background.ndim not in (3, 4) or background.shape[-1] != 3:
        raise ComposeError(f"a background must be uint8 [H, W, 3] or [T, H, W, 3], got {background.dtype} "
                           f"{background.shape}")
    frames = background[None] if background.ndim == 3 else background
    if frames.shape[0] == 1:
        frames = np.repeat(frames, num_frames, axis=0)
    if frames.shape[0] < num_frames:
        raise ComposeError(f"the background video has {frames.shape[0]} frames, the clip {num_frames}; give a "
                           "longer video or an image")
    frames = frames[:num_frames]
    if frames.shape[1:3] != (height, width):
        frames = resize_crop(frames, cover_geometry(frames.shape[1], frames.shape[2], height, width))
    return np.ascontiguousarray(frames)


def read_background(path: str | Path) -> np.ndarray:
    """An image file ([H, W, 3]) or a video ([T, H, W, 3]) as uint8, through data_engine.video_io."""
    path = Path(path)
    if not path.is_file():
        raise ComposeError(f"{path}: no such background file; give an image (.png, .jpg) or a video (.mp4, .webm)")
    if path.suffix.lower() in FRAME_EXTS:
        return read_image(path)
    return decode_video(path)


def _check_order(order: tuple[int, ...], count: int) -> None:
    if sorted(order) != list(range(count)):
        raise ComposeError(f"order {','.join(map(str, order))} must name each of the clip's {count} foreground(s) "
                           f"0 .. {count - 1} once, front first")


def compose(clip: LayeredClip, composition: Composition = Composition()) -> LayeredClip:
    """The recomposed clip: its foregrounds transformed and reordered (stored over grey again), the new background
    and their blend. Captions follow their foregrounds; the blend's caption is kept."""
    count = clip.num_foregrounds
    order = composition.order if composition.order is not None else tuple(range(count))
    _check_order(order, count)
    unknown = sorted(set(composition.transforms) - set(range(count)))
    if unknown:
        raise ComposeError(f"transforms name foreground(s) {unknown}; the clip has 0 .. {count - 1}")
    bg = clip.bg if composition.background is None else fit_background(
        composition.background, clip.num_frames, clip.height, clip.width)
    layers: dict[str, np.ndarray] = {"bg": bg}
    placed = []
    for new_k, old_k in enumerate(order):
        colour, alpha = premultiplied(clip.layer(fg_name(old_k)), clip.layer(alpha_name(old_k)))
        colour, alpha = transform_layer(colour, alpha, composition.transforms.get(old_k, Transform()))
        placed.append((colour, alpha))
        layers[alpha_name(new_k)] = _to_uint8(alpha * 255.0)
        layers[fg_name(new_k)] = _to_uint8(colour + MID_GREY * (1.0 - alpha[..., None]))
    out = bg.astype(np.float32)
    for colour, alpha in reversed(placed):
        out = colour + out * (1.0 - alpha[..., None])
    layers["blend"] = _to_uint8(out)
    prompts = [clip.captions.as_dict()[fg_name(k)] for k in order]
    captions = replace(clip.captions, fg=prompts[0], more_fg=tuple(prompts[1:]))
    depth = tuple(clip.depth_order[k] for k in order) if clip.depth_order else ()
    return LayeredClip.from_named_layers(
        layers, key=clip.key, captions=captions, fps=clip.fps, kind=clip.kind, origin=clip.origin,
        source_id=clip.source_id, frame_range=clip.frame_range, scores=clip.scores, depth_order=depth)
