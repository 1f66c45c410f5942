"""The official LayerFlow sample layout as a source: one layered clip per sequence, soft alpha kept.

Reading the layout is `data_engine.official_layout` (shared with generation and evaluation); this wraps it as a
source whose errors are `SourceError`s, so a bad sequence is quarantined and the run goes on. Its fg frames are
already the object over mid-grey, as the shards store them; its masks may be 8- or 16-bit PNGs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_engine.official_layout import OfficialLayoutError, find_sequences, read_sequence
from data_engine.schema import LayeredClip
from data_engine.sources.base import LayeredSource, SourceError, require_folder


@dataclass(frozen=True)
class OfficialOptions:
    root: str = ""
    fps: float = 8.0


class OfficialSampleSource(LayeredSource):
    name = "official_import"
    Options = OfficialOptions
    required = ("root",)

    def __init__(self, root: str | Path, fps: float = 8.0) -> None:
        self.root = Path(root)
        self.fps = fps
        require_folder(self.root, "official sample layout")
        try:
            self._sequences = {str(s.mask): s for s in find_sequences(self.root)}
        except OfficialLayoutError as exc:
            raise SourceError(str(exc)) from exc

    @classmethod
    def from_options(cls, opts: OfficialOptions, work_dir: Path) -> OfficialSampleSource:
        return cls(opts.root, fps=opts.fps)

    def list_inputs(self) -> list[str]:
        return list(self._sequences)

    def load(self, item: str) -> list[LayeredClip]:
        try:
            return [read_sequence(self._sequences[item], self.fps)]
        except OfficialLayoutError as exc:
            raise SourceError(str(exc)) from exc
