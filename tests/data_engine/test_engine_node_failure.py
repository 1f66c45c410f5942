"""A worker node of a multi-node Ray cluster lost mid-run: the run finishes on the node that is left, with each
sample exactly once and the same samples as a run that lost nothing."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections import Counter
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from data_engine.engine.config import parse_config
from data_engine.engine.runner import run
from data_engine.engine.state import InputLedger, load_records
from data_engine.shards import complete_shards, iter_raw_samples

# One clip per video, one sample per shard.
VIDEOS = 6
STALL_STAGE = '''
import dataclasses
import time
from pathlib import Path

import ray

from data_engine.stages.base import Stage


@dataclasses.dataclass(frozen=True)
class StallOptions:
    node: str = ""
    marker: str = ""


class StallOnNode(Stage):
    """Holds its batches on one node, and says so in a file: that node has work in flight when it is killed."""

    Options = StallOptions

    def process_batch(self, rows):
        if self.opts.node == ray.get_runtime_context().get_node_id():
            Path(self.opts.marker).touch()
            time.sleep(120)
        return rows
'''


def config(out, videos, **stall) -> dict:
    # One folder of generated videos for both runs: a sample records the path of its video.
    return {
        "run": {"out": str(out), "work_dir": str(videos), "maxcount": 1, "progress": False},
        "clip": {"num_frames": 8, "fps": 8, "height": 32, "width": 48},
        "sources": [{"type": "synthetic_videos", "num_clips": VIDEOS, "num_frames": 8, "height": 40, "width": 56,
                     "seed": 4}],
        "stages": ["probe", "split", {"name": "stall:StallOnNode", "options": stall}, "synthetic_layers", "compose",
                   "encode"],
    }


@pytest.fixture
def head_and_two_workers(monkeypatch, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # Blocks in the object store of the node that made them, as real samples (over Ray's 100 KiB inline limit)
    # are: the lost node takes its finished blocks with it, not only its work in flight.
    monkeypatch.setenv("RAY_max_direct_call_object_size", "1024")
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "stall.py").write_text(STALL_STAGE)
    monkeypatch.syspath_prepend(str(plugin))
    # The nodes' workers inherit it from the raylets this process starts.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")])))
    # The head runs the driver and no stage (no CPUs), so every actor is on a worker node and losing one loses
    # work in flight.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def samples(out) -> dict[str, str]:
    """{key: hash of the sample's bytes, every member}."""
    got: dict[str, str] = {}
    for s in iter_raw_samples(out):
        digest = hashlib.sha256()
        for name in sorted(k for k in s if not k.startswith("__")):
            digest.update(name.encode() + s[name])
        assert s["__key__"] not in got
        got[s["__key__"]] = digest.hexdigest()
    return got


@pytest.mark.cluster
def test_a_worker_node_lost_mid_run_loses_and_duplicates_nothing(head_and_two_workers, tmp_path):
    cluster, (doomed, _) = head_and_two_workers
    clean = tmp_path / "clean"
    run(parse_config(config(clean, tmp_path / "videos")))
    want = samples(clean)
    assert len(want) == VIDEOS

    out, stalled = tmp_path / "killed", tmp_path / "stalled"
    killed, finished = threading.Event(), threading.Event()

    def kill_with_work_in_flight() -> None:
        deadline = time.monotonic() + 120
        while not finished.is_set() and time.monotonic() < deadline:
            if stalled.exists() and complete_shards(out):
                cluster.remove_node(doomed, allow_graceful=False)  # SIGKILL: the raylet and its workers
                killed.set()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_with_work_in_flight, daemon=True)
    killer.start()
    log = io.StringIO()
    try:
        summary = run(parse_config(config(out, tmp_path / "videos", node=doomed.node_id, marker=str(stalled))),
                      console=Console(file=log, width=400))
    finally:
        finished.set()
        killer.join(timeout=60)
    assert killed.is_set(), "the doomed node never held work in flight beside a complete shard"

    inputs = summary.stats["engine"]["inputs"]
    # The inputs held on the lost node ran again on the node that is left, and nothing else did.
    assert 0 < inputs["rerun"] < VIDEOS and summary.counts.rerun == inputs["rerun"]
    assert f"worker lost: {inputs['rerun']} input(s) did not all come back" in log.getvalue()
    assert inputs["status"] == {"ok": VIDEOS} and inputs["unfinished"] == 0
    assert summary.counts.quarantined == 0 and not pq.read_table(out / "quarantine.parquet").num_rows
    keys = pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist()
    assert not [k for k, n in Counter(keys).items() if n > 1]
    assert samples(out) == want  # no sample lost, none twice, each the clean run's bytes


def test_an_input_run_again_is_accounted_afresh(tmp_path):
    ledger = InputLedger(tmp_path, "run")
    ledger.account("v", Fraction(1, 2), key="v-0")  # one of its two clips came back before its node was lost
    ledger.reopen(ledger.missing(["v"]))
    for i in range(2):  # the rerun brings both again
        ledger.account("v", Fraction(1, 2), key=f"v-{i}")
    assert not ledger.missing(["v"])
    assert ledger.flush({"v-0", "v-1"}) == 1 and load_records(tmp_path)["v"]["keys"] == ["v-0", "v-1"]
