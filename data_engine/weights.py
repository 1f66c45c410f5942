"""The weights registry: every model we load, its hub id, and the files it needs under LAYERFLOW_WEIGHTS.

Entries live in `infra/weights/*.yaml`, installed as package data of `layerflow` (one file per area: model,
perception, evaluation), each a mapping `name: {hub_id, subdir, files: [...], licence, used_by}` plus how the
release is fetched:
- `snapshot: true`: the whole hub repository (its `files` are the ones loaders open first; the rest, such as
  weight shards, come with it);
- `url`: a direct link to the file, or a folder URL ending in `/` that each of `files` is appended to;
  `archive: zip` when each file is published zipped (`<file>.zip`, as pytorchcv's releases);
- otherwise: exactly `files`, each from the hub repository `hub_id`.
Nothing here downloads; `data_engine.weights_download` is the one explicit, user-invoked exception.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from data_engine.defaults import registry_dir

REGISTRY_DIR = registry_dir()
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
    snapshot: bool = False
    url: str | None = None
    archive: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def weights_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser()


def load_registry(registry_dir: Path = REGISTRY_DIR) -> dict[str, WeightSpec]:
    specs: dict[str, WeightSpec] = {}
    for path in sorted(registry_dir.glob("*.yaml")):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if name in specs:
                raise ValueError(f"weights registry: {name!r} is defined twice (second time in {path})")
            known = {"hub_id", "subdir", "files", "licence", "used_by", "revision", "snapshot", "url", "archive"}
            specs[name] = WeightSpec(
                name=name,
                hub_id=entry["hub_id"],
                subdir=entry.get("subdir", name),
                files=tuple(entry.get("files", ())),
                licence=entry.get("licence", ""),
                used_by=entry.get("used_by", ""),
                revision=entry.get("revision"),
                snapshot=bool(entry.get("snapshot", False)),
                url=entry.get("url"),
                archive=entry.get("archive"),
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


def missing_files(name: str, root: str | os.PathLike | None = None, extra: tuple[str, ...] = ()) -> list[Path]:
    """The registry's files of `name` (and any `extra` ones a loader names) that are not on disk.

    The one availability test: `layerflow weights check` reports it and `resolve` (every loader) enforces it.
    """
    s, base = spec(name), model_dir(name, root)
    wanted = dict.fromkeys((*s.files, *extra)) or {"": None}
    for index in [f for f in wanted if f.endswith(".index.json") and (base / f).is_file()]:
        wanted.update(dict.fromkeys(shard_files(base, index)))
    return [base / f for f in wanted if not (base / f).exists()]


def shard_files(base: Path, index: str) -> list[str]:
    """The weight files a sharded checkpoint's index names, relative to `base` like the index itself."""
    try:
        weight_map = json.loads((base / index).read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MissingWeightsError(
            f"{base / index}: not a sharded-checkpoint index (bad {exc}); download the model again") from None
    folder = PurePosixPath(index).parent
    return sorted({str(folder / f) for f in weight_map.values()})


def resolve(name: str, filename: str | None = None, root: str | os.PathLike | None = None) -> Path:
    """Path of a model's directory (or one of its files); raises MissingWeightsError in one line if absent."""
    s = spec(name)
    missing = missing_files(name, root, (filename,) if filename else ())
    if missing:
        raise MissingWeightsError(
            f"{name}: missing weights at {missing[0]} (hub id {s.hub_id}); "
            f"run `layerflow weights download {name}` or set {ENV_VAR} to the folder that holds {s.subdir}/"
        )
    base = model_dir(name, root)
    return base / filename if filename else base
