"""Shared fixtures: the repo root and the read-only sample data beside it (`../shared`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERFLOW_SHARED", REPO.parent / "shared"))
# The release-layout weight builders are test code, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def official_samples() -> Path:
    root = SHARED / "samples" / "layerflow_official"
    if not root.is_dir():
        pytest.skip(f"official samples not found at {root} (set LAYERFLOW_SHARED to the shared folder)")
    return root


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    root = SHARED / "reference"
    if not root.is_dir():
        pytest.skip(f"reference fixtures not found at {root} (set LAYERFLOW_SHARED to the shared folder)")
    return root


@pytest.fixture(scope="session")
def release_weights(tmp_path_factory) -> Path:
    """A LAYERFLOW_WEIGHTS folder holding every registry entry in its release's own layout (tiny configs)."""
    from release_layout import build_all

    return build_all(tmp_path_factory.mktemp("release_weights"))
