"""The synthetic world's layered clips straight to shards: the procedural generator (data_engine/synthetic.py) as
a source."""
from __future__ import annotations

from pathlib import Path

from data_engine.schema import LayeredClip
from data_engine.sources.base import LayeredSource
from data_engine.synthetic import SyntheticConfig, synthetic_clip, synthetic_id


class SyntheticWorldSource(LayeredSource):
    name = "synthetic_world"
    Options = SyntheticConfig

    def __init__(self, cfg: SyntheticConfig = SyntheticConfig()) -> None:
        self.cfg = cfg

    @classmethod
    def from_options(cls, opts: SyntheticConfig, work_dir: Path) -> SyntheticWorldSource:
        return cls(opts)

    def list_inputs(self) -> list[str]:
        return [str(i) for i in range(self.cfg.num_clips)]

    def input_id(self, item: str) -> str:
        return synthetic_id(self.cfg, int(item))

    def load(self, item: str) -> list[LayeredClip]:
        return [synthetic_clip(self.cfg, int(item))]
