"""Live progress (rich): per stage rows in/out, clips/s, drops, failures; overall inputs, samples, rows in flight."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table


@dataclass
class DriverCounts:
    inputs_total: int = 0
    inputs_skipped_done: int = 0
    inputs_recorded: int = 0
    written: int = 0
    skipped_existing: int = 0
    quarantined: int = 0
    dropped: int = 0
    arrived: int = 0
    rerun: int = 0  # inputs run again after their rows were lost with a worker (runner.run)
    started: float = field(default_factory=time.time)
    first_sample_at: float | None = None
    last_sample_at: float | None = None

    def sample_arrived(self) -> None:
        now = time.time()
        self.first_sample_at = self.first_sample_at or now
        self.last_sample_at = now


def stage_table(order: list[str], stages: dict[str, dict[str, Any]], actors: dict[str, int], elapsed: float) -> Table:
    table = Table(title=None, expand=False)
    for col in ("stage", "actors", "in", "out", "dropped", "failed", "clips/s", "busy s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for name in order:
        s = stages.get(name, {})
        rate = s.get("rows_out", 0) / elapsed if elapsed > 0 else 0.0
        table.add_row(name, str(actors.get(name, "")), str(s.get("rows_in", 0)), str(s.get("rows_out", 0)),
                      str(s.get("dropped", 0)), str(s.get("failed", 0)), f"{rate:.2f}", f"{s.get('busy_s', 0.0):.1f}")
    return table


def in_flight(order: list[str], stages: dict[str, dict[str, Any]], arrived: int) -> int:
    """Rows created and not yet at the driver: first stage's inputs + net rows each stage added - arrivals."""
    if not order:
        return 0
    first = stages.get(order[0], {}).get("rows_in", 0)
    net = sum(s.get("rows_out", 0) - s.get("rows_in", 0) for s in stages.values())
    return max(0, first + net - arrived)


class ProgressDisplay:
    """Polls the metrics actor from a thread and redraws; a no-op when disabled (tests, --no-progress)."""

    def __init__(self, console: Console, order: list[str], actors: dict[str, int], counts: DriverCounts,
                 snapshot: Callable[[], dict[str, dict[str, Any]]], enabled: bool = True,
                 interval: float = 0.5) -> None:
        self.console, self.order, self.actors, self.counts = console, order, actors, counts
        self.snapshot, self.enabled, self.interval = snapshot, enabled, interval
        self.stages: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def render(self) -> Group:
        c = self.counts
        elapsed = time.time() - c.started
        footer = (
            f"inputs {c.inputs_recorded + c.inputs_skipped_done}/{c.inputs_total} done "
            f"({c.inputs_skipped_done} from earlier runs) | samples written {c.written}, already present "
            f"{c.skipped_existing} | quarantined {c.quarantined} | dropped {c.dropped} | "
            f"rows in flight {in_flight(self.order, self.stages, c.arrived)} | {elapsed:.0f} s"
        )
        return Group(stage_table(self.order, self.stages, self.actors, elapsed), footer)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.stages = self.snapshot()
            except Exception:  # noqa: BLE001 - a missed poll only delays the display
                continue

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.__exit__(*exc)
        if self._thread is not None:
            self._thread.join(timeout=2)
