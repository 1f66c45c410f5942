"""Procedural layered clips: a moving foreground object with a soft, anti-aliased alpha over a textured, panning
background, with template captions. Deterministic from (seed, index); the demo's built-in input.

Shared by the sources (synthetic clips, and synthetic videos whose blends the video stages decode) and the
`synthetic_layers` stage, which regenerates a synthetic video's true layers from its sidecar.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.schema import Captions, LayeredClip, composite, over_grey, sample_key

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


@dataclass(frozen=True)
class SyntheticConfig:
    num_clips: int = 8
    seed: int = 0
    num_frames: int = 16
    height: int = 480
    width: int = 720
    fps: float = 8.0
    edge_softness: float = 1.5  # px: the anti-aliased ramp of the alpha edge (fractional alpha lives here)


def _direction(vx: float, vy: float) -> str:
    horiz = "right" if vx > 0 else "left"
    vert = "down" if vy > 0 else "up"
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
class SyntheticTruth:
    """What synthetic clip `index` is made of, before compositing: the object's own RGB, its matte, the background."""

    rgb: np.ndarray
    alpha: np.ndarray
    bg: np.ndarray
    captions: Captions
    scores: dict[str, str]


def synthetic_truth(cfg: SyntheticConfig, index: int) -> SyntheticTruth:
    rng = np.random.default_rng([cfg.seed, index])
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    palette = list(PALETTES)[rng.integers(len(PALETTES))]
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    bg, bg_dir = _background(rng, cfg, palette, texture)
    rgb, alpha, fg_dir = _foreground(rng, cfg, shape, colour)
    captions = Captions(
        fg=f"A {colour} {shape} glides to the {fg_dir} against a plain backdrop.",
        bg=f"A {texture} {palette} coloured pattern slowly drifts {bg_dir}.",
        blend=f"A {colour} {shape} glides to the {fg_dir} over a {texture} {palette} coloured pattern.",
    )
    return SyntheticTruth(rgb, alpha, bg, captions, {"shape": shape, "colour": colour, "palette": palette})


def synthetic_id(cfg: SyntheticConfig, index: int) -> str:
    """The source id of synthetic clip `index`: its generator settings, the same on every machine."""
    return f"synthetic:seed={cfg.seed}:index={index}"


def synthetic_clip(cfg: SyntheticConfig, index: int) -> LayeredClip:
    truth = synthetic_truth(cfg, index)
    return LayeredClip(
        key=sample_key(f"synthetic_s{cfg.seed}", index),
        fg=over_grey(truth.rgb, truth.alpha),
        alpha=truth.alpha,
        bg=truth.bg,
        blend=composite(truth.rgb, truth.alpha, truth.bg),
        captions=truth.captions,
        fps=cfg.fps,
        kind="video",
        origin="synthetic",
        source_id=synthetic_id(cfg, index),
        frame_range=(0, cfg.num_frames),
        scores=truth.scores,
    )
