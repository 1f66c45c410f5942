"""Where the installed defaults are: the engine, train and generate configs and the weights registry.

They are the project's settings rather than one package's, so they ship as package data of `layerflow` (the
`infra/` folder: the `layerflow` command, the demo, the configs and the registry), installed by `pip install` like
the code, so every command finds its defaults outside a checkout too. Every other package sits below `layerflow`
and must not import it: `find_spec` locates its folder by name without importing (running) any of it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "layerflow"


def package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {PACKAGE} package is not installed: run `pip install -e .` in the checkout "
                                  f"(or `make install`) so its configs and weights registry can be found")
    return Path(next(iter(spec.submodule_search_locations)))


def configs_dir(kind: str) -> Path:
    """The installed configs of one kind: engine, train or generate."""
    return package_dir() / "configs" / kind


def installed_configs(kind: str) -> list[str]:
    """The names of the installed configs of one kind, sorted."""
    return sorted(p.stem for p in configs_dir(kind).glob("*.yaml"))


def registry_dir() -> Path:
    return package_dir() / "weights"


def config_path(kind: str, value: str | Path) -> Path:
    """A config given as a YAML path, or as the name of an installed one (`tiny` -> configs/<kind>/tiny.yaml).

    A bare name is a path only where it names a file: a folder called `mulan` in the current directory must not
    hide the installed `mulan` config."""
    path = Path(value)
    if path.suffix or len(path.parts) > 1 or path.is_file():
        return path
    named = configs_dir(kind) / f"{path.name}.yaml"
    if not named.is_file():
        names = ", ".join(installed_configs(kind))
        raise FileNotFoundError(f"no {kind} config named {value!r}; installed: {names} (or give a YAML path)")
    return named
