"""The config an output folder was made with: recorded before its first sample, checked on every resume.

`<out>/engine_config.json` holds the engine version, the config file, the resolved config (after `--set`,
`--input`, `--out`, with every default filled in) and its sample settings: the values that shape samples, by the
keys `--set` takes. A resume whose sample settings differ is refused before any work, naming the keys: one folder
would otherwise hold two formats, and a clip key (`{source}-{clip:05d}`) names other frames under another clip
policy, so an old sample could stand in for a new one. The `run:` section and the stages' resources change no
sample (where and how fast it runs, how many inputs, shard sizes, retries), so they may differ.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from data_engine.engine.config import ConfigError, EngineConfig, PlannedStage
from data_engine.engine.inputs import TypedSource
from data_engine.engine.state import RECORDS_DIR
from data_engine.schema import ENGINE_VERSION
from data_engine.shards import QUARANTINE_LOG, complete_shards

FOLDER_CONFIG_NAME = "engine_config.json"
UNSET = object()  # a key one side lacks


def _json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists), so a recorded setting compares equal to a live one."""
    return json.loads(json.dumps(value, default=str))


def sample_settings(cfg: EngineConfig, sources: tuple[TypedSource, ...], stages: list[PlannedStage]) -> dict[str, Any]:
    """{--set key: value} of everything that shapes samples. `stages`: the run's, typed by its plan; a stage's
    share of the clip: and layers: sections counts under those sections only, unless the stage's own options
    override it."""
    settings: dict[str, Any] = {"engine_version": ENGINE_VERSION}
    sections = {"clip": asdict(cfg.clip), "layers": asdict(cfg.layers)}
    for section, values in sections.items():
        settings.update({f"{section}.{k}": v for k, v in values.items()})
    for source in sources:
        settings[f"sources.{source.index}.type"] = source.type
        settings.update({f"sources.{source.index}.{k}": v for k, v in asdict(source.opts).items()})
    stages = [s for s in stages if s.name != "source"]  # the source stage reads the sources above
    settings["stages"] = [s.name for s in stages]
    shared = {**sections["clip"], **sections["layers"]}
    for s in stages:
        typed = asdict(s.opts) if s.opts is not None else {}
        settings.update({f"stages.{s.name}.options.{k}": v for k, v in typed.items()
                         if not (k in shared and v == shared[k])})
    return _json(settings)


def folder_record(cfg: EngineConfig, sources: tuple[TypedSource, ...], stages: list[PlannedStage],
                  settings: dict[str, Any]) -> dict[str, Any]:
    """What `<out>/engine_config.json` holds for a run of `cfg`."""
    resolved = {
        "run": asdict(cfg.run), "clip": asdict(cfg.clip), "layers": asdict(cfg.layers),
        "sources": [{"type": s.type, **asdict(s.opts)} for s in sources],
        "stages": [{"name": s.name, **asdict(s.resources), "options": s.given} for s in stages if s.name != "source"],
    }
    return _json({"engine_version": ENGINE_VERSION, "config": cfg.path, "resolved": resolved,
                  "sample_settings": settings})


def holds_work(out: Path) -> bool:
    """Whether an earlier run left anything a resume builds on: input records, complete shards, quarantine."""
    return (any((out / RECORDS_DIR).glob("*.json")) or bool(complete_shards(out))
            or (out / QUARANTINE_LOG).is_file())


def read_record(out: Path) -> dict[str, Any] | None:
    path = out / FOLDER_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); it records what made {out}, so it cannot be resumed: "
                          "pass another --out to start a new folder") from None


def _short(value: Any) -> str:
    text = "unset" if value is UNSET else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(out: Path, settings: dict[str, Any]) -> None:
    """Refuse, in one line, a run into a folder that holds work made with other sample settings."""
    if not holds_work(out):
        return
    record = read_record(out)
    if record is None:
        raise ConfigError(f"{out} holds a dataset but no {FOLDER_CONFIG_NAME} (it was made before LayerFlow recorded "
                          "the config of a folder), so a resume cannot be checked against it; pass another --out "
                          "to start a new folder")
    made = record["sample_settings"]
    keys = [*made, *(k for k in settings if k not in made)]
    differ = [f"{k} {_short(made.get(k, UNSET))} -> {_short(settings.get(k, UNSET))}"
              for k in keys if made.get(k, UNSET) != settings.get(k, UNSET)]
    if differ:
        raise ConfigError(f"{out} was made with another config ({'; '.join(differ)}); resume it with the config "
                          f"recorded in {out / FOLDER_CONFIG_NAME} ({record.get('config')}), or pass another --out "
                          "to start a new folder")


def write_record(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The folder's record: kept where earlier work is on disk (check_resume passed, so it matches), else
    written (a folder that holds nothing yet takes the config of the run that fills it)."""
    kept = read_record(out) if holds_work(out) else None
    if kept is not None:
        return kept
    out.mkdir(parents=True, exist_ok=True)
    path = out / FOLDER_CONFIG_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**record, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    os.replace(tmp, path)
    return record
