"""Shard-write throughput as a ratio to writing the same bytes as a raw tar (one run, interleaved repeats).

    python benchmarks/shards.py [--samples 96] [--per-shard 32] [--repeats 3]

Payload: the official DAVIS sample clips (real footage, 16 x 480 x 720) when `../shared/samples` is present, else
synthetic clips; each is encoded once and written under `--samples` distinct keys. Prints MB/s for a raw `tarfile`
of the members, for our ShardSink given the encoded samples (sidecar parquet + stats, fsync, atomic rename
included), and the H.264 encode rate that feeds it.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_engine.schema import sample_key  # noqa: E402
from data_engine.shards import ShardSink, encode_clip  # noqa: E402
from data_engine.sources.official import OfficialSampleSource  # noqa: E402
from data_engine.synthetic import SyntheticConfig, synthetic_clip  # noqa: E402

SAMPLES = REPO.parent / "shared" / "samples" / "layerflow_official"


def payload_clips():
    if SAMPLES.is_dir():
        source = OfficialSampleSource(SAMPLES)
        clips = [c for item in source.list_inputs() if "DAVIS" in item for c in source.load(item)]
        return clips, "official DAVIS clips"
    cfg = SyntheticConfig(num_clips=3, num_frames=16)
    return [synthetic_clip(cfg, i) for i in range(3)], "synthetic clips"


def raw_tar(samples, out: Path) -> None:
    with tarfile.open(out / "raw.tar", "w") as tar:
        for s in samples:
            for name, data in s.items():
                if name.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{s['__key__']}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def make_sink_writer(per_shard: int, durable: bool):
    def sink(pairs, out: Path) -> None:
        with ShardSink(out, maxcount=per_shard, durable=durable) as s:
            for meta, sample in pairs:
                s.write_encoded(meta, sample)

    return sink


def timed(fn, arg) -> float:
    tmp = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        fn(arg, tmp)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--per-shard", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    clips, what = payload_clips()
    start = time.perf_counter()
    encoded = [encode_clip(c) for c in clips]
    encode_s = time.perf_counter() - start
    pairs = []
    for i in range(args.samples):
        meta, sample = encoded[i % len(clips)]
        key = sample_key("bench", i)
        pairs.append(({**meta, "key": key}, {**sample, "__key__": key}))
    samples = [s for _, s in pairs]
    nbytes = sum(len(v) for s in samples for k, v in s.items() if not k.startswith("__"))
    writers = {"raw tar": raw_tar,
               "ShardSink (fsync)": make_sink_writer(args.per_shard, durable=True),
               "ShardSink (no fsync)": make_sink_writer(args.per_shard, durable=False)}
    times = {name: [] for name in writers}
    for _ in range(args.repeats):
        for name, fn in writers.items():
            times[name].append(timed(fn, samples if fn is raw_tar else pairs))
    best = {name: min(t) for name, t in times.items()}
    print(f"payload: {args.samples} samples from {len(clips)} {what}, {nbytes / 1e6:.1f} MB, "
          f"{args.per_shard} per shard, best of {args.repeats}")
    print(f"{'writer':<26}{'MB/s':>10}{'samples/s':>12}{'ratio to raw tar':>18}")
    for name, t in best.items():
        print(f"{name:<26}{nbytes / 1e6 / t:>10.1f}{args.samples / t:>12.1f}{best['raw tar'] / t:>18.3f}")
    sink_rate = args.samples / best["ShardSink (fsync)"]
    print(f"H.264 encode (fg, alpha, bg, blend; 1 process): {len(clips) / encode_s:.2f} clips/s "
          f"-> the sink is {sink_rate / (len(clips) / encode_s):.0f}x faster than one encoder feeds it")


if __name__ == "__main__":
    main()
