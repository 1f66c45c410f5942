"""The stage protocol: one small class per pipeline step.

A stage declares its resources, loads its model once per actor in `setup()`, and maps a batch of rows to a batch
of rows. Per input row it may
- return it (possibly with new fields),
- drop it (filter: return nothing for it; say why with `self.drop(row, reason)` so stats can count it),
- fan it out (one clip -> one row per object, each with its own `key`),
- fail it: return `self.failed(row, reason_or_exception)` in its place; the engine sends it to quarantine with the
  stage name, error type and message. An exception escaping `process_batch` fails the whole batch: the engine
  retries it up to `Resources.retries` times, then quarantines each of its rows.

The stage contract: every stage declares the row fields it needs (`reads`) and the ones it adds (`writes`), and
every source the fields its rows start with (`Source.writes`, data_engine/sources/base.py). Before anything runs
(`--dry-run` included) the engine walks the chain: a stage that reads a field neither the sources nor an earlier
stage writes is a one-line config error naming the stage, the field and what writes it (plus the stage's
`hints[field]`, when it has advice), e.g.
    stages.compose reads 'bg', but neither sources[0] (synthetic_videos) nor an earlier stage writes it; 'bg' is
    written by stages synthetic_layers, inpaint
Optional fields (read with `row.get`) are not declared. A row that carries `clip` is finished: it goes around
every stage except those that set `accepts_finished` (they read the clip).

Rows are plain dicts. The fields of the chain:
    source, item int, str  the work item a row starts as (set by the engine, read by the `source` stage)
    key          str   sample key (no dots); `split` sets it to the clip key `{source}-{clip:05d}`; fan-out stages
                       derive `{clip key}-{obj:02d}`; `compose` appends `-00` to a row that was never fanned out
                       (all built by `data_engine.schema`: clip_key, object_key, sample_key)
    clip_key     str   the clip key as `split` set it (unchanged by fan-out)
    source_id    str   input the row came from (file path / URI / synthetic id)
    source_name  str   the key prefix a video source chose (optional; `split` derives one from `source_id`)
    known_layers  -    not a value in the row: the video at `source_id` has a layers sidecar
                       (data_engine/layers_sidecar.py), so its true layers are known; declared by the sources
                       whose videos have one, read by `synthetic_layers`
    captioned     -    not a value in the row: every finished clip of the source arrives with a caption for each
                       layer, so `caption` (keeping existing ones) has nothing to do for it (`has_work`)
    probe        dict  `VideoInfo` fields of the source video (set by `probe`)
    frame_indices list[int]  source frame index of each clip frame (set by `split`)
    geometry     Geometry  how `split` scaled and cropped the frames
    frame_range  (int, int)
    fps          float
    frames       uint8 [T, H, W, 3]  the clip as decoded (the blend)
    tags         list[{"tag": str, "score": float}]
    obj, tag, boxes, siblings   one object of a clip (set by `segment`; see segment_track.py)
    mask         uint8 [T, H, W]     one object's alpha (0..255, soft or binary)
    soft_alpha   uint8 [T, H, W]     optional soft alpha from the mask logits (`segment` with `soft_alpha: true`);
                                     `compose` prefers it to `mask` for the alpha layer and the fg
    objects      list[dict]  a grouped clip's objects (`layers.group_objects`; data_engine/stages/grouped.py),
                             front first after `layer_order`; the row's `mask` is then their union
    depth_order  tuple[int]  the grouped objects' ids, front first (set by `layer_order`)
    bg           uint8 [T, H, W, 3]  inpainted background
    fg           uint8 [T, H, W, 3]  object over mid-grey
    captions     {"fg", "bg", "blend"}
    scores       dict  per-stage scores and drop reasons (ends up in the sample's json)
    clip         LayeredClip  the finished sample (set by `compose`, or by a layered source)
    sample, meta the encoded WebDataset sample and its json (set by `encode`, the last stage)

Fields starting with "_" belong to the engine (input accounting, timings): build output rows from the input row
(`{**row, "mask": m}` or `dict(row, ...)`) so they travel along; a stage never reads or sets them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from data_engine.typed_config import from_mapping

Row = dict[str, Any]
FAILED = "_failed"
FINISHED = "clip"  # the field of a finished row (see the module docstring)
CAPTIONED = "captioned"  # declared by a source whose finished clips all carry every caption


class StageError(RuntimeError):
    """A row this stage cannot process; the message is the quarantine reason."""


@dataclass(frozen=True)
class Resources:
    """What one actor of the stage needs. The engine scales actor counts to the cluster's real resources."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1
    max_actors: int | None = None
    retries: int = 1


class Stage(ABC):
    """Base class of every engine stage; subclasses set `name` and `default_resources`.

    Options are declared, never parsed by hand: a stage that takes options sets `Options` to a dataclass, the
    engine checks a config's option keys and values against it before starting anything (`--dry-run` included),
    and the stage reads them typed from `self.opts`. A stage without `Options` accepts none. Subclasses do not
    override `__init__` (it would bypass that check): per-actor state belongs in `setup()`. So are its fields:
    `reads` and `writes` (the stage contract above).
    """

    name: ClassVar[str] = "stage"
    default_resources: ClassVar[Resources] = Resources()
    Options: ClassVar[type | None] = None
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset()
    hints: ClassVar[dict[str, str]] = {}  # field -> what to do when nothing before this stage writes it
    accepts_finished: ClassVar[bool] = False  # also takes finished rows (with `clip`) and reads them from it

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            raise TypeError(f"stage {cls.__name__} overrides __init__; declare `Options = <dataclass>` and load "
                            "state in setup() so its options are checked before the run starts")

    def __init__(self, resources: Resources | None = None, opts: Any = None, /, **options: Any) -> None:
        """`opts`: the typed options as the engine's plan made them (`parse_options`); or the raw `options`."""
        if opts is not None and options:
            raise TypeError(f"stage {self.name!r}: pass typed opts or raw options, not both")
        self.resources = resources or self.default_resources
        self.opts = opts if opts is not None else self.parse_options(options)
        self._ready = False

    @classmethod
    def parse_options(cls, options: dict[str, Any], where: str | None = None) -> Any:
        """`Options(**options)`, or a ValueError of one line naming the unknown keys and the valid ones, or the
        key whose value has the wrong type (`where`: how the config names the stage, `stages.<name>`)."""
        label = where or f"stage {cls.name!r}"
        if cls.Options is None:
            if options:
                raise ValueError(f"{label}: takes no options; got {sorted(options)}")
            return None
        return from_mapping(cls.Options, options, label, unknown="unknown option(s)",
                            typed_where=f"{where or 'stages.' + cls.name}.options")

    @classmethod
    def has_work(cls, opts: Any, fields: frozenset[str]) -> bool:
        """Whether rows that carry `fields` give this stage anything to do with these options. A stage no row
        gives work is left out of the run (data_engine/engine/contract.py), so its weights are not needed."""
        return cls.accepts_finished or FINISHED not in fields

    @classmethod
    def weights(cls, opts: Any) -> tuple[str, ...]:
        """Registry names (infra/weights/*.yaml) of the weights `setup()` will read with these options; the engine
        checks them all before it starts. Default: none."""
        return ()

    @classmethod
    def gpu_memory_gib(cls, opts: Any) -> float:
        """GPU memory (GiB) one actor needs with these options, weights and working set, at the models' real
        sizes; the engine packs actors onto GPUs by it. Default: none (a stage that puts nothing on a GPU)."""
        return 0.0

    def setup(self) -> None:
        """Load models once per actor. Default: nothing to load (an optional hook, so not abstract)."""
        return

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    @abstractmethod
    def process_batch(self, rows: list[Row]) -> list[Row]:
        """Map input rows to output rows (filter, fan-out and failure as described in the module docstring)."""

    @staticmethod
    def drop(row: Row, reason: str) -> None:
        """Record why a row (or one of its objects) was dropped; the engine aggregates `scores['dropped']`."""
        row.setdefault("scores", {}).setdefault("dropped", []).append(reason)

    def failed(self, row: Row, error: BaseException | str) -> Row:
        """A marker row the engine routes to quarantine instead of the next stage."""
        exc = error if isinstance(error, BaseException) else StageError(error)
        return {
            **{k: v for k, v in row.items() if k.startswith("_")},
            "key": row.get("key"),
            "source_id": row.get("source_id"),
            FAILED: {"stage": self.name, "error_type": type(exc).__name__, "message": str(exc)},
        }


def is_failed(row: Row) -> bool:
    return FAILED in row
