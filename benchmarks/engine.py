"""Data engine throughput on this machine: pipeline efficiency, and the speed-up from 1 to 2 actors of a stage.

1. Pipeline efficiency = end-to-end clips/s of the streaming Ray pipeline (from the first batch any stage starts
   to the last sample at the sink, so Ray's actor start-up is left out) / standalone clips/s of its slowest stage (that stage alone, in one process, one thread, on the same
   clips). 1.0 means the pipeline runs as fast as its bottleneck allows. On a machine with few cores every stage
   shares them, so the bound there is cores / (sum of per-clip stage times); both are printed.
2. Actor scaling: the CPU-bound `synthetic_layers` stage (single-threaded numpy) alone on Ray with 1, then 2
   actors over the same rows; speed-up = clips/s with 2 / with 1 (measured the same way).

Usage: python benchmarks/engine.py [--videos 32] [--height 240] [--width 360]   (figures go in BENCHMARKS.md)
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_engine.engine.config import parse_config  # noqa: E402
from data_engine.engine.pipeline import INPUT, PAYLOAD, WEIGHT, StageActor, build_dataset  # noqa: E402
from data_engine.engine.resources import PoolPlan, StagePlan  # noqa: E402
from data_engine.engine.runner import run  # noqa: E402

STAGES = ["probe", "split", "synthetic_layers", "compose", "encode"]


def engine_config(out: Path, args: argparse.Namespace) -> dict:
    return {
        "run": {"out": str(out), "maxcount": 64, "progress": False},
        "clip": {"num_frames": args.frames, "fps": 8, "height": args.height, "width": args.width},
        "sources": [{"type": "synthetic_videos", "num_clips": args.videos, "num_frames": args.frames,
                     "height": args.height, "width": args.width, "seed": 4}],
        "stages": STAGES,
    }


def standalone(cfg, work: Path) -> tuple[dict[str, float], list[dict]]:
    """Per stage: seconds per clip, one process, one thread. Also returns the rows that enter synthetic_layers."""
    import cv2

    cv2.setNumThreads(1)
    from data_engine.engine.runner import stage_setup

    _, options = stage_setup(cfg)
    from data_engine.engine.inputs import work_items

    rows = [{INPUT: it.input_id, WEIGHT: Fraction(1), "key": it.input_id, "source_id": it.input_id,
             "source": it.source, "kind": it.kind, "item": it.item} for it in work_items(cfg)]
    per_clip: dict[str, float] = {}
    layer_rows: list[dict] = []
    timings: dict[str, float] = {}
    for name in ["source", *STAGES]:
        actor = StageActor(StagePlan(name, 1.0, 0.0, 1, 1, 0), options[name], None)
        if name == "source":
            actor.process(rows)  # writes the synthetic videos once, so the timed pass measures reading only
        if name == "synthetic_layers":
            layer_rows = [dict(r) for r in rows]
        start = time.perf_counter()
        out = []
        for r in rows:  # one row at a time, as the pipeline's batch size 1-4 does
            out += actor.process([r])[0]
        timings[name] = time.perf_counter() - start
        rows = out
    clips = len(rows)
    per_clip = {n: t / clips for n, t in timings.items()}
    return per_clip, layer_rows


def scaling(rows: list[dict], actors: int, cpus: float) -> float:
    """clips/s of synthetic_layers alone with `actors` actors, from its first batch to its last output."""
    import ray

    from data_engine.engine.pipeline import EngineMetrics

    name = f"bench-metrics-{actors}"
    metrics = ray.remote(num_cpus=0)(EngineMetrics).options(name=name).remote()
    plan = PoolPlan((StagePlan("synthetic_layers", cpus, 0.0, actors, 1, 0),))
    ds = build_dataset(rows, [plan], {"synthetic_layers": {}}, name)
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n += len(batch[PAYLOAD])  # count only: unpickling ~10 MB rows here would load the cores being measured
    last = time.time()
    first = ray.get(metrics.snapshot.remote())["synthetic_layers"]["first_start"]
    ray.kill(metrics)
    return n / (last - first)


def _process_rows(rows: list[dict]) -> int:
    actor = StageActor(StagePlan("synthetic_layers", 1.0, 0.0, 1, 1, 0), {}, None)
    return sum(len(actor.process([r])[0]) for r in rows)


def baseline(rows: list[dict], workers: int) -> float:
    """The same stage in plain OS processes, no Ray: the speed-up this machine gives at this moment."""
    from concurrent.futures import ProcessPoolExecutor

    chunks = [rows[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_process_rows, [rows[:1]] * workers))  # start and import first, as Ray actors do
        start = time.perf_counter()
        n = sum(pool.map(_process_rows, chunks))
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=360)
    parser.add_argument("--scaling-rows", type=int, default=48)
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()[0]:.1f} on {cores} cores")
    ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config(engine_config(Path(tmp) / "out", args))
        per_clip, layer_rows = standalone(cfg, Path(tmp))
        slowest = max(per_clip, key=per_clip.get)
        # Same config and work dir: the synthetic videos the standalone pass wrote are read, not regenerated,
        # so both measurements do the same work per clip.
        summary = run(cfg)
        e2e = summary.stats["engine"]["processing_clips_per_s"] or 0.0
        print(f"machine: {cores} CPU cores; workload: {summary.counts.written} clips of {args.frames}x"
              f"{args.height}x{args.width} from {args.videos} synthetic videos")
        for name, t in per_clip.items():
            print(f"  standalone {name:17s} {1 / t:8.2f} clips/s  ({t * 1000:.0f} ms/clip, 1 thread)")
        bound = cores / sum(per_clip.values())
        print(f"end-to-end: {e2e:.2f} clips/s after actor start-up; wall incl. start-up {summary.wall_s:.1f} s")
        print(f"pipeline efficiency = e2e / slowest stage standalone ({slowest}) = {e2e * per_clip[slowest]:.2f}")
        print(f"CPU bound on {cores} cores = cores / sum of stage times = {bound:.2f} clips/s; "
              f"e2e reaches {e2e / bound:.2f} of it")
        rows = (layer_rows * (args.scaling_rows // max(1, len(layer_rows)) + 1))[: args.scaling_rows]
        for i, r in enumerate(rows):
            r[INPUT] = f"{r[INPUT]}#{i}"
        cpus = min(1.0, cores / 2)
        one = scaling(rows, 1, cpus)
        two = scaling(rows, 2, cpus)
        print(f"scaling synthetic_layers on Ray: 1 actor {one:.2f} clips/s, 2 actors {two:.2f} clips/s, "
              f"speed-up {two / one:.2f}x")
        b1, b2 = baseline(rows, 1), baseline(rows, 2)
        print(f"same stage in plain processes (what the machine gives now): 1 -> 2 processes {b1:.2f} -> "
              f"{b2:.2f} clips/s, speed-up {b2 / b1:.2f}x; load average {os.getloadavg()[0]:.1f}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
