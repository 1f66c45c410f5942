"""What every model-free source shares: an input list, a per-input loader, and one error type."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from data_engine.schema import LayeredClip


class SourceError(ValueError):
    """An input that cannot become a layered clip; the message names the file and the reason."""


@dataclass(frozen=True)
class Failure:
    input: str
    stage: str
    error: BaseException


class Source(ABC):
    """A source: `list_inputs()` enumerates work items (strings), `load(item)` turns one into clips."""

    name: str = "source"

    @abstractmethod
    def list_inputs(self) -> list[str]: ...

    @abstractmethod
    def load(self, item: str) -> list[LayeredClip]: ...

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
