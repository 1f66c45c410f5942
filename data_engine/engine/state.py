"""Resume: a completion record per input, written only once every sample of that input is in a complete shard.

Accounting: each input starts with weight 1. A stage that fans a row out into k rows gives each 1/k of the
row's weight; a row that is dropped or fails carries its weight to the driver as a marker. When the weights
that reached the driver for an input sum to exactly 1 (fractions, no rounding), all of its rows are accounted
for; its record is written once the sink has put its samples into complete (renamed) shards. A crash loses at
most the inputs without a record; the rerun redoes them and the sink skips keys already in complete shards, so
each clip ends up in the output exactly once.

Records: `<out>/_inputs/<sha1 of the input id>.json` with the input id, status (`ok`, `partial`: some clips
failed, `failed`: no sample), keys, dropped and failed counts, and the run that wrote it. A record is the input's
outcome: quarantine rows of the input from any other run (a retry that succeeded, a redo after a crash) no longer
hold, and the sink drops them (`record_runs`, data_engine/shards.py finalize).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

RECORDS_DIR = "_inputs"


def record_path(out_dir: Path, input_id: str) -> Path:
    return out_dir / RECORDS_DIR / f"{hashlib.sha1(input_id.encode()).hexdigest()}.json"


def load_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    folder = out_dir / RECORDS_DIR
    if folder.is_dir():
        for path in folder.glob("*.json"):
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue  # a torn write from a crash: the input counts as not done
            records[rec["input"]] = rec
    return records


def record_runs(out_dir: Path) -> dict[str, str | None]:
    """{input id: the run that wrote its record} (None for a record written before runs were named)."""
    return {input_id: rec.get("run") for input_id, rec in load_records(out_dir).items()}


@dataclass
class _Open:
    weight: Fraction = Fraction(0)
    keys: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: int = 0


class InputLedger:
    def __init__(self, out_dir: Path, run_id: str) -> None:
        self.out_dir, self.run_id = out_dir, run_id
        (out_dir / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
        for torn in (out_dir / RECORDS_DIR).glob("*.tmp"):
            torn.unlink()
        self.open: dict[str, _Open] = {}
        self.finished: dict[str, _Open] = {}
        self.complete: set[str] = set()
        self.recorded = 0
        self.statuses: dict[str, int] = {}

    def account(self, input_id: str, weight: Fraction, *, key: str | None = None, dropped: list[str] | None = None,
                failed: bool = False) -> None:
        entry = self.open.setdefault(input_id, _Open())
        entry.weight += weight
        if key is not None:
            entry.keys.append(key)
        if dropped:
            entry.dropped.extend(dropped)
        entry.failed += int(failed)
        if entry.weight > 1:
            raise RuntimeError(f"input {input_id}: accounted weight {entry.weight} > 1 (a stage duplicated rows)")
        if entry.weight == 1:
            self.finished[input_id] = self.open.pop(input_id)
            self.complete.add(input_id)

    def missing(self, input_ids: list[str]) -> dict[str, Fraction]:
        """Of `input_ids`, those not fully accounted for, with the weight still to come (1 if nothing came)."""
        return {i: (1 - self.open[i].weight if i in self.open else Fraction(1))
                for i in input_ids if i not in self.complete}

    def reopen(self, input_ids: Iterable[str]) -> None:
        """Forget what came back of these unfinished inputs: a rerun brings all their rows again (and the sink
        skips the samples it already has)."""
        for input_id in input_ids:
            self.open.pop(input_id, None)

    def flush(self, done_keys: set[str]) -> int:
        """Write the record of every finished input whose samples are all in complete shards."""
        ready = [i for i, e in self.finished.items() if all(k in done_keys for k in e.keys)]
        for input_id in ready:
            e = self.finished.pop(input_id)
            status = "failed" if not e.keys and e.failed else ("partial" if e.failed else "ok")
            rec = {"input": input_id, "status": status, "keys": sorted(e.keys), "dropped": e.dropped,
                   "failed": e.failed, "time": time.time(), "run": self.run_id}
            path = record_path(self.out_dir, input_id)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, path)
            self.recorded += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return len(ready)

    @property
    def pending(self) -> int:
        return len(self.open) + len(self.finished)
