"""The streaming Ray Data pipeline: one `map_batches` actor pool per planned pool of stages, rows as pickled dicts.

Rows travel as one pickled Arrow binary column: stages see plain dicts with numpy arrays of any shape, and rows of
different kinds (a video path, a decoded clip, a failure marker) share one dataset without Arrow schema
unification. `StageActor` wraps a `Stage`: it calls `setup()` once, feeds `process_batch` only the rows meant
for the stage, in the stage's batch size, retries a failing batch, then isolates the failing rows, and does the
input accounting that resume relies on (see `state.py`). `PoolActor` is what Ray Data runs: the `StageActor`s
of a pool (one stage, or a run of fused light stages) applied in order to each batch.
"""
from __future__ import annotations

import copy
import logging
import pickle
import time
import warnings
from collections import defaultdict
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

from data_engine.engine.inputs import INPUT, WEIGHT, SourceStage
from data_engine.engine.placement import GPU_MEMORY, round_up
from data_engine.engine.resources import PoolPlan, StagePlan
from data_engine.stages import stage_class
from data_engine.stages.base import FAILED, FINISHED, Row, Stage, is_failed

if TYPE_CHECKING:
    import pyarrow as pa

PAYLOAD = "payload"
DROPPED = "_dropped"
UNIT = "_unit"
# A batch whose actor process dies (a segfault in a decoder, the OOM killer) is retried this often on the
# restarted actor; after that its block is skipped and the driver quarantines the inputs whose rows never came
# back (runner.quarantine_lost). Ray's default, retrying forever, hangs the run on one poisonous input.
WORKER_DEATH_RETRIES = 3


class StageProtocolError(RuntimeError):
    """A stage returned rows the engine cannot attribute to their inputs."""


def pack(rows: list[Row]) -> pa.Table:
    """Rows as one large-binary Arrow column (large: a batch of long clips may pass 2 GiB)."""
    import pyarrow as pa

    return pa.table({PAYLOAD: pa.array([pickle.dumps(r, protocol=5) for r in rows], type=pa.large_binary())})


def unpack(batch: pa.Table) -> list[Row]:
    """Rows unpickled straight from the Arrow buffers (no intermediate bytes objects; the arrays are copies)."""
    return [pickle.loads(value.as_buffer()) for value in batch.column(PAYLOAD)]


def resolve_stage(name: str) -> type[Stage]:
    """The engine's own `source` stage, or a registered one (data_engine.stages.STAGES)."""
    return SourceStage if name == SourceStage.name else stage_class(name)


def _limit_threads(n: int) -> None:
    """Keep native thread pools within the actor's CPU share (oversubscription is the usual workstation slowdown)."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    from data_engine.video_io import set_codec_threads

    set_codec_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _fresh(row: Row) -> Row:
    """A copy a stage may mutate (drop() appends to scores) without touching the row a retry starts from."""
    return {**row, "scores": copy.deepcopy(row.get("scores", {}))}


class StageActor:
    """A stage inside one pool actor: set up once, then `step` per batch of rows."""

    def __init__(self, plan: StagePlan, opts: Any) -> None:
        """`opts`: the stage's typed options, as the run's plan made them (runner.plan_stage)."""
        _limit_threads(plan.threads)
        cls = resolve_stage(plan.name)
        self.stage = cls(plan.resources, opts)
        self.stage.ensure_setup()
        self.plan = plan
        self.accepts_finished = cls.accepts_finished
        self.reports: list[StageReport] = []
        self._last_error: BaseException | None = None

    def step(self, rows: list[Row]) -> list[Row]:
        """The rows meant for this stage processed in chunks of its batch size; the others pass through."""
        live = [r for r in rows if self._handles(r)]
        out = [r for r in rows if not self._handles(r)]
        size = max(1, self.plan.batch_size)
        for start in range(0, len(live), size):
            chunk = live[start:start + size]
            began, clock = time.time(), time.perf_counter()
            processed, counts = self.process(chunk)
            out += processed
            self.reports.append(StageReport(self.plan.name, len(chunk), *counts, time.perf_counter() - clock, began))
        return out

    def _handles(self, row: Row) -> bool:
        if is_failed(row) or DROPPED in row:
            return False
        return self.accepts_finished or FINISHED not in row

    def process(self, rows: list[Row]) -> tuple[list[Row], tuple[int, int, int]]:
        for i, row in enumerate(rows):
            row[UNIT] = i
        results = self._attempt(rows)
        if results is None:
            results = []
            for row in rows:  # isolate the bad rows: each alone, with the same retries
                one = self._attempt([row])
                results.extend(one if one is not None else [self._exhausted(row)])
        out = self._attribute(rows, results)
        n_out = sum(1 for r in out if not is_failed(r) and DROPPED not in r)
        n_drop = sum(1 for r in out if DROPPED in r)
        n_fail = sum(1 for r in out if is_failed(r))
        return out, (n_out, n_drop, n_fail)

    def _attempt(self, rows: list[Row]) -> list[tuple[Row, list[Row]]] | None:
        """[(the input row as the stage saw it, [its outputs])], or None after retries + 1 raising attempts."""
        for _ in range(self.plan.retries + 1):
            seen = [_fresh(r) for r in rows]
            try:
                outputs = self.stage.process_batch(seen)
            except Exception as exc:  # noqa: BLE001 - any stage error is isolated and quarantined, never fatal
                self._last_error = exc
                continue
            try:
                return self._group(seen, outputs)
            except StageProtocolError as exc:
                self._last_error = exc
                return None
        return None

    def _exhausted(self, row: Row) -> tuple[Row, list[Row]]:
        exc = self._last_error or RuntimeError("unknown error")
        marker = self.stage.failed(row, exc)
        marker[FAILED]["attempts"] = self.plan.retries + 1
        return row, [marker]

    def _group(self, seen: list[Row], outputs: list[Row]) -> list[tuple[Row, list[Row]]]:
        units = {r[UNIT] for r in seen}
        groups: dict[int, list[Row]] = defaultdict(list)
        for row in outputs:
            unit = row.get(UNIT)
            if unit is None and len(seen) == 1:
                unit = seen[0][UNIT]
            if unit not in units:
                raise StageProtocolError(
                    f"stage {self.plan.name!r} returned a row without the engine's fields; build output rows "
                    f"from the input row ({{**row, ...}}) as data_engine/stages/base.py says"
                )
            groups[unit].append(row)
        return [(row, groups.get(row[UNIT], [])) for row in seen]

    def _attribute(self, rows: list[Row], results: list[tuple[Row, list[Row]]]) -> list[Row]:
        by_unit = {r[UNIT]: r for r in rows}
        out: list[Row] = []
        for seen, outputs in results:
            original = by_unit[seen[UNIT]]
            weight: Fraction = original[WEIGHT]
            if not outputs:
                reasons = seen.get("scores", {}).get("dropped") or [f"{self.plan.name}: filtered"]
                out.append({INPUT: original[INPUT], WEIGHT: weight, "key": original.get("key"),
                            DROPPED: {"stage": self.plan.name, "reasons": list(reasons)}})
                continue
            share = weight / len(outputs)
            for row in outputs:
                row.pop(UNIT, None)
                row[INPUT], row[WEIGHT] = original[INPUT], share
                out.append(row)
        return out


class PoolActor:
    """One actor of a pool (Ray Data calls `__init__` once per actor, then `__call__` per batch)."""

    def __init__(self, plan: PoolPlan, options: dict[str, Any], metrics_name: str | None = None) -> None:
        self.stages = [StageActor(s, options.get(s.name)) for s in plan.stages]
        self.metrics = None
        if metrics_name:
            import ray

            self.metrics = ray.get_actor(metrics_name)
            self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = unpack(batch)
        for stage in self.stages:
            rows = stage.step(rows)
        reports = [r for stage in self.stages for r in stage.reports]
        for stage in self.stages:
            stage.reports.clear()
        if self.metrics is not None and reports:  # one call per batch, not per stage: the pool shares the cores
            self.metrics.report.remote(self.node, reports)
        return pack(rows)


class StageReport(NamedTuple):
    """One chunk a stage processed: rows in, rows out / dropped / failed, busy seconds, wall-clock start."""

    stage: str
    rows_in: int
    rows_out: int
    dropped: int
    failed: int
    seconds: float
    started: float


class EngineMetrics:
    """A zero-CPU actor the pool actors report to: per-stage rows in/out, drops, failures, busy time, nodes."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    def report(self, node: str, reports: list[StageReport]) -> None:
        for r in reports:
            s = self.stages.setdefault(r.stage, {"rows_in": 0, "rows_out": 0, "dropped": 0, "failed": 0,
                                                 "busy_s": 0.0, "batches": 0, "nodes": []})
            s["rows_in"] += r.rows_in
            s["rows_out"] += r.rows_out
            s["dropped"] += r.dropped
            s["failed"] += r.failed
            s["busy_s"] += r.seconds
            s["batches"] += 1
            s["first_start"] = min(s.get("first_start", float("inf")), r.started)
            if node not in s["nodes"]:
                s["nodes"].append(node)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.stages


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def drop_log_message(logger: str, prefix: str) -> None:
    """Drop one library log message (the records of `logger` starting with `prefix`), once per process."""
    log = logging.getLogger(logger)
    if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in log.filters):
        log.addFilter(_DropMessage(prefix))


def build_dataset(items: list[Row], plans: list[PoolPlan], options: dict[str, Any],
                  metrics_name: str | None, preserve_order: bool = False):
    """The lazy dataset: work items -> one actor pool per planned pool. Nothing runs until it is iterated; with
    `preserve_order` its rows come out in the items' order."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the run's own progress display (engine/progress.py) shows the stages
    # ... and Ray warns that they are off, with how to turn them back on: not for our users.
    drop_log_message("ray.data._internal.progress", "Progress bars disabled.")
    ctx.execution_options.preserve_order = preserve_order
    ctx.max_errored_blocks = -1  # a block lost with its worker must not abort the run; see WORKER_DEATH_RETRIES
    # Model actors legitimately hold hundreds of MB; Ray's high-memory detector would repeat that every 30 s.
    ctx.issue_detectors_config.detectors = [
        d for d in ctx.issue_detectors_config.detectors if d.__name__ != "HighMemoryIssueDetector"
    ]
    # from_items puts the blocks in the object store from the driver: no read task competes for CPUs.
    rows = [{PAYLOAD: pickle.dumps(r, protocol=5)} for r in items]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(items)))
    for plan in plans:
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args but names no parameter for task retries; its own docs pass
            # them this way (actor_pool_map_operator: "map_batches(..., max_restarts=0)").
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            ds = ds.map_batches(
                PoolActor,
                fn_constructor_kwargs={"plan": plan, "options": {s.name: options.get(s.name) for s in plan.stages},
                                       "metrics_name": metrics_name},
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                batch_size=plan.batch_size,
                batch_format="pyarrow",
                num_cpus=plan.num_cpus,
                num_gpus=plan.num_gpus or None,
                # Ray keeps these actors off nodes that do not declare their GPU memory (placement.py)
                **({"resources": {GPU_MEMORY: round_up(plan.gpu_gib)}} if plan.gpu_gib > 0 else {}),
                max_restarts=-1,
                max_task_retries=WORKER_DEATH_RETRIES,
            )
    return ds
