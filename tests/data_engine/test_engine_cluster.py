"""The engine on a real two-node Ray cluster started on this machine (`ray.cluster_utils.Cluster`)."""
from __future__ import annotations

import logging

import pyarrow.parquet as pq
import pytest

from data_engine.engine.config import parse_config
from data_engine.engine.runner import run
from data_engine.shards import read_clips


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, resources={"second_node": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.cluster
def test_pipeline_spreads_over_two_nodes_and_writes_each_sample_once(two_nodes, tmp_path):
    cluster, worker = two_nodes
    raw = {
        "run": {"out": str(tmp_path / "fused"), "maxcount": 3, "progress": False},
        "clip": {"num_frames": 8, "fps": 8, "height": 32, "width": 48},
        "sources": [{"type": "synthetic_videos", "num_clips": 4, "num_frames": 16, "height": 40, "width": 56,
                     "seed": 1}],
        "stages": ["probe", "split", "synthetic_layers", "compose", "encode"],
    }
    runs = {}
    # The default fuses the chain into one pool, one 1-CPU actor per node; which actor gets the 4 tiny inputs is
    # Ray's choice (it prefers the node holding the blocks). One pool per stage packs fractional actors onto both
    # nodes, so there both nodes must have done work.
    for fuse in (True, False):
        raw["run"] |= {"out": str(tmp_path / f"fuse-{fuse}"), "fuse": fuse}
        summary = run(parse_config(raw))
        out = tmp_path / f"fuse-{fuse}"
        assert summary.cluster.nodes == 2 and summary.cluster.cpus == 2
        keys = pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist()
        assert len(keys) == len(set(keys)) == 8
        assert sorted(c.key for c in read_clips(out)) == sorted(keys)
        assert sum(p.num_cpus * p.actors for p in summary.plans) <= 2
        runs[fuse] = (sorted(keys), summary)
    assert runs[True][0] == runs[False][0]
    assert len(runs[True][1].plans) == 1 and runs[True][1].plans[0].actors == 2  # an actor on each node
    nodes = {n for s in runs[False][1].stages.values() for n in s["nodes"]}
    assert worker.node_id in nodes and len(nodes) == 2  # both nodes ran stage actors
