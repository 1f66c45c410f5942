"""The wheel, installed outside the checkout: `layerflow` runs its commands from an empty folder on the configs and
weights registry it installed, not the checkout's and not the editable install's.

The fresh environment sees the project's dependencies through a .pth line to this environment's site-packages
(installing torch and the rest again would take minutes); such a line adds that folder to sys.path without
running its .pth files, so the editable install there stays inert, and the fresh site-packages comes first.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("data_engine", "model", "trainer", "evaluation")
DATA_SUFFIXES = {".yaml", ".json", ".jsonl", ".txt"}
COMMANDS = ("dataset", "weights", "train", "precompute", "generate", "convert", "eval", "demo")
TINY_PROMPT = "A brown dog runs across the grass."  # fg-prompt of the installed configs/generate/tiny.yaml


def run(cmd: list, cwd: Path, env: dict | None = None, expect: int = 0, timeout: int = 120) -> str:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == expect, f"{cmd}: exit {result.returncode}, expected {expect}\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: a build writes egg-info and build/ beside the sources, and the checkout is shared.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in (*PACKAGES, "infra"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--wheel-dir", dist, src], cwd=src, timeout=300)
    (built,) = dist.glob("layerflow-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> dict:
    """A new venv with the wheel installed: its python, site-packages and an environment for its commands."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root)
    python = root / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root).strip())
    ours = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    (site / "_layerflow_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    weights = tmp_path_factory.mktemp("no_weights")
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1",
               LAYERFLOW_WEIGHTS=str(weights), COLUMNS="400")  # wide enough that rich never wraps a path
    # -I: the checkout's editable install is visible here as an installed layerflow 0.1.0; install over it.
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet", wheel],
        cwd=root, env=env, timeout=300)
    return {"python": python, "layerflow": root / "bin" / "layerflow", "site": site, "env": env,
            "weights": weights}


@pytest.fixture()
def empty(tmp_path) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


def test_the_wheel_holds_every_module_config_and_registry_file(wheel):
    """pyproject lists the packages by hand (infra/ is renamed layerflow): a package left out fails here."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts \
                    and (path.suffix == ".py" or path.suffix in DATA_SUFFIXES):
                expected.add(path.relative_to(REPO).as_posix())
    infra = REPO / "infra"
    expected |= {f"layerflow/{p.name}" for p in infra.glob("*.py")}
    for folder in ("configs", "weights"):
        expected |= {f"layerflow/{p.relative_to(infra).as_posix()}" for p in (infra / folder).rglob("*")
                     if p.suffix in DATA_SUFFIXES}
    assert {"layerflow/cli.py", "layerflow/configs/engine/perception_tiny.yaml", "layerflow/weights/model.yaml",
            "evaluation/prompts/default.jsonl"} <= expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"


def test_installed_command_runs_outside_the_checkout(fresh, empty):
    site, env, layerflow = fresh["site"], fresh["env"], fresh["layerflow"]
    where = run([fresh["python"], "-c", "import json, layerflow, data_engine, model, trainer, evaluation, "
                 "data_engine.defaults as d; print(json.dumps([m.__file__ for m in (layerflow, data_engine, model, "
                 "trainer, evaluation)] + [str(d.package_dir())]))"], cwd=empty, env=env)
    for path in json.loads(where.splitlines()[-1]):
        assert Path(path).is_relative_to(site), f"{path} is not from the fresh install in {site}"

    usage = run([layerflow, "--help"], cwd=empty, env=env)
    assert all(f"  {c} " in usage for c in COMMANDS) and "examples" in usage

    plan = run([layerflow, "dataset", "--dry-run", "--no-progress"], cwd=empty, env=env)
    assert str(site / "layerflow" / "configs" / "engine" / "perception_tiny.yaml") in plan
    assert "inputs:" in plan and "resources:" in plan
    assert not any(empty.iterdir()), "a dry run writes nothing"

    # No weights under LAYERFLOW_WEIGHTS: every registry entry is listed as missing, and the status is 1.
    check = run([layerflow, "weights", "check"], cwd=empty, env=env, expect=1)
    registry = [n for f in (REPO / "infra" / "weights").glob("*.yaml") for n in yaml.safe_load(f.read_text())]
    assert sum(line.startswith(f"{n}: missing") for n in registry for line in check.splitlines()) == len(registry)
    assert f"weights root: {fresh['weights']}" in check

    out = empty / "OUT"
    generated = run([layerflow, "generate", "--config", "tiny", "--preset", "tiny", "--model-dir", "none",
                     "--frames", "4", "--steps", "1", "--height", "32", "--width", "48", "--out", "OUT"],
                    cwd=empty, env=env)
    sample = out / "generate"
    assert f"outputs in {Path('OUT') / 'generate'}" in generated
    assert all((sample / f).is_file() for f in ("fg.mp4", "alpha.mp4", "bg.mp4", "blend.mp4", "fg_rgba.webm"))
    meta = json.loads((sample / "clip.json").read_text())
    assert meta["captions"]["fg"] == TINY_PROMPT and (meta["num_frames"], meta["height"], meta["width"]) == (4, 32, 48)
