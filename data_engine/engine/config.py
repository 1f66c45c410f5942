"""The engine config: YAML -> typed dataclasses, with `--set a.b=c` overrides and one-line errors.

    run:      where to write, cluster, limits       (RunConfig)
    clip:     the clip policy of probe and split    (data_engine.clip_policy.ClipPolicy)
    layers:   one sample per object, or a clip's objects as one K-layer sample (data_engine.layers_policy)
    sources:  list of {type: <source type>, ...options}   (see data_engine.sources.SOURCES)
    stages:   list of stage names or {name, num_cpus, num_gpus, batch_size, max_actors, retries, options: {...}}

`--set stages.<name>.<field>=<value>` addresses a stage by name, `--set sources.<index>.<field>=<value>` a source
by position; values are parsed as YAML (`0.5`, `true`, `[a, b]`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_engine.clip_policy import ClipPolicy
from data_engine.defaults import configs_dir
from data_engine.layers_policy import LayersPolicy
from data_engine.sources import SOURCES, source_class
from data_engine.stages.base import Resources, Stage
from data_engine.typed_config import from_mapping

DEFAULT_CONFIG = configs_dir("engine") / "perception_tiny.yaml"
SECTIONS = ("run", "clip", "layers", "sources", "stages")


class ConfigError(ValueError):
    """A config the engine cannot run; the message names the key and how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    out: str = "outputs/dataset"
    work_dir: str | None = None  # generated inputs (synthetic videos); default <out>/_work
    limit: int | None = None  # at most this many inputs not yet done
    ray_address: str | None = None  # a running cluster ("auto", "ray://host:10001"); RAY_ADDRESS wins when set
    num_cpus: float | None = None  # local Ray only: CPUs to give the embedded instance (default: all)
    num_gpus: float | None = None
    maxcount: int = 100  # samples per shard
    maxsize: float = 1e9  # bytes per shard
    retry_quarantined: bool = False  # redo inputs whose record says some of their clips failed
    fuse: bool = True  # consecutive light CPU stages share one actor pool (see data_engine/engine/resources.py)
    # Write samples in the order of their inputs (Ray Data's preserve_order), so that one config gives the same
    # shards, sample for sample in the same order, and a trainer reading them the same model; off, samples are
    # written as they finish, which keeps a cluster's slow inputs from holding back the rest.
    deterministic_order: bool = False
    # Check every model's weights under LAYERFLOW_WEIGHTS on the driver before starting; turn off only for a
    # cluster whose workers hold weights the driver does not see.
    check_weights: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ValueError(f"run.limit (--limit) must be a whole number of inputs >= 1, got {self.limit!r}; "
                             "leave it out to process every input, or use --dry-run to start nothing")
        for key in ("maxcount", "maxsize"):
            if getattr(self, key) <= 0:
                raise ValueError(f"run.{key} must be > 0, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class SourceSpec:
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    name: str
    resources: dict[str, Any] = field(default_factory=dict)  # the Resources fields the config sets (checked)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedStage:
    """A stage of the run, typed once: its class, its resources (defaults + config) and its typed options, which
    the checks, the folder's record and the Ray actors all use."""

    name: str
    cls: type[Stage]
    resources: Resources
    opts: Any  # an instance of `cls.Options` (None for a stage without)
    given: dict[str, Any]  # the options as the config gives them (engine_config.json records these)


@dataclass(frozen=True)
class EngineConfig:
    run: RunConfig = RunConfig()
    clip: ClipPolicy = ClipPolicy()
    layers: LayersPolicy = LayersPolicy()
    sources: tuple[SourceSpec, ...] = ()
    stages: tuple[StageSpec, ...] = ()
    path: str | None = None

    @property
    def out(self) -> Path:
        return Path(self.run.out)

    @property
    def work_dir(self) -> Path:
        return Path(self.run.work_dir) if self.run.work_dir else self.out / "_work"


def _stage_spec(entry: Any, where: str) -> StageSpec:
    if isinstance(entry, str):
        return StageSpec(entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(f"{where}: a stage is a name or a mapping with 'name', got {entry!r}")
    name, options = entry["name"], entry.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where} ({name}): options must be a mapping, got {options!r}")
    from_mapping(Resources, entry, f"{where} ({name})", typed_where=f"stages.{name}", taken=("name", "options"),
                 error=ConfigError)
    return StageSpec(str(name), {k: v for k, v in entry.items() if k not in ("name", "options")}, dict(options))


def _source_spec(entry: Any, where: str) -> SourceSpec:
    if not isinstance(entry, dict) or "type" not in entry:
        raise ConfigError(f"{where}: a source is a mapping with 'type' (videos, synthetic_videos, ...), got {entry!r}")
    return SourceSpec(str(entry["type"]), {k: v for k, v in entry.items() if k != "type"})


def parse_config(raw: dict[str, Any], path: str | None = None) -> EngineConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping with {list(SECTIONS)}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path or 'config'}: unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    sources = raw.get("sources") or []
    stages = raw.get("stages") or []
    if not isinstance(sources, list) or not isinstance(stages, list):
        raise ConfigError(f"{path or 'config'}: 'sources' and 'stages' must be lists")
    stage_specs = tuple(_stage_spec(e, f"stages[{i}]") for i, e in enumerate(stages))
    names = [s.name for s in stage_specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"stages: {dupes} listed twice; each stage appears once")
    return EngineConfig(
        run=from_mapping(RunConfig, raw.get("run"), "run", error=ConfigError),
        clip=from_mapping(ClipPolicy, raw.get("clip"), "clip", error=ConfigError),
        layers=from_mapping(LayersPolicy, raw.get("layers"), "layers", error=ConfigError),
        sources=tuple(_source_spec(e, f"sources[{i}]") for i, e in enumerate(sources)),
        stages=stage_specs,
        path=path,
    )


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` to the raw config dict (in place)."""
    dotted, sep, value_text = assignment.partition("=")
    if not sep or not dotted:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set stages.split.num_cpus=0.5")
    parts = dotted.strip().split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"--set {dotted}: unknown section {parts[0]!r}; valid: {list(SECTIONS)}")
    value = yaml.safe_load(value_text)
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, dict):
            default: Any = [] if depth == 0 and part in ("sources", "stages") else {}
            node = node.setdefault(part, default)
        elif isinstance(node, list):
            node = _list_item(node, part, parts[depth - 1], dotted)
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:depth])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        raise ConfigError(f"--set {dotted}: name a field of one entry, e.g. {dotted}.<name>.<field>")
    if not isinstance(node, dict):
        raise ConfigError(f"--set {dotted}: {'.'.join(parts[:-1])} is a value, not a section")
    node[last] = value


def _list_item(items: list[Any], part: str, section: str, dotted: str) -> dict[str, Any]:
    if section == "stages":
        for i, entry in enumerate(items):
            if entry == part:
                items[i] = {"name": part}
                return items[i]
            if isinstance(entry, dict) and entry.get("name") == part:
                return entry
        names = [e if isinstance(e, str) else e.get("name") for e in items]
        raise ConfigError(f"--set {dotted}: no stage named {part!r} in the config; stages: {names}")
    if part.isdigit() and int(part) < len(items) and isinstance(items[int(part)], dict):
        return items[int(part)]
    raise ConfigError(f"--set {dotted}: {section} has entries 0..{len(items) - 1}; use the entry's index")


def input_sources(sources: Any, input: str | list[str]) -> list[dict[str, Any]]:
    """`--input`: a config whose one source reads a dataset folder (mulan, image_matting, video_matting, official,
    layered_images, copy_paste, frames) keeps that source, pointed at `input` (its first required option: root,
    annotations, shards, input); any other config gets a `videos` source reading `input`."""
    if isinstance(sources, list) and len(sources) == 1 and isinstance(sources[0], dict):
        kind = sources[0].get("type")
        if kind in SOURCES and kind != "videos" and source_class(kind).required:
            return [{**sources[0], source_class(kind).required[0]: input}]
    return [{"type": "videos", "input": input}]


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    input: str | list[str] | None = None,
    out: str | None = None,
    limit: int | None = None,
) -> EngineConfig:
    """Read a YAML config (default: the installed perception_tiny.yaml), apply `--set` overrides and CLI shortcuts."""
    cfg_path = Path(path) if path else DEFAULT_CONFIG
    if not cfg_path.is_file():
        raise ConfigError(f"config {cfg_path} not found; the installed ones are in {DEFAULT_CONFIG.parent}")
    try:
        raw = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if input is not None:
        raw["sources"] = input_sources(raw.get("sources"), input)
    for assignment in overrides:
        apply_override(raw, assignment)
    cfg = parse_config(raw, str(cfg_path))
    run_changes = {k: v for k, v in (("out", out), ("limit", limit)) if v is not None}
    try:
        return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run_changes)) if run_changes else cfg
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
