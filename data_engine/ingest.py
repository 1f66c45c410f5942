"""Write a model-free source into shards on one process: each failing input goes to quarantine, the run goes on."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from data_engine.schema import LayeredClip
from data_engine.shards import ShardSink
from data_engine.sources.base import Failure, Source


@dataclass
class IngestCounts:
    written: int = 0
    skipped_existing: int = 0
    quarantined: int = 0


def ingest(
    source: Source,
    sink: ShardSink,
    *,
    limit: int | None = None,
    on_item: Callable[[LayeredClip | Failure], None] | None = None,
) -> IngestCounts:
    counts = IngestCounts()
    for item in source.iter_clips(limit=limit):
        if isinstance(item, Failure):
            sink.quarantine(item.input, item.stage, item.error)
            counts.quarantined += 1
        elif sink.write(item):
            counts.written += 1
        else:
            counts.skipped_existing += 1
        if on_item is not None:
            on_item(item)
    return counts
