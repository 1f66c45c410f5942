import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import wids

from data_engine.schema import LAYERS, Captions, LayeredClip
from data_engine.shards import (
    EncodeOptions,
    ShardSink,
    complete_shards,
    decode_sample,
    finalize,
    member_names,
    read_clips,
    shard_urls,
)
from data_engine.sources.synthetic_world import SyntheticWorldSource
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import psnr

CFG = SyntheticConfig(num_clips=6, num_frames=8, height=64, width=96, seed=7)


def _write(out, clips, **kw):
    with ShardSink(out, **kw) as sink:
        for c in clips:
            sink.write(c)
    return sink.summary


@pytest.fixture(scope="module")
def clips():
    return [synthetic_clip(CFG, i) for i in range(CFG.num_clips)]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, clips):
    out = tmp_path_factory.mktemp("shards")
    _write(out, clips, maxcount=4)
    return out


def test_round_trip_keeps_metadata_and_quality(shard_dir, clips):
    by_key = {c.key: c for c in clips}
    got = list(read_clips(shard_dir))
    assert sorted(c.key for c in got) == sorted(by_key)
    for clip in got:
        ref = by_key[clip.key]
        assert clip.metadata() == ref.metadata()
        for name in ("fg", "bg", "blend"):
            assert psnr(clip.layer(name), ref.layer(name)) >= 40.0
        assert np.abs(clip.alpha.astype(int) - ref.alpha).max() <= 2


def test_lossless_alpha_is_exact(tmp_path, clips):
    _write(tmp_path, clips[:2], options=EncodeOptions(lossless_alpha=True))
    for clip in read_clips(tmp_path):
        ref = next(c for c in clips if c.key == clip.key)
        assert np.array_equal(clip.alpha, ref.alpha)


def test_size_limit_rolls_shards_and_sidecars_agree(shard_dir):
    shards = complete_shards(shard_dir)
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar"]
    manifest = pq.read_table(shard_dir / "manifest.parquet").to_pylist()
    assert len(manifest) == 6 and len({r["key"] for r in manifest}) == 6
    assert {r["shard"] for r in manifest} == {s.name for s in shards}
    stats = json.loads((shard_dir / "stats.json").read_text())
    assert stats["samples"] == 6 and stats["shards"] == 2
    per_shard = json.loads((shard_dir / "shard-000000_stats.json").read_text())
    assert per_shard["samples"] == 4
    assert not list(shard_dir.glob("*.tmp"))


def test_plain_webdataset_sees_five_members_per_sample(shard_dir):
    samples = list(wds.WebDataset([str(s) for s in complete_shards(shard_dir)], shardshuffle=False))
    assert len(samples) == 6
    for s in samples:
        assert "." not in s["__key__"]
        assert set(member_names("video")) <= set(s)
        assert json.loads(s["json"])["kind"] == "video"


def test_wids_reads_through_the_index(shard_dir):
    index = json.loads((shard_dir / "index.wids.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert sum(s["nsamples"] for s in index["shardlist"]) == 6
    ds = wids.ShardListDataset(str(shard_dir / "index.wids.json"))
    assert len(ds) == 6
    keys = set()
    for i in range(len(ds)):
        sample = ds[i]
        assert {f".{m}" for m in member_names("video")} <= set(sample)
        keys.add(sample["__key__"])
        clip = decode_sample({k.lstrip("."): v for k, v in sample.items()})
        assert clip.num_frames == CFG.num_frames
    assert len(keys) == 6


def test_pyarrow_reads_manifest_and_quarantine(shard_dir):
    manifest = pq.read_table(shard_dir / "manifest.parquet")
    assert {"key", "shard", "caption_fg", "caption_bg", "caption_blend", "scores"} <= set(manifest.column_names)
    assert pq.read_table(shard_dir / "quarantine.parquet").num_rows == 0


def test_a_shard_is_whole_on_disk_the_moment_it_is_complete(tmp_path, clips):
    seen = []
    with ShardSink(tmp_path, maxcount=2) as sink:
        finish = sink._finish_shard

        def read_right_after(tmp_name):
            finish(tmp_name)
            # Still inside webdataset's rollover, before it lets go of the file: a run killed here must leave
            # the shard whole, since readers and a resume take its samples as written.
            seen.append([c.key for c in read_clips(tmp_path)])

        sink._finish_shard = read_right_after  # the writer, opened at the first write, calls it
        for c in clips[:3]:  # the third sample completes the first shard
            sink.write(c)
    assert seen == [[c.key for c in clips[:2]], [c.key for c in clips[:3]]]  # the rollover, then the close


def test_rewrite_is_idempotent_by_key(tmp_path, clips):
    _write(tmp_path, clips[:3])
    summary = _write(tmp_path, clips)
    assert summary["last_run"]["written_this_run"] == 3
    assert summary["last_run"]["skipped_existing_this_run"] == 3
    keys = [c.key for c in read_clips(tmp_path)]
    assert sorted(keys) == sorted(c.key for c in clips)


def test_image_samples_use_png_members(tmp_path):
    rng = np.random.default_rng(0)
    img = LayeredClip(
        key="img-00000-00",
        fg=rng.integers(0, 256, (1, 10, 12, 3), dtype=np.uint8),
        alpha=rng.integers(0, 256, (1, 10, 12), dtype=np.uint8),
        bg=rng.integers(0, 256, (1, 10, 12, 3), dtype=np.uint8),
        blend=rng.integers(0, 256, (1, 10, 12, 3), dtype=np.uint8),
        captions=Captions("a", "b", "c"),
        kind="image",
        origin="image",
    )
    _write(tmp_path, [img])
    raw = next(iter(wds.WebDataset(shard_urls(tmp_path), shardshuffle=False)))
    assert {f"{name}.png" for name in LAYERS} | {"json"} <= set(raw)
    back = decode_sample(raw)
    for name in LAYERS:
        assert np.array_equal(back.layer(name), img.layer(name))


def test_quarantine_is_recorded_and_survives_reopen(tmp_path):
    with ShardSink(tmp_path) as sink:
        sink.quarantine("/data/bad.mp4", "probe", ValueError("/data/bad.mp4: zero-byte file"))
    with ShardSink(tmp_path) as sink:
        sink.quarantine("/data/other.mp4", "split", "too short")
    rows = pq.read_table(tmp_path / "quarantine.parquet").to_pylist()
    assert {(r["input"], r["stage"], r["error_type"]) for r in rows} == {
        ("/data/bad.mp4", "probe", "ValueError"),
        ("/data/other.mp4", "split", "Rejected"),
    }


def test_quarantine_keeps_the_rows_of_the_run_that_settled_each_input(tmp_path):
    """Run r0 quarantines a clip of input a and input b; run r1 retries a. a's record names the run whose outcome
    it is: r1 (fixed or failed again) drops r0's rows of a, r0 (r1 crashed before a's record) drops r1's."""
    with ShardSink(tmp_path, run_id="r0") as sink:
        sink.quarantine("a [a-00000]", "split", "too short", engine_input="a")
        sink.quarantine("b", "probe", "zero-byte", engine_input="b")
    with ShardSink(tmp_path, run_id="r1") as sink:
        sink.quarantine("a", "probe", "still broken", engine_input="a")

    def table(settled: dict) -> list[tuple[str, str]]:
        stats = finalize(tmp_path, settled=settled)
        rows = pq.read_table(tmp_path / "quarantine.parquet").to_pylist()
        assert stats["quarantined"] == len(rows)  # the stats count what the table holds
        assert stats["quarantined_by_stage"] == dict(Counter(r["stage"] for r in rows))
        return sorted((r["input"], r["message"]) for r in rows)

    assert table({"a": "r1", "b": "r0"}) == [("a", "still broken"), ("b", "zero-byte")]
    assert table({"a": "r0", "b": "r0"}) == [("a [a-00000]", "too short"), ("b", "zero-byte")]
    assert table({"b": "r0"}) == [("a", "still broken"), ("a [a-00000]", "too short"), ("b", "zero-byte")]
    assert table({"a": "r2", "b": "r0"}) == [("b", "zero-byte")]  # r2 settled a with no failure


def test_missing_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="make dataset"):
        shard_urls(tmp_path / "nope")


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from data_engine.shards import ShardSink
    from data_engine.synthetic import SyntheticConfig, synthetic_clip
    cfg = SyntheticConfig(num_clips=40, num_frames=4, height=32, width=48, seed=1)
    sink = ShardSink(sys.argv[1], maxcount=5)
    for i in range(cfg.num_clips):
        sink.write(synthetic_clip(cfg, i))
        if i == 7:
            Path(sys.argv[2]).write_text("mid-shard")
            time.sleep(60)
    sink.close()
    """
)


def test_writer_killed_mid_shard_leaves_no_visible_partial_shard(tmp_path):
    out, flag = tmp_path / "out", tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(flag)])
    deadline = time.time() + 60
    while not flag.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "writer never reached the kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Shard 0 (5 samples) completed; shard 1 was open with 3 samples.
    assert [s.name for s in complete_shards(out)] == ["shard-000000.tar"]
    assert list(out.glob("shard-000001.tar.tmp"))
    with tarfile.open(complete_shards(out)[0]) as tar:
        assert len({m.name.split(".")[0] for m in tar.getmembers()}) == 5
    assert len(list(read_clips(out))) == 5
    # A rerun cleans the partial shard and writes each clip exactly once.
    world = SyntheticConfig(num_clips=40, num_frames=4, height=32, width=48, seed=1)
    clips = list(SyntheticWorldSource(world).iter_clips())
    summary = _write(out, clips, maxcount=5)
    assert summary["last_run"]["skipped_existing_this_run"] == 5
    keys = [c.key for c in read_clips(out)]
    assert len(keys) == 40 == len(set(keys))
    assert not list(out.glob("*.tmp"))
