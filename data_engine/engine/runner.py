"""Run the engine: plan, connect to Ray, stream work items through the stage pools into the shard sink.

Local runs start an embedded Ray (`ray.init(address="local", num_cpus=...)`: its own, even beside another local
Ray); with `RAY_ADDRESS` (or `run.ray_address`) the same code runs on that cluster. The sink lives in the driver:
samples arrive encoded, the driver only appends bytes to tar shards, records finished inputs, and sends failures
to quarantine.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from data_engine.clip_policy import ClipPolicy
from data_engine.engine.cluster_spec import cluster_from_yaml, live_gpu_nodes, local_gpu_memory_gib
from data_engine.engine.config import ConfigError, EngineConfig, PlannedStage
from data_engine.engine.contract import check_chain, idle_stages
from data_engine.engine.folder_config import check_resume, folder_record, sample_settings, write_record
from data_engine.engine.inputs import (
    SourceStage,
    SourceStageOptions,
    TypedSource,
    WorkItem,
    describe_sources,
    list_sources,
    typed_sources,
)
from data_engine.engine.pipeline import (
    DROPPED,
    INPUT,
    WEIGHT,
    WORKER_DEATH_RETRIES,
    drop_log_message,
    resolve_stage,
    unpack,
)
from data_engine.engine.placement import GPU_MEMORY, GpuNode
from data_engine.engine.progress import DriverCounts, ProgressDisplay, stage_table
from data_engine.engine.resources import ClusterResources, PoolPlan, gpu_placement, plan_stages
from data_engine.engine.state import InputLedger, load_records, record_runs
from data_engine.shards import RUN_STATS_NAME, ShardSink
from data_engine.stages.base import FAILED, Resources

WORKER_LOST = (
    "no result came back: the worker process died on this input every time (a crash in native code or out of "
    "memory; the Ray log of the dead worker says which); lower the stage's batch size or memory use, then "
    "rerun with --set run.retry_quarantined=true"
)


@dataclass
class EnginePlan:
    cfg: EngineConfig
    sources: tuple[TypedSource, ...]
    items: list[WorkItem]
    pending: list[WorkItem]
    done: int
    stages: list[PlannedStage]  # the stages that run: not the idle ones
    idle: list[str]  # stages of the config that no input gives work (contract.idle_stages)
    folder_record: dict[str, Any]  # what <out>/engine_config.json records (folder_config.py)
    gpu_gib: dict[str, float]  # GPU memory one actor of each GPU stage declares (Stage.gpu_memory_gib)

    @property
    def resources(self) -> list[tuple[str, Resources]]:
        return [(s.name, s.resources) for s in self.stages]

    @property
    def options(self) -> dict[str, Any]:
        return {s.name: s.opts for s in self.stages}


@dataclass
class RunSummary:
    out: Path
    stats: dict[str, Any]
    counts: DriverCounts
    stages: dict[str, dict[str, Any]]
    plans: list[PoolPlan]
    cluster: ClusterResources | None
    wall_s: float
    dry_run: bool = False


# `layers.group_objects` inserts `layer_order` before the first of these: the objects it keeps must be final
# before the background is inpainted without them (and compose needs them ordered).
LAYER_ORDER_BEFORE = ("inpaint", "compose")


def stage_names(cfg: EngineConfig) -> list[str]:
    names = [s.name for s in cfg.stages]
    if "encode" in names and names[-1] != "encode":
        raise ConfigError("stages: 'encode' must be the last stage (it turns finished clips into shard samples)")
    if cfg.layers.group_objects and "layer_order" not in names:
        at = next((names.index(n) for n in LAYER_ORDER_BEFORE if n in names), None)
        if at is None:
            raise ConfigError("layers.group_objects: the stages have neither inpaint nor compose to put layer_order "
                              "before; group objects in a perception chain (segment ... inpaint, compose)")
        names.insert(at, "layer_order")
    return ["source", *names] + ([] if "encode" in names else ["encode"])


def layers_options(name: str, cls: type, opts: dict[str, Any], cfg: EngineConfig) -> dict[str, Any]:
    """The `layers:` settings for the options of the same name a stage has (layers_policy.py); setting one in a
    stage's own options is an error, so every stage sees the same policy."""
    taken = {f.name for f in fields(cls.Options)} if getattr(cls, "Options", None) else set()
    shared = {k: v for k, v in asdict(cfg.layers).items() if k in taken}
    clash = sorted(set(shared) & set(opts))
    if clash:
        raise ConfigError(f"stages.{name}: set {', '.join(f'layers.{k}' for k in clash)} in the config's layers: "
                          f"section, not in the stage's options")
    return {**opts, **shared}


def plan_stage(cfg: EngineConfig, name: str, sources: tuple[TypedSource, ...]) -> PlannedStage:
    """One stage's class, resources and options, typed and checked before anything starts."""
    try:
        cls = resolve_stage(name)
    except KeyError as exc:
        raise ConfigError(str(exc)) from exc
    spec = next((s for s in cfg.stages if s.name == name), None)
    given = dict(spec.options) if spec else {}
    if cls is SourceStage:
        given = {}
    elif getattr(cls, "Options", None) is ClipPolicy:
        given = {**asdict(cfg.clip), **given}
    else:
        given = layers_options(name, cls, given, cfg)
    try:
        opts = (SourceStageOptions(sources, str(cfg.work_dir.resolve())) if cls is SourceStage
                else cls.parse_options(given, f"stages.{name}"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return PlannedStage(name, cls, replace(cls.default_resources, **(spec.resources if spec else {})), opts, given)


def stage_setup(cfg: EngineConfig, sources: tuple[TypedSource, ...] | None = None) -> list[PlannedStage]:
    """Every stage of the run (stage_names), typed and checked before anything starts."""
    sources = typed_sources(cfg) if sources is None else sources
    return [plan_stage(cfg, name, sources) for name in stage_names(cfg)]


def check_weights(stages: list[PlannedStage]) -> None:
    """Every model any stage will load, missing ones all named in one line (the loaders apply the same test)."""
    from data_engine import weights

    needs: dict[str, list[str]] = {}
    for s in stages:
        for model in s.cls.weights(s.opts):
            needs.setdefault(model, []).append(s.name)
    missing = [m for m in needs if weights.missing_files(m)]
    if missing:
        which = "; ".join(f"{m} (for {', '.join(needs[m])})" for m in missing)
        raise ConfigError(
            f"missing weights under {weights.weights_root()} for {len(missing)} model(s): {which}; run "
            f"`layerflow weights download {' '.join(missing)}` or set {weights.ENV_VAR} to the folder that holds them"
        )


def gpu_memory(stages: list[PlannedStage]) -> dict[str, float]:
    """The GPU memory each stage that asks for a GPU declares per actor with its options."""
    out = {}
    for s in stages:
        if s.resources.num_gpus > 0:
            try:
                out[s.name] = s.cls.gpu_memory_gib(s.opts)
            except ValueError as exc:
                raise ConfigError(f"stages.{s.name}: {exc}") from exc
    return out


def prepare(cfg: EngineConfig) -> EnginePlan:
    if not cfg.sources:
        raise ConfigError("no sources: add a `sources:` entry or pass --input /path/to/videos")
    if cfg.out.exists() and not cfg.out.is_dir():
        raise ConfigError(f"run.out {cfg.out} is a file; --out names a folder "
                          "(a new one, or an earlier run's to resume)")
    typed = typed_sources(cfg)
    stages = stage_setup(cfg, typed)
    sources = list_sources(typed, cfg.work_dir)
    items = [it for s in sources for it in s.items]
    if not items:
        raise ConfigError(f"the sources list no inputs ({'; '.join(describe_sources(typed))}); check the paths and "
                          "patterns (a glob must match files with a video extension)")
    # The source stage comes first (stage_names): the chain after it starts from the sources' fields.
    chain = [(s.name, s.cls) for s in stages[1:]]
    check_chain(chain, sources)
    settings = sample_settings(cfg, typed, stages)
    check_resume(cfg.out, settings)
    record = folder_record(cfg, typed, stages, settings)
    idle = idle_stages(chain, {s.name: s.opts for s in stages}, sources)
    stages = [s for s in stages if s.name not in idle]
    if cfg.run.check_weights:
        check_weights(stages)
    records = load_records(cfg.out)
    redo = {i for i, r in records.items() if cfg.run.retry_quarantined and r["status"] != "ok"}
    done_ids = set(records) - redo
    pending = [it for it in items if it.input_id not in done_ids]
    done = len(items) - len(pending)
    if cfg.run.limit is not None:
        pending = pending[: cfg.run.limit]
    return EnginePlan(cfg, typed, items, pending, done, stages, idle, record, gpu_memory(stages))


# -- Ray --------------------------------------------------------------------------------------------------------------
def ray_address(cfg: EngineConfig) -> str | None:
    return os.environ.get("RAY_ADDRESS") or cfg.run.ray_address


def connect(cfg: EngineConfig) -> tuple[ClusterResources, bool]:
    """Join the configured cluster or start a local one; returns its resources and whether we started Ray."""
    import ray

    started = False
    # Ray 2.60 tells every local start that it turned token authentication on (what we want) and how to opt out:
    # nothing to act on. Its warning for a cluster *without* authentication still shows.
    drop_log_message("ray._private.authentication.authentication_token_setup",
                     "Token authentication is enabled for this Ray cluster")
    if not ray.is_initialized():
        address = ray_address(cfg)
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            memory = local_gpu_memory_gib(cfg.run.num_gpus)
            # "local": our own instance, even when another local Ray on this machine (another user's run, a
            # test) has left its address in Ray's temp folder; joined, its nodes would mix with ours and our actor
            # pools, sized for this run's CPUs, could wait forever for theirs.
            ray.init(address="local", num_cpus=cfg.run.num_cpus, num_gpus=cfg.run.num_gpus, include_dashboard=False,
                     resources={GPU_MEMORY: memory} if memory else None,
                     logging_level=logging.WARNING, log_to_driver=False)
        started = True
    return live_cluster(), started


def live_cluster() -> ClusterResources:
    """The resources of the nodes of the connected cluster that are alive now."""
    import ray

    res = ray.cluster_resources()
    nodes = ray.nodes()
    node_cpus = tuple(float(n["Resources"].get("CPU", 0)) for n in nodes if n.get("Alive"))
    return ClusterResources(float(res.get("CPU", 0)), float(res.get("GPU", 0)), len(node_cpus), node_cpus,
                            live_gpu_nodes(nodes))


def alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def local_resources(cfg: EngineConfig) -> ClusterResources:
    """What a local run would get, without starting Ray (for --dry-run)."""
    gpus = cfg.run.num_gpus
    if gpus is None:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
    cpus = float(cfg.run.num_cpus or os.cpu_count() or 1)
    memory = local_gpu_memory_gib(gpus)
    whole = int(gpus)
    gpu_nodes = (GpuNode("local", whole, memory / whole, cpus),) if whole and memory else ()
    return ClusterResources(cpus, float(gpus), 1, (), gpu_nodes)


# -- the driver -------------------------------------------------------------------------------------------------------
def _named_error(error_type: str, message: str) -> Exception:
    """An exception whose type name is the stage's original error type (the quarantine table records it)."""
    return type(error_type, (Exception,), {})(message)


class Driver:
    """Consumes the pipeline's rows: samples into the sink, failures into quarantine, accounting into the ledger."""

    def __init__(self, sink: ShardSink, ledger: InputLedger, counts: DriverCounts) -> None:
        self.sink, self.ledger, self.counts = sink, ledger, counts

    def handle(self, row: dict[str, Any]) -> None:
        input_id, weight = row[INPUT], row[WEIGHT]
        self.counts.arrived += int(FAILED not in row and DROPPED not in row)
        if FAILED in row:
            self.quarantine(row, row[FAILED])
        elif DROPPED in row:
            self.counts.dropped += 1
            self.ledger.account(input_id, weight,
                                dropped=[f"{row[DROPPED]['stage']}: {r}" for r in row[DROPPED]["reasons"]])
        elif "sample" in row:
            self.counts.sample_arrived()
            meta = row["meta"]
            if self.sink.write_encoded(meta, row["sample"]):
                self.counts.written += 1
            else:
                self.counts.skipped_existing += 1
            self.ledger.account(input_id, weight, key=meta["key"])
        else:
            self.quarantine(row, {"stage": "engine", "error_type": "PipelineError",
                                  "message": "row reached the sink without an encoded sample; check the stage list"})

    def quarantine_lost(self, input_ids: list[str], passes: int) -> None:
        """Inputs whose rows did not all come back in any of the `passes` over them: their worker died on them."""
        for input_id, weight in self.ledger.missing(input_ids).items():
            self.sink.quarantine(input_id, "engine", _named_error("WorkerLost", WORKER_LOST),
                                 attempts=passes * (WORKER_DEATH_RETRIES + 1), engine_input=input_id)
            self.counts.quarantined += 1
            self.ledger.account(input_id, weight, failed=True)

    def quarantine(self, row: dict[str, Any], failure: dict[str, Any]) -> None:
        source = row.get("source_id") or row[INPUT]
        key = row.get("key")
        label = source if key in (None, source, row[INPUT]) else f"{source} [{key}]"
        self.sink.quarantine(label, failure["stage"], _named_error(failure["error_type"], failure["message"]),
                             attempts=failure.get("attempts", 1), engine_input=row[INPUT])
        self.counts.quarantined += 1
        self.ledger.account(row[INPUT], row[WEIGHT], failed=True)


def processing_rate(counts: DriverCounts, stages: dict[str, dict[str, Any]]) -> float | None:
    """Samples/s from the first batch any stage started to the last sample at the sink: the pipeline's rate
    without Ray's actor start-up (which `wall_s` includes)."""
    starts = [s["first_start"] for s in stages.values() if "first_start" in s]
    n = counts.written + counts.skipped_existing
    if not starts or not counts.last_sample_at or n == 0:
        return None
    return round(n / max(1e-9, counts.last_sample_at - min(starts)), 3)


def _update_run_stats(out: Path, engine: dict[str, Any]) -> dict[str, Any]:
    path = out / RUN_STATS_NAME
    stats = json.loads(path.read_text())
    stats["engine"] = engine
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=1, default=str))
    os.replace(tmp, path)
    return stats


def run(cfg: EngineConfig, *, dry_run: bool = False, console: Console | None = None,
        cluster_file: str | None = None) -> RunSummary:
    """Plan and run `cfg`; `dry_run` plans only (on the node types of `cluster_file`, a Ray cluster YAML, when
    given) and starts nothing."""
    console = console or Console(stderr=True)
    started = time.time()
    if cluster_file and not dry_run:
        raise ConfigError(f"--cluster {cluster_file} plans on that file's node types and needs --dry-run; a run plans "
                          "on the cluster it joins (RAY_ADDRESS)")
    plan = prepare(cfg)
    counts = DriverCounts(inputs_total=len(plan.items), inputs_skipped_done=plan.done)
    if dry_run:
        if cluster_file:
            cluster = cluster_from_yaml(cluster_file)
        else:
            cluster = local_resources(cfg) if not ray_address(cfg) else connect(cfg)[0]
        plans = plan_stages(plan.resources, cluster, fuse=cfg.run.fuse, gpu_gib=plan.gpu_gib)
        print_plan(console, plan, plans, cluster, cluster_file)
        return RunSummary(cfg.out, {}, counts, {}, plans, cluster, time.time() - started, dry_run=True)

    import ray

    made_with = write_record(cfg.out, plan.folder_record)
    run_id = uuid.uuid4().hex[:12]
    cluster, we_started = connect(cfg)
    plans = plan_stages(plan.resources, cluster, fuse=cfg.run.fuse, gpu_gib=plan.gpu_gib)
    print_plan(console, plan, plans, cluster)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from data_engine.engine.pipeline import EngineMetrics, build_dataset

    metrics_name = f"layerflow-metrics-{uuid.uuid4().hex[:8]}"
    # On the driver's node: a worker node lost mid-run must not take the run's metrics with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    metrics = ray.remote(num_cpus=0)(EngineMetrics).options(name=metrics_name, scheduling_strategy=here).remote()
    items = [it.row() for it in plan.pending]
    order = [s.name for p in plans for s in p.stages]
    actors = {s.name: s.actors for p in plans for s in p.stages}
    pass_plans = plans  # a rerun after lost workers plans anew on the nodes still alive
    stages: dict[str, dict[str, Any]] = {}
    try:
        with ShardSink(cfg.out, maxcount=cfg.run.maxcount, maxsize=cfg.run.maxsize, run_id=run_id) as sink:
            ledger = InputLedger(cfg.out, run_id)
            driver = Driver(sink, ledger, counts)
            snapshot = lambda: ray.get(metrics.snapshot.remote(), timeout=5)  # noqa: E731
            with ProgressDisplay(console, order, actors, counts, snapshot, enabled=cfg.run.progress):
                todo, passes, nodes = items, 0, alive_nodes()
                while todo:
                    ds = build_dataset(todo, pass_plans, plan.options, metrics_name, cfg.run.deterministic_order)
                    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                        for row in unpack(batch):
                            driver.handle(row)
                        ledger.flush(sink.done_keys)
                        counts.inputs_recorded = ledger.recorded
                    passes += 1
                    lost = ledger.missing([it[INPUT] for it in todo])
                    # Ray spends a task's retries on a lost node within seconds, before it even reports the node
                    # dead, so a lost node and an input that kills its worker look alike here: each rerun that
                    # brings some inputs back earns another, one that brings none back ends in quarantine.
                    if not lost or (passes > 1 and len(lost) == len(todo)):
                        break
                    todo = [it for it in todo if it[INPUT] in lost]
                    ledger.reopen(lost)
                    counts.rerun += len(todo)
                    gone = sorted(nodes - alive_nodes())
                    pass_plans = plan_stages(plan.resources, live_cluster(), fuse=cfg.run.fuse, gpu_gib=plan.gpu_gib)
                    console.print(
                        f"[yellow]worker lost[/]: {len(todo)} input(s) did not all come back (a lost node or an input "
                        f"that kills its worker; nodes lost: {', '.join(gone) or 'none reported yet'}); rerunning "
                        f"them on the nodes alive now, the sink keeps the samples it already has"
                    )
                driver.quarantine_lost([it[INPUT] for it in todo], passes)
            sink.finish_shard()
            ledger.flush(sink.done_keys)
            counts.inputs_recorded = ledger.recorded
            # After the last records: the quarantine table drops the rows their runs superseded.
            sink.close(settled=record_runs(cfg.out))
        stages = ray.get(metrics.snapshot.remote())
    finally:
        ray.kill(metrics)
        if we_started:
            ray.shutdown()
    wall = time.time() - started
    engine_stats = {
        "config": made_with["config"],  # the config that made the folder's samples (a resume matches it)
        "cluster": asdict(cluster),
        "plan": [{"stages": [s.record() for s in p.stages]} for p in plans],
        "stages": {n: {**s, "clips_per_s": round(s["rows_out"] / wall, 3) if wall else 0.0} for n, s in stages.items()},
        "inputs": {"total": counts.inputs_total, "done_before": counts.inputs_skipped_done,
                   "this_run": len(plan.pending), "rerun": counts.rerun, "recorded": ledger.recorded,
                   "unfinished": ledger.pending,
                   "status": ledger.statuses},
        "samples_written": counts.written, "samples_already_present": counts.skipped_existing,
        "quarantined_this_run": counts.quarantined, "dropped_this_run": counts.dropped,
        "wall_s": round(wall, 3),
        "first_sample_after_s": round(counts.first_sample_at - started, 3) if counts.first_sample_at else None,
        "processing_clips_per_s": processing_rate(counts, stages),
    }
    stats = _update_run_stats(cfg.out, engine_stats)
    summary = RunSummary(cfg.out, stats, counts, stages, plans, cluster, wall)
    print_summary(console, summary, order, actors)
    return summary


def print_plan(console: Console, plan: EnginePlan, plans: list[PoolPlan], cluster: ClusterResources,
               cluster_file: str | None = None) -> None:
    console.print(f"[bold]config[/] {plan.cfg.path}  [bold]out[/] {plan.cfg.out}")
    for line in describe_sources(plan.sources):
        console.print(f"  source {line}")
    console.print(
        f"inputs: {len(plan.items)} listed, {plan.done} done in earlier runs, {len(plan.pending)} to process"
        + (f" (limit {plan.cfg.run.limit})" if plan.cfg.run.limit is not None else "")
    )
    if plan.idle:
        console.print(f"left out: {', '.join(plan.idle)} (no input gives them work, so they load no model)")
    where = cluster_file or ray_address(plan.cfg) or "local Ray"
    console.print(f"resources: {cluster.describe()} ({where})")
    table = Table("pool", "stage", "CPU/actor", "GPU/actor", "actors", "batch", "retries")
    for i, p in enumerate(plans):
        for s in p.stages:
            table.add_row(str(i), s.name, f"{s.num_cpus:g}", f"{s.num_gpus:g}", str(s.actors), str(s.batch_size),
                          str(s.retries))
    console.print(table)
    slots = gpu_placement(plans, cluster)
    if slots:
        console.print(placement_table(slots))


def placement_table(slots: list) -> Table:
    """Where the GPU actors go: one row per GPU, with the memory its actors declare out of what it has."""
    table = Table("node type", "GPU", "actors", "GB", title="GPU placement (GiB declared / GiB of the GPU)")
    for slot in slots:
        names = ", ".join(a.stage for a in slot.actors) or "-"
        table.add_row(slot.node_type, f"node {slot.node} gpu {slot.gpu}", names, f"{slot.used_gib:.1f} / {slot.gib:g}")
    return table


def print_summary(console: Console, s: RunSummary, order: list[str], actors: dict[str, int]) -> None:
    console.print(stage_table(order, s.stages, actors, s.wall_s))
    c, st = s.counts, s.stats
    console.print(
        f"[bold]done[/] in {s.wall_s:.1f} s: wrote {c.written} samples ({c.skipped_existing} already present), "
        f"{c.quarantined} quarantined, {c.dropped} dropped; {c.inputs_recorded} inputs recorded, "
        f"{c.inputs_skipped_done} done before"
    )
    console.print(
        f"output {s.out}: {st.get('samples', 0)} samples in {st.get('shards', 0)} shards, "
        f"{st.get('bytes', 0) / 1e6:.1f} MB; manifest.parquet, index.wids.json, stats.json, quarantine.parquet "
        f"({st.get('quarantined', 0)} rows)"
    )

