"""Run the same training on a Ray cluster: Ray Train's TorchTrainer starts one worker per GPU (or CPU slot),
each runs our LightningCLI with Ray's DDP strategy and cluster environment.

    python -m trainer.ray_launch --workers 8 --gpu -- --stage 2 --data.stream.shards=/data/shards

Everything after `--` is what `python -m trainer` takes. `RAY_ADDRESS` selects a running cluster; without it a
local Ray instance starts.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import lightning as L


def _ray_trainer_class():
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer

    class RayTrainer(L.Trainer):
        """A Lightning Trainer wired to Ray Train: DDP over Ray's process group, metrics reported to Ray."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["strategy"] = RayDDPStrategy()
            kwargs["devices"] = "auto"
            kwargs["plugins"] = [*(kwargs.get("plugins") or []), RayLightningEnvironment()]
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), RayTrainReportCallback()]
            super().__init__(*args, **kwargs)
            prepare_trainer(self)

    return RayTrainer


def train_loop_per_worker(config: dict[str, Any]) -> None:
    from trainer.cli import run

    run(config["argv"], trainer_class=_ray_trainer_class())


def launch(argv: list[str], *, workers: int, use_gpu: bool, storage: str | None = None,
           cpus_per_worker: float = 1.0):
    """Fit on `workers` Ray workers; returns Ray's `Result` (metrics history in `result.metrics_dataframe`)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"argv": list(argv)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=storage, name="layerflow"),
    )
    return trainer.fit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, _, rest = (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    parser = argparse.ArgumentParser(prog="python -m trainer.ray_launch", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--storage", default=None, help="Ray Train storage path (shared by all nodes)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray instance started when RAY_ADDRESS is unset (default: all)")
    args = parser.parse_args(ours)
    if args.num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    result = launch(rest, workers=args.workers, use_gpu=args.gpu, storage=args.storage)
    print(f"finished: {result.metrics}")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
