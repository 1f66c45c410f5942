"""The stage contract, checked when the run is planned (`--dry-run` included): every field a stage reads is
written by the sources or by a stage before it (data_engine/stages/base.py describes the fields).

Rows of all unfinished sources (videos) go down one chain, so a field is there when any of those sources writes
it: a source whose inputs differ (some videos have known layers, some not) is checked per row when it runs.
Finished rows (a layered source's `clip`) need nothing more of the chain; nor do rows once a stage has finished
them, since every stage that still takes them reads the clip.

The same walk finds the idle stages: those no source's rows give work (`Stage.has_work`), such as inpainting
for a layout that ships its backgrounds. The run leaves them out, so they load no model and need no weights.
"""
from __future__ import annotations

from typing import Any

from data_engine.engine.config import ConfigError
from data_engine.engine.inputs import ListedSource
from data_engine.sources import SOURCES, source_class
from data_engine.stages import STAGES, stage_class
from data_engine.stages.base import FINISHED, Stage


def check_chain(stages: list[tuple[str, type[Stage]]], sources: list[ListedSource]) -> None:
    """`stages`: the chain after the source stage, in order; one ConfigError line for the first unmet read."""
    unfinished = [s for s in sources if FINISHED not in s.fields]
    fields = frozenset().union(*(s.fields for s in unfinished))
    for name, cls in stages:
        if not unfinished or FINISHED in fields:
            return
        missing = sorted(cls.reads - fields)
        if missing:
            field = missing[0]
            hint = cls.hints.get(field)
            raise ConfigError(
                f"stages.{name} reads {field!r}, but neither {', '.join(s.label for s in unfinished)} nor an "
                f"earlier stage writes it; {writers(field, stages)}" + (f"; {hint}" if hint else "")
            )
        fields |= cls.writes


def idle_stages(stages: list[tuple[str, type[Stage]]], options: dict[str, Any],
                sources: list[ListedSource]) -> list[str]:
    """`stages`: the chain after the source stage, in order, with their typed `options` (the plan's); the names
    of those that no row of these sources will give work."""
    flowing = [s.fields for s in sources if FINISHED not in s.fields]
    unfinished = frozenset().union(*flowing) if flowing else None  # the fields of rows not finished yet
    finished = [s.fields for s in sources if FINISHED in s.fields]
    idle = []
    for name, cls in stages:
        groups = finished + ([unfinished] if unfinished is not None else [])
        if not any(cls.has_work(options[name], fields) for fields in groups):
            idle.append(name)
        if unfinished is not None:
            unfinished |= cls.writes
            if FINISHED in unfinished:  # this stage finishes them: from here on they are finished rows
                finished.append(unfinished)
                unfinished = None
    return idle


def writers(field: str, chain: list[tuple[str, type[Stage]]]) -> str:
    """Which registered (or listed) stages and which source types write `field`, as the fix to suggest."""
    classes = {name: stage_class(name) for name in STAGES} | dict(chain)
    stages = [name for name, cls in classes.items() if field in cls.writes]
    sources = [kind for kind in SOURCES if field in source_class(kind).writes]
    parts = ([f"stage{'s' if len(stages) > 1 else ''} {', '.join(stages)}"] if stages else []) + (
        [f"source{'s' if len(sources) > 1 else ''} {', '.join(sources)}"] if sources else [])
    return f"{field!r} is written by {' and '.join(parts)}" if parts else f"no stage or source writes {field!r}"
