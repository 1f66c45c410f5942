"""The demo's shards (its step 1: the Ray engine on the demo config) read back with plain webdataset, wids
(through the index) and Ray Data, without our code."""
import importlib.util
import json

import pytest
import webdataset as wds
import wids

MEMBERS = {"fg.mp4", "alpha.mp4", "bg.mp4", "blend.mp4", "json"}
# The demo config: one sample per synthetic video (the perception chain keeps one object) and 64 world clips,
# at most 8 samples per shard.
SAMPLES, SHARDS = 2 + 64, 9


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory, repo_root):
    spec = importlib.util.spec_from_file_location("demo", repo_root / "infra" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = demo.build_dataset(tmp_path_factory.mktemp("demo") / "dataset")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == SAMPLES and stats["shards"] == SHARDS and stats["quarantined"] == 0
    (out / "shard-000007.tar.tmp").write_bytes(b"half a shard")  # what a killed writer leaves behind
    return out


def test_plain_webdataset(demo_shards):
    urls = sorted(str(p) for p in demo_shards.glob("shard-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == SAMPLES == len({s["__key__"] for s in samples})
    origins = set()
    for s in samples:
        assert MEMBERS <= set(s)
        meta = json.loads(s["json"])
        assert set(meta["captions"]) == {"fg", "bg", "blend"} and all(meta["captions"].values())
        origins.add(meta["origin"])
    # The tiny perception chain (engine) made some samples, the synthetic layered source the rest.
    assert origins == {"engine", "synthetic"}


def test_wids_through_the_index(demo_shards):
    ds = wids.ShardListDataset(str(demo_shards / "index.wids.json"))
    keys = set()
    for i in range(len(ds)):
        sample = ds[i]
        assert {f".{m}" for m in MEMBERS} <= set(sample)
        keys.add(sample["__key__"])
    assert len(keys) == SAMPLES


def test_ray_data_read_webdataset(demo_shards):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        rows = ray.data.read_webdataset(str(demo_shards), file_extensions=["tar"]).take_all()
    finally:
        ray.shutdown()
    assert len(rows) == SAMPLES
    assert all(MEMBERS <= set(r) for r in rows)
