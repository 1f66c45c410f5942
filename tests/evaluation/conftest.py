"""Fixtures of the evaluation tests: the shared folder beside the repo, small synthetic videos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_engine.video_io import write_video

CAPTIONS = {"fg": "a cat", "bg": "a room", "blend": "a cat in a room"}


@pytest.fixture(scope="session")
def davis_root(official_samples: Path) -> Path:
    return official_samples / "DAVIS"


@pytest.fixture(scope="session")
def vbench_ref(reference_dir: Path) -> Path:
    return reference_dir / "vbench_ref"


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise) that block matching and RAFT can both follow."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = np.kron(small, np.ones((8, 8, 1), np.float32))
    k = np.ones(5, np.float32) / 5
    for axis in (0, 1):
        big = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), axis, big)
    return np.clip(big, 0, 255).astype(np.uint8)


def translating(num_frames: int, height: int, width: int, step: int, seed: int = 0) -> np.ndarray:
    """Frames of a window sliding right over a larger texture by `step` pixels per frame."""
    tex = textured(height + 16, width + step * num_frames + 16, seed)
    return np.stack([tex[8:8 + height, 8 + i * step: 8 + i * step + width] for i in range(num_frames)])


@pytest.fixture(scope="session")
def make_translating():
    return translating


def write_layered_samples(root: Path, n: int, frames: int = 6, size: int = 128) -> None:
    """`n` sample folders `<root>/s<i>/{fg,bg,blend,alpha}.mp4` + clip.json (what `make generate` writes): one
    random still frame repeated, a square matte."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"s{i}"
        video = np.repeat(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8), frames, axis=0)
        alpha = np.zeros((frames, size, size), np.uint8)
        alpha[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
        for name in ("fg", "bg", "blend"):
            write_video(folder / f"{name}.mp4", video, 8.0)
        write_video(folder / "alpha.mp4", alpha, 8.0, lossless=True)
        (folder / "clip.json").write_text(json.dumps({"captions": CAPTIONS}))


@pytest.fixture(scope="session")
def make_layered_samples():
    return write_layered_samples


def write_davis(root: Path, sequences: tuple[str, ...] = ("seq",), frames: int = 3, size: int = 64) -> Path:
    """A DAVIS-layout dataset `<root>/480p/<seq>/{fg,mask,bg,bl}/NNNN.png` + `480p/meta_test.json`, the layout
    of the official samples. The blend is fg over bg through a hard square matte; returns `<root>`."""
    rng = np.random.default_rng(1)
    videos = {}
    for seq in sequences:
        bg = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        fg = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        mask = np.zeros((frames, size, size), np.uint8)
        mask[:, size // 4: size // 2, size // 4: size // 2] = 255
        blend = np.where(mask[..., None] == 255, fg, bg)
        for name, stack in (("fg", fg), ("mask", mask), ("bg", bg), ("bl", blend)):
            folder = root / "480p" / seq / name
            folder.mkdir(parents=True)
            for t, frame in enumerate(stack):
                Image.fromarray(frame).save(folder / f"{t:04d}.png")
        videos[seq] = {"fg_prompt": CAPTIONS["fg"], "bg_prompt": CAPTIONS["bg"], "bl_prompt": CAPTIONS["blend"]}
    (root / "480p" / "meta_test.json").write_text(json.dumps({"videos": videos}))
    return root


@pytest.fixture(scope="session")
def make_davis():
    return write_davis
