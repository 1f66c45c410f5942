"""Data engine throughput on this machine: pipeline efficiency, and the speed-up from 1 to 2 actors.

1. Pipeline efficiency = end-to-end clips/s of the streaming Ray pipeline (from the first batch any stage starts
   to the last sample at the sink, so Ray's actor start-up is left out) / standalone clips/s of its slowest stage
   (that stage alone, in one process, one thread, on the same clips). 1.0 means the pipeline runs as fast as its
   bottleneck allows. When every stage shares a few cores, the machine's own bound is cores / (sum of per-clip
   stage times), so the best efficiency possible is cores x slowest / sum; both are printed.
2. Actor scaling, 1 -> 2 actors, measured the same way:
   a. the pipeline itself: its light CPU stages run fused in one pool (video path in, encoded sample out), with
      `max_actors` 1, then 2;
   b. the CPU-bound `synthetic_layers` stage alone, with ~10 MB clip rows through the object store both ways.
   The same work in plain OS processes gives what the machine itself scales by at that moment.

Usage: python benchmarks/engine.py [--videos 64] [--height 240] [--width 360] [--repeats 3]
(figures go in BENCHMARKS.md)
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_engine.engine.config import parse_config  # noqa: E402
from data_engine.engine.pipeline import INPUT, StageActor, build_dataset  # noqa: E402
from data_engine.engine.resources import PoolPlan, StagePlan  # noqa: E402
from data_engine.engine.runner import run  # noqa: E402
from data_engine.stages.base import Resources  # noqa: E402

STAGES = ["probe", "split", "synthetic_layers", "compose", "encode"]


def engine_config(out: Path, work: Path, args: argparse.Namespace, max_actors: int | None = None) -> dict:
    encode = {"name": "encode"} | ({"max_actors": max_actors} if max_actors else {})
    return {
        "run": {"out": str(out), "work_dir": str(work), "maxcount": 64, "progress": False},
        "clip": {"num_frames": args.frames, "fps": 8, "height": args.height, "width": args.width},
        "sources": [{"type": "synthetic_videos", "num_clips": args.videos, "num_frames": args.frames,
                     "height": args.height, "width": args.width, "seed": 4}],
        "stages": [*STAGES[:-1], encode],
    }


def work_rows(cfg) -> list[dict]:
    from data_engine.engine.inputs import work_items

    return [it.row() for it in work_items(cfg)]


def chain(cfg) -> list[StageActor]:
    """Every stage of the pipeline as the engine builds it (one thread each), for in-process runs."""
    from data_engine.engine.runner import stage_setup

    opts = {s.name: s.opts for s in stage_setup(cfg)}
    return [StageActor(StagePlan(name, Resources(retries=0), 1), opts[name]) for name in ["source", *STAGES]]


def standalone(cfg) -> tuple[dict[str, float], list[dict]]:
    """Per stage: seconds per clip, one process, one thread. Also returns the rows that enter synthetic_layers."""
    actors = chain(cfg)
    rows = work_rows(cfg)
    actors[0].process(rows)  # writes the synthetic videos once, so the timed pass measures reading only
    timings: dict[str, float] = {}
    layer_rows: list[dict] = []
    for actor in actors:
        if actor.plan.name == "synthetic_layers":
            layer_rows = [dict(r) for r in rows]
        start = time.perf_counter()
        out = []
        for r in rows:  # one row at a time, as the pipeline's batch size 1-4 does
            out += actor.process([r])[0]
        timings[actor.plan.name] = time.perf_counter() - start
        rows = out
    return {n: t / len(rows) for n, t in timings.items()}, layer_rows


def pipeline_rate(out: Path, work: Path, args: argparse.Namespace,
                  max_actors: int | None = None) -> tuple[float, object]:
    """End-to-end clips/s of the engine (`run`), from its first stage batch to its last sample."""
    from rich.console import Console

    quiet = Console(file=io.StringIO())
    summary = run(parse_config(engine_config(out, work, args, max_actors)), console=quiet)
    return summary.stats["engine"]["processing_clips_per_s"] or 0.0, summary


def stage_rate(rows: list[dict], actors: int, cpus: float) -> float:
    """clips/s of synthetic_layers alone with `actors` actors, from its first batch to its last output."""
    import ray

    from data_engine.engine.pipeline import EngineMetrics

    name = f"bench-metrics-{actors}"
    metrics = ray.remote(num_cpus=0)(EngineMetrics).options(name=name).remote()
    plan = PoolPlan((StagePlan("synthetic_layers", Resources(num_cpus=cpus, retries=0), actors),))
    ds = build_dataset(rows, [plan], {}, name)
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        n += batch.num_rows  # count only: unpickling ~10 MB rows here would load the cores being measured
    last = time.time()
    first = ray.get(metrics.snapshot.remote())["synthetic_layers"]["first_start"]
    ray.kill(metrics)
    return n / (last - first)


def _run_chain(job: tuple[dict, list[dict], str | None]) -> int:
    """In a worker process: rows through the whole chain (stage=None) or through one stage."""
    raw, rows, stage = job
    actors = chain(parse_config(raw))
    if stage:
        actors = [a for a in actors if a.plan.name == stage]
    n = 0
    for row in rows:
        batch = [row]
        for actor in actors:
            batch = actor.step(batch)
        n += len(batch)
    return n


def processes_rate(raw: dict, rows: list[dict], workers: int, stage: str | None) -> float:
    """The same work in plain OS processes, no Ray: what this machine scales by at this moment."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [rows[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_run_chain, [(raw, rows[:1], stage)] * workers))  # start and import first, as Ray actors do
        start = time.perf_counter()
        n = sum(pool.map(_run_chain, [(raw, c, stage) for c in chunks]))
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=360)
    parser.add_argument("--scaling-rows", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()[0]:.1f} on {cores} cores")
    ray.init(address="local", num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "videos"  # the synthetic videos, written once and read by every run below
        raw = engine_config(tmp / "standalone", work, args)
        for r in range(args.repeats):  # interleaved, so a burst of load on a shared machine hits every measure
            per_clip, layer_rows = standalone(parse_config(raw))
            for name, t in per_clip.items():
                runs.setdefault(name, []).append(t)
            e2e, summary = pipeline_rate(tmp / f"e2e{r}", work, args)
            one, _ = pipeline_rate(tmp / f"one{r}", work, args, max_actors=1)
            rows = work_rows(parse_config(raw))
            for key, value in (("e2e", e2e), ("ray1", one), ("proc1", processes_rate(raw, rows, 1, None)),
                               ("proc2", processes_rate(raw, rows, 2, None))):
                runs.setdefault(key, []).append(value)
            print(f"repeat {r + 1}: e2e {e2e:.2f} clips/s, 1 actor {one:.2f}, plain processes "
                  f"{runs['proc1'][-1]:.2f} -> {runs['proc2'][-1]:.2f}; load average {os.getloadavg()[0]:.1f}")
        med = {k: statistics.median(v) for k, v in runs.items()}
        stages = ["source", *STAGES]
        slowest = max(stages, key=med.get)
        print(f"machine: {cores} CPU cores; workload: {summary.counts.written} clips of {args.frames}x"
              f"{args.height}x{args.width} from {args.videos} synthetic videos; medians of {args.repeats} repeats")
        print("pools: " + "; ".join(f"{p.name} x{p.actors}" for p in summary.plans))
        for name in stages:
            print(f"  standalone {name:17s} {1 / med[name]:8.2f} clips/s  ({med[name] * 1000:.0f} ms/clip, 1 thread)")
        total = sum(med[n] for n in stages)
        e2e = med["e2e"]
        print(f"end-to-end: {e2e:.2f} clips/s after actor start-up (runs: "
              f"{', '.join(f'{x:.2f}' for x in runs['e2e'])})")
        print(f"pipeline efficiency = e2e / slowest stage standalone ({slowest}) = {e2e * med[slowest]:.2f} "
              f"(runs: {', '.join(f'{x * med[slowest]:.2f}' for x in runs['e2e'])}; at most "
              f"{min(1.0, cores * med[slowest] / total):.2f} on {cores} cores = cores x slowest / sum of stage times)")
        print(f"the same chain in {cores} plain processes: {med['proc2']:.2f} clips/s; the engine reaches "
              f"{e2e / med['proc2']:.2f} of it")
        print(f"scaling the pipeline (fused pool) on Ray, 1 -> 2 actors: {med['ray1']:.2f} -> {e2e:.2f} clips/s, "
              f"speed-up {e2e / med['ray1']:.2f}x; plain processes {med['proc1']:.2f} -> {med['proc2']:.2f}, "
              f"{med['proc2'] / med['proc1']:.2f}x")

        rows = (layer_rows * (args.scaling_rows // max(1, len(layer_rows)) + 1))[: args.scaling_rows]
        for i, r in enumerate(rows):
            r[INPUT] = f"{r[INPUT]}#{i}"
        cpus = min(1.0, cores / 2)
        one, two = stage_rate(rows, 1, cpus), stage_rate(rows, 2, cpus)
        b1, b2 = (processes_rate(raw, rows, w, "synthetic_layers") for w in (1, 2))
        print(f"scaling synthetic_layers alone on Ray (~10 MB rows through the object store), 1 -> 2 actors: "
              f"{one:.2f} -> {two:.2f} clips/s, speed-up {two / one:.2f}x; plain processes {b1:.2f} -> {b2:.2f}, "
              f"{b2 / b1:.2f}x; load average {os.getloadavg()[0]:.1f}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
