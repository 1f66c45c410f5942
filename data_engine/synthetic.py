"""Procedural layered clips: moving foreground objects (one by default, `num_objects` in depth order) with soft,
anti-aliased alphas over a textured, panning background, with template captions. Deterministic from (seed, index);
the demo's built-in input.

Shared by the sources (synthetic clips, and synthetic videos whose blends the video stages decode) and the
`synthetic_layers` stage, which regenerates a synthetic video's true layers from its sidecar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.schema import Captions, LayeredClip, alpha_name, composite_layers, fg_name, over_grey, sample_key
from data_engine.video_io import cover_geometry, resize_crop

SHAPES = ("disc", "rounded square", "diamond", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 210, 40),
    "green": (40, 180, 70),
    "blue": (40, 90, 220),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
}
PALETTES = {
    "sunset": ((250, 160, 80), (120, 40, 90)),
    "ocean": ((40, 120, 170), (10, 40, 80)),
    "forest": ((90, 150, 60), (20, 60, 30)),
    "desert": ((230, 200, 140), (150, 100, 60)),
    "night": ((60, 60, 110), (10, 10, 30)),
}
TEXTURES = ("wavy", "striped", "rippled")
DIRECTIONS = ("left", "right", "up", "down")


def caption_words() -> tuple[str, ...]:
    """The words that tell one clip of this world from another in its captions (shape, colour, palette,
    texture, direction): the tiny preset's tokenizer keeps each one a single token, as a real T5 vocabulary does."""
    names = (*SHAPES, *COLOURS, *PALETTES, *TEXTURES, *DIRECTIONS)
    return tuple(sorted({word for name in names for word in name.split()}))


# The words the caption templates (`_Object.caption`, `_blend_caption`, `Captions.bg`) put around those.
TEMPLATE_WORDS = ("A", "a", "against", "backdrop", "coloured", "drifts", "front", "glides", "gliding", "in", "of",
                  "over", "pattern", "plain", "slowly", "the", "to")


def caption_vocabulary() -> tuple[str, ...]:
    """Every word of this world's captions: the tiny preset's tokenizer keeps each one a single token."""
    return tuple(sorted({*caption_words(), *TEMPLATE_WORDS}))


@dataclass(frozen=True)
class SyntheticConfig:
    num_clips: int = 8
    seed: int = 0
    num_frames: int = 16
    height: int = 480
    width: int = 720
    fps: float = 8.0
    edge_softness: float = 1.5  # px: the anti-aliased ramp of the alpha edge (fractional alpha lives here)
    num_objects: int = 1  # foreground objects per clip, each its own layer; one colour each, so at most len(COLOURS)
    # The size a clip is scaled to (cover, centre crop) after rendering at height x width, as the video path's
    # clip stage and the trainer scale it; 0: as rendered. Lets the layered source write the tiny world's clips.
    clip_height: int = 0
    clip_width: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_objects <= len(COLOURS):
            raise ValueError(f"num_objects must be 1 .. {len(COLOURS)} (each object has its own colour), "
                             f"got {self.num_objects}")


def _direction(vx: float, vy: float) -> str:
    left, right, up, down = DIRECTIONS
    horiz = right if vx > 0 else left
    vert = down if vy > 0 else up
    return horiz if abs(vx) >= abs(vy) else vert


def _background(rng: np.random.Generator, cfg: SyntheticConfig, palette: str, texture: str) -> tuple[np.ndarray, str]:
    t, h, w = cfg.num_frames, cfg.height, cfg.width
    light, dark = (np.array(c, np.float32) for c in PALETTES[palette])
    vel = rng.uniform(-1, 1, size=2) * 0.02 * min(h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    k = 4
    freqs = rng.uniform(0.5, 3.0, size=(k, 2)) * (2 * np.pi / min(h, w))
    phases = rng.uniform(0, 2 * np.pi, size=k)
    fine = {"wavy": 0.0, "striped": 0.18, "rippled": 0.1}[texture]
    fine_freq = rng.uniform(0.15, 0.3)
    for i in range(t):
        x, y = xs - vel[0] * i, ys - vel[1] * i
        field = sum(np.sin(f[0] * x + f[1] * y + p) for f, p in zip(freqs, phases)) / k
        if texture == "striped":
            field = field + fine * np.sign(np.sin(fine_freq * (x + 0.5 * y)))
        elif texture == "rippled":
            field = field + fine * np.sin(fine_freq * np.hypot(x - w / 2, y - h / 2))
        mix = np.clip(0.5 + 0.5 * field, 0, 1)[..., None]
        frames[i] = np.clip(dark + (light - dark) * mix, 0, 255).astype(np.uint8)
    return frames, _direction(*vel)


def signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (px, negative inside) to the shape centred at the origin; the world's shapes,
    also the templates its scores fit a generated matte against (evaluation/metrics/toyworld.py)."""
    if shape == "disc":
        return np.hypot(dx, dy) - r
    if shape == "rounded square":
        corner = 0.3 * r
        qx, qy = np.abs(dx) - (r - corner), np.abs(dy) - (r - corner)
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0) - corner
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - r) / np.sqrt(2)
    if shape == "ring":
        return np.abs(np.hypot(dx, dy) - 0.7 * r) - 0.3 * r
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _foreground(rng: np.random.Generator, cfg: SyntheticConfig, shape: str, colour: str):
    t, h, w = cfg.num_frames, cfg.height, cfg.width
    base = np.array(COLOURS[colour], np.float32)
    r0 = rng.uniform(0.12, 0.22) * min(h, w)
    start = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
    vel = rng.uniform(-1, 1, size=2) * 0.03 * min(h, w)
    wobble = rng.uniform(0.0, 0.04) * min(h, w)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.empty((t, h, w, 3), np.uint8)
    alpha = np.empty((t, h, w), np.uint8)
    for i in range(t):
        cx = start[0] + vel[0] * i
        cy = start[1] + vel[1] * i + wobble * np.sin(i * 0.8)
        r = r0 * (1.0 + 0.05 * np.sin(i * 0.5))
        dx, dy = xs - cx, ys - cy
        d = signed_distance(shape, dx, dy, r)
        a = np.clip(0.5 - d / cfg.edge_softness, 0.0, 1.0)
        shade = np.clip(1.0 - 0.35 * (dx + dy) / (2 * r), 0.55, 1.25)[..., None]
        rgb[i] = np.clip(base * shade, 0, 255).astype(np.uint8)
        alpha[i] = np.rint(a * 255).astype(np.uint8)
    return rgb, alpha, _direction(*vel)


@dataclass(frozen=True)
class _Object:
    shape: str
    colour: str
    rgb: np.ndarray
    alpha: np.ndarray
    direction: str

    @property
    def caption(self) -> str:
        return f"A {self.colour} {self.shape} glides to the {self.direction} against a plain backdrop."


def _objects(rng: np.random.Generator, cfg: SyntheticConfig, front: _Object) -> list[_Object]:
    """The clip's objects, front first: `front`, then K-1 behind it, each of a colour no nearer object has, so
    that every layer is told apart by its caption and its pixels."""
    objects = [front]
    for _ in range(1, cfg.num_objects):
        shape = SHAPES[rng.integers(len(SHAPES))]
        free = [c for c in COLOURS if c not in {o.colour for o in objects}]
        colour = free[rng.integers(len(free))]
        objects.append(_Object(shape, colour, *_foreground(rng, cfg, shape, colour)))
    return objects


@dataclass(frozen=True)
class SyntheticTruth:
    """What synthetic clip `index` is made of, before compositing: each object's own RGB and its amodal matte
    (`rgbs`, `alphas`: depth order, front first), the background. `rgb` and `alpha` are the front object's, the
    only one of a one-object world."""

    rgbs: tuple[np.ndarray, ...]
    alphas: tuple[np.ndarray, ...]
    bg: np.ndarray
    captions: Captions
    scores: dict[str, str]

    @property
    def rgb(self) -> np.ndarray:
        return self.rgbs[0]

    @property
    def alpha(self) -> np.ndarray:
        return self.alphas[0]

    @property
    def num_objects(self) -> int:
        return len(self.alphas)


def _blend_caption(objects: list[_Object], backdrop: str) -> str:
    """Names every object, front first; one object gives the one-object world's caption."""
    front, *behind = objects
    text = f"A {front.colour} {front.shape} glides to the {front.direction}"
    for obj in behind:
        text += f" in front of a {obj.colour} {obj.shape} gliding to the {obj.direction}"
    return f"{text} over a {backdrop}."


def synthetic_truth(cfg: SyntheticConfig, index: int) -> SyntheticTruth:
    rng = np.random.default_rng([cfg.seed, index])
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    palette = list(PALETTES)[rng.integers(len(PALETTES))]
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    bg, bg_dir = _background(rng, cfg, palette, texture)
    front = _Object(shape, colour, *_foreground(rng, cfg, shape, colour))
    # The objects behind draw after everything a one-object clip draws: that clip stays bit-identical.
    objects = _objects(rng, cfg, front)
    captions = Captions(
        fg=front.caption,
        bg=f"A {texture} {palette} coloured pattern slowly drifts {bg_dir}.",
        blend=_blend_caption(objects, f"{texture} {palette} coloured pattern"),
        more_fg=tuple(obj.caption for obj in objects[1:]),
    )
    scores = {"shape": shape, "colour": colour, "palette": palette}
    for k, obj in enumerate(objects[1:], start=1):
        scores.update({f"shape_{k}": obj.shape, f"colour_{k}": obj.colour})
    return SyntheticTruth(tuple(o.rgb for o in objects), tuple(o.alpha for o in objects), bg, captions, scores)


def world_name(cfg: SyntheticConfig) -> str:
    """`synthetic_s{seed}`, plus `_o{K}` for K > 1 objects: a K-object clip differs from the one-object clip of the
    same seed and index, so its keys, ids and video names must not collide with it."""
    return f"synthetic_s{cfg.seed}" + (f"_o{cfg.num_objects}" if cfg.num_objects > 1 else "")


def synthetic_id(cfg: SyntheticConfig, index: int) -> str:
    """The source id of synthetic clip `index`: its generator settings, the same on every machine."""
    objects = f":objects={cfg.num_objects}" if cfg.num_objects > 1 else ""
    return f"synthetic:seed={cfg.seed}{objects}:index={index}"


def synthetic_clip(cfg: SyntheticConfig, index: int) -> LayeredClip:
    truth = synthetic_truth(cfg, index)
    layers = {"fg": over_grey(truth.rgb, truth.alpha), "alpha": truth.alpha, "bg": truth.bg,
              "blend": composite_layers(list(truth.rgbs), list(truth.alphas), truth.bg)}
    for k in range(1, truth.num_objects):
        layers[fg_name(k)] = over_grey(truth.rgbs[k], truth.alphas[k])
        layers[alpha_name(k)] = truth.alphas[k]
    if cfg.clip_height and cfg.clip_width:
        geometry = cover_geometry(cfg.height, cfg.width, cfg.clip_height, cfg.clip_width)
        layers = {name: resize_crop(layer, geometry) for name, layer in layers.items()}
    return LayeredClip.from_named_layers(
        layers,
        key=sample_key(world_name(cfg), index),
        captions=truth.captions,
        fps=cfg.fps,
        kind="video",
        origin="synthetic",
        source_id=synthetic_id(cfg, index),
        frame_range=(0, cfg.num_frames),
        scores=truth.scores,
        depth_order=tuple(range(truth.num_objects)),
    )
