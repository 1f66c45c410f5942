"""Fixtures of the evaluation tests: the shared folder beside the repo, small synthetic videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
