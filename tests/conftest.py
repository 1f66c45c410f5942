"""Shared fixtures: the repo root and the read-only sample data beside it (`../shared`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERFLOW_SHARED", REPO.parent / "shared"))


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
