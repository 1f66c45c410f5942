"""What every source shares: typed options, a cheap list of inputs, the row fields it writes, one error type.

A source is one entry of the engine config's `sources:` list. `list_inputs()` enumerates its work items (strings;
listing never decodes or generates), `input_id(item)` names an item's completion record (stable across runs and
machines, so resume finds it), and `rows(item)` gives the fields of the row(s) the engine's first stage emits for
it. There are two kinds:
- a video source points each row at a video (`source_id`); the video stages (probe, split, ...) make its clips;
- a layered source (`LayeredSource`) loads finished clips (`clip`), which go around every stage that makes layers.
`writes` declares the fields every row of the source carries, the start of the stage contract
(data_engine/stages/base.py) that the engine checks before it runs anything.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from data_engine.schema import LayeredClip
from data_engine.video_io import VideoDecodeError, read_image, read_image_rgba

# Still images a source reads: the frame formats, WebP (LAION and other web sets ship it) and TIFF (16-bit mattes).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


class SourceError(ValueError):
    """An input that cannot become a layered clip; the message names the file and the reason."""


def read_source_image(path: Path, grey: bool = False) -> np.ndarray:
    """An image of a source's input as uint8 [H, W, 3] ([H, W] grey); a missing or unreadable one is a SourceError."""
    try:
        return read_image(path, grey=grey)
    except VideoDecodeError as exc:
        raise SourceError(str(exc)) from None


def read_source_rgba(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An image's colour uint8 [H, W, 3] and the alpha it carries (None when it carries none); a SourceError for a
    missing or unreadable one."""
    try:
        return read_image_rgba(path)
    except VideoDecodeError as exc:
        raise SourceError(str(exc)) from None


def require_folder(path: Path, what: str) -> None:
    """A source's input folder: a missing one is said to be missing, before any talk of what it should hold."""
    if not path.exists():
        raise SourceError(f"{path}: no such folder (the {what} to read)")
    if not path.is_dir():
        raise SourceError(f"{path}: a file, not a folder (the {what} to read)")


def read_optional_json(path: Path):
    """A source's optional JSON side file (e.g. captions.json): its content, None when absent; bad JSON is a
    SourceError naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not JSON ({exc})") from None


@dataclass(frozen=True)
class Failure:
    input: str
    stage: str
    error: BaseException


class Source(ABC):
    """A source: `list_inputs()` enumerates work items (strings), `rows(item)` turns one into row fields.

    Config options are declared, never parsed by hand: `Options` is a dataclass of the entry's keys, `required`
    names those that must be set, and `from_options` builds the source from them.
    """

    name: ClassVar[str] = "source"
    Options: ClassVar[type]
    required: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[frozenset[str]] = frozenset({"key", "source_id"})

    @classmethod
    @abstractmethod
    def from_options(cls, opts: Any, work_dir: Path) -> Source:
        """The source of a config entry; `work_dir` is where it may write generated inputs."""

    @abstractmethod
    def list_inputs(self) -> list[str]: ...

    def input_id(self, item: str) -> str:
        return item

    def provides(self, items: list[str]) -> frozenset[str]:
        """The fields rows of these items may carry: `writes`, or more where some items bring more."""
        return self.writes

    @abstractmethod
    def rows(self, item: str) -> list[dict[str, Any]]:
        """The fields of the row(s) of one item; raises SourceError (or OSError / ValueError) for a bad one."""


class LayeredSource(Source):
    """A source of finished clips (no perception model needed): synthetic, official import, copy-paste, images."""

    writes = frozenset({"key", "source_id", "clip"})

    @abstractmethod
    def load(self, item: str) -> list[LayeredClip]: ...

    def rows(self, item: str) -> list[dict[str, Any]]:
        return [{"key": c.key, "source_id": c.source_id, "clip": c} for c in self.load(item)]

    def iter_clips(self, limit: int | None = None) -> Iterator[LayeredClip | Failure]:
        """Clips in input order; a failing input yields a Failure instead of stopping the run."""
        produced = 0
        for item in self.list_inputs():
            try:
                clips = self.load(item)
            except (SourceError, OSError, ValueError) as exc:
                yield Failure(item, f"source:{self.name}", exc)
                continue
            for clip in clips:
                if limit is not None and produced >= limit:
                    return
                produced += 1
                yield clip
