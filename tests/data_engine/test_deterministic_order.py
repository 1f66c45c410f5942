"""`run.deterministic_order`: the engine writes samples in the order of its inputs, so two runs of one config
write the same samples in the same order (the tiny world's configs turn it on: one recipe, one model)."""
from __future__ import annotations

import logging

import webdataset as wds

from data_engine.defaults import configs_dir
from data_engine.engine.config import load_config
from data_engine.engine.runner import run
from data_engine.shards import shard_urls


def _keys(out) -> list[str]:
    return [s["__key__"] for url in shard_urls(out)
            for s in wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())]


def test_two_runs_write_the_inputs_in_order(tmp_path):
    import ray

    sets = ["sources.0.num_clips=6", "sources.0.num_frames=8", "sources.0.height=64", "sources.0.width=64",
            "clip.num_frames=8", "clip.height=32", "clip.width=48", "run.maxcount=4", "run.progress=false"]
    configs = [load_config(configs_dir("engine") / "synthetic_videos.yaml", sets, out=str(tmp_path / name))
               for name in ("a", "b")]
    assert all(cfg.run.deterministic_order for cfg in configs)  # the shipped config turns it on
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        for cfg in configs:
            run(cfg)
    finally:
        ray.shutdown()
    first, second = (_keys(cfg.out) for cfg in configs)
    assert len(first) == 6 and first == second == sorted(first)
