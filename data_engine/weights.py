"""The weights registry: every model we load, its hub id, and the files it needs under LAYERFLOW_WEIGHTS.

Entries live in `infra/weights/*.yaml` (one file per area: model, perception, evaluation), each a mapping
`name: {hub_id, subdir, files: [...], licence, used_by}`. Nothing here downloads; `download()` is the one
explicit, user-invoked exception.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REGISTRY_DIR = Path(__file__).resolve().parents[1] / "infra" / "weights"
ENV_VAR = "LAYERFLOW_WEIGHTS"
DEFAULT_ROOT = Path.home() / ".cache" / "layerflow" / "weights"


class MissingWeightsError(FileNotFoundError):
    """A weight file is not where the registry expects it; the message says which, where, and how to fetch it."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    hub_id: str
    subdir: str
    files: tuple[str, ...] = ()
    licence: str = ""
    used_by: str = ""
    revision: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def weights_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser()


def load_registry(registry_dir: Path = REGISTRY_DIR) -> dict[str, WeightSpec]:
    specs: dict[str, WeightSpec] = {}
    for path in sorted(registry_dir.glob("*.yaml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if name in specs:
                raise ValueError(f"weights registry: {name!r} is defined twice (second time in {path})")
            known = {"hub_id", "subdir", "files", "licence", "used_by", "revision"}
            specs[name] = WeightSpec(
                name=name,
                hub_id=entry["hub_id"],
                subdir=entry.get("subdir", name),
                files=tuple(entry.get("files", ())),
                licence=entry.get("licence", ""),
                used_by=entry.get("used_by", ""),
                revision=entry.get("revision"),
                extra={k: v for k, v in entry.items() if k not in known},
            )
    return specs


def spec(name: str) -> WeightSpec:
    registry = load_registry()
    if name not in registry:
        raise KeyError(f"unknown model {name!r} in the weights registry; known: {', '.join(sorted(registry))}")
    return registry[name]


def model_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    return weights_root(root) / spec(name).subdir


def missing_files(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    s, base = spec(name), model_dir(name, root)
    wanted = s.files or ("",)
    return [base / f for f in wanted if not (base / f).exists()]


def resolve(name: str, filename: str | None = None, root: str | os.PathLike | None = None) -> Path:
    """Path of a model's directory (or one of its files); raises MissingWeightsError in one line if absent."""
    s = spec(name)
    base = model_dir(name, root)
    target = base / filename if filename else base
    missing = [target] if filename else missing_files(name, root)
    if not target.exists() or missing:
        where = missing[0] if missing else target
        raise MissingWeightsError(
            f"{name}: missing weights at {where} (hub id {s.hub_id}); "
            f"run `layerflow weights download {name}` or set {ENV_VAR} to the folder that holds {s.subdir}/"
        )
    return target
