"""Run one engine config on a local 2-CPU Ray started for it (for importer tests that need no shared Ray)."""
from __future__ import annotations

import logging


def run_locally(cfg):
    import ray

    from data_engine.engine.runner import run

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        return run(cfg)
    finally:
        ray.shutdown()
