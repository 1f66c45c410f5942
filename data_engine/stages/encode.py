"""Encode finished clips into shard samples in parallel workers, so the driver's sink only writes bytes."""
from __future__ import annotations

from dataclasses import dataclass

from data_engine.schema import LayeredClip
from data_engine.shards import EncodeOptions, encode_clip
from data_engine.stages.base import Resources, Row, Stage


@dataclass(frozen=True)
class EncodeStageOptions:
    crf: int = EncodeOptions.crf
    lossless_alpha: bool = False


class EncodeStage(Stage):
    """Reads `clip`; writes `sample` (the WebDataset sample dict) and `meta` (its json), dropping the pixels: the
    sink needs only those, and shipping the decoded layers back to the driver would move ~55 MB per 16-frame
    480x720 clip for nothing."""

    name = "encode"
    default_resources = Resources(num_cpus=1.0, batch_size=1, retries=1)
    Options = EncodeStageOptions
    accepts_finished = True
    reads = frozenset({"clip"})
    writes = frozenset({"key", "sample", "meta"})

    def process_batch(self, rows: list[Row]) -> list[Row]:
        options = EncodeOptions(crf=self.opts.crf, lossless_alpha=self.opts.lossless_alpha)
        out = []
        for row in rows:
            clip: LayeredClip | None = row.get("clip")
            if clip is None:
                out.append(self.failed(row, "no finished clip to encode: list `compose` (or a layered source) "
                                            "before encode"))
                continue
            meta, sample = encode_clip(clip, options)
            rest = {k: v for k, v in row.items() if k not in ("clip", "frames", "mask", "bg", "fg")}
            out.append({**rest, "key": clip.key, "sample": sample, "meta": meta})
        return out
