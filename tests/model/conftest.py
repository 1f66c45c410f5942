"""Fixtures of the model tests: the official-network and official-sampling fixtures in the shared folder."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sat_tiny(reference_dir: Path) -> Path:
    folder = reference_dir / "sat_tiny"
    if not (folder / "fixture.json").is_file():
        pytest.skip(f"the sat_tiny fixture is not at {folder}")
    return folder


@pytest.fixture(scope="session")
def sat_sampler(reference_dir: Path) -> Path:
    folder = reference_dir / "sat_sampler"
    if not (folder / "fixture.json").is_file():
        pytest.skip(f"the sat_sampler fixture is not at {folder}")
    return folder
