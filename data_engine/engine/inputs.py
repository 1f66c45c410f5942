"""Sources as the engine sees them: each config entry's typed options and `Source` (data_engine/sources), the
list of work items (one per input, with a stable input id for resume), and the `source` stage that turns a work
item into rows on a Ray actor.

Source types (the registry: data_engine.sources.SOURCES):
    videos            raw videos: `input` is a folder, glob, list file, file or URI (or a list of those)
    synthetic_videos  the built-in synthetic videos: blends written as mp4 into the work dir, true layers known
    frames            folders of frames as raw videos (e.g. the official samples' `bl/`), encoded into the work dir
    synthetic_world   the synthetic world's layered clips, straight to shards
    official          the official sample layout (DAVIS / YouTube-VOS style folders)
    layered_images    folders of fg/alpha/bg(/blend) PNGs -> image samples
    copy_paste        fg+alpha of one clip over the bg of another, drawn from existing shards
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from data_engine.engine.config import ConfigError, EngineConfig, SourceSpec
from data_engine.sources import SOURCES, source_class
from data_engine.sources.base import Source, SourceError
from data_engine.stages.base import Resources, Row, Stage
from data_engine.typed_config import from_mapping

# The engine's fields of every row (data_engine/stages/base.py): the input it came from and its share of that input.
INPUT = "_input"
WEIGHT = "_w"


@dataclass(frozen=True)
class TypedSource:
    """A config entry's source class and its options, typed once when the run is planned."""

    index: int
    type: str
    cls: type[Source]
    opts: Any

    @property
    def label(self) -> str:
        return f"sources[{self.index}] ({self.type})"

    def open(self, work_dir: Path) -> Source:
        return self.cls.from_options(self.opts, work_dir)


def source_options(spec: SourceSpec, index: int) -> TypedSource:
    """The source class of a config entry and its typed options, or a one-line ConfigError."""
    where = f"sources[{index}] ({spec.type})"
    if spec.type not in SOURCES:
        raise ConfigError(f"{where}: unknown source type; valid: {sorted(SOURCES)}")
    cls = source_class(spec.type)
    opts = from_mapping(cls.Options, spec.options, where, typed_where=f"sources.{index}", error=ConfigError)
    for key in cls.required:
        if not getattr(opts, key):
            raise ConfigError(f"{where}: '{key}' is required")
    return TypedSource(index, spec.type, cls, opts)


def typed_sources(cfg: EngineConfig) -> tuple[TypedSource, ...]:
    return tuple(source_options(spec, index) for index, spec in enumerate(cfg.sources))


@dataclass(frozen=True)
class WorkItem:
    """One input: its source (index into the config's sources), the item string the source understands, and the
    input id its completion record is filed under."""

    source: int
    item: str
    input_id: str

    def row(self) -> Row:
        """The row this input enters the pipeline as (the source stage reads `source` and `item`)."""
        return {INPUT: self.input_id, WEIGHT: Fraction(1), "key": self.input_id, "source_id": self.input_id,
                "source": self.source, "item": self.item}


@dataclass(frozen=True)
class ListedSource:
    """A config entry's source with its inputs listed, and the row fields those inputs' rows carry."""

    label: str
    items: tuple[WorkItem, ...]
    fields: frozenset[str]


def list_sources(sources: tuple[TypedSource, ...], work_dir: Path) -> list[ListedSource]:
    """Every source with its inputs, in config order; cheap (lists files, never decodes or generates)."""
    listed = []
    for typed in sources:
        try:
            source = typed.open(work_dir)
            inputs = source.list_inputs()
        except (SourceError, FileNotFoundError) as exc:
            raise ConfigError(f"{typed.label}: {exc}") from exc
        items = tuple(WorkItem(typed.index, it, source.input_id(it)) for it in inputs)
        listed.append(ListedSource(typed.label, items, source.provides(inputs)))
    return listed


def work_items(cfg: EngineConfig) -> list[WorkItem]:
    """All inputs of all sources, in config order."""
    return [it for s in list_sources(typed_sources(cfg), cfg.work_dir) for it in s.items]


@dataclass(frozen=True)
class SourceStageOptions:
    sources: tuple[TypedSource, ...] = ()  # the config's sources, typed
    work_dir: str = ""  # where synthetic videos and encoded frame folders are written


class SourceStage(Stage):
    """The first stage: a work item -> the row(s) its source gives it: a video to split (video sources) or
    finished clips (layered ones). Its rows carry what their source declares (`Source.provides`): the plan
    starts each source's part of the stage contract there."""

    name = "source"
    default_resources = Resources(num_cpus=0.25, batch_size=1, retries=1)
    Options = SourceStageOptions
    reads = frozenset({"source", "item"})

    def setup(self) -> None:
        self.sources: dict[int, Source] = {}

    def _source(self, index: int) -> Source:
        """Opened on first use: a layered source may read a lot (copy-paste reads its shards)."""
        if index not in self.sources:
            self.sources[index] = self.opts.sources[index].open(Path(self.opts.work_dir))
        return self.sources[index]

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out: list[Row] = []
        for row in rows:
            try:
                out += [{**row, **fields} for fields in self._source(row["source"]).rows(row["item"])]
            except (SourceError, OSError, ValueError) as exc:
                out.append(self.failed({**row, "source_id": row[INPUT]}, exc))
        return out


def describe_sources(sources: tuple[TypedSource, ...]) -> list[str]:
    return [f"{s.type}: {asdict(s.opts)}" for s in sources]
