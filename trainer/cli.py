"""`layerflow train --stage N [--tiny] [--config FILE] [overrides]` (or `python -m trainer`): LightningCLI over the
stage's YAML (the installed `stageN.yaml`, with --tiny `tiny_stageN.yaml`, unless --config names one).

Overrides use the config's dotted keys, e.g. `--data.stream.shards=DIR --trainer.max_steps=100
--model.network.pretrained=weights/cogvideox-2b --ckpt_path=runs/stage2/checkpoints/last.ckpt`.
Every error in the configuration or the data is one line on stderr and exit status 2.

Examples:
  layerflow train --stage 1 --tiny                  # reads outputs/dataset -> outputs/train/tiny_stage1/final/
  layerflow train --stage 2 --tiny --trainer.max_steps=20
  layerflow train --stage 1 --model.network.pretrained=$LAYERFLOW_WEIGHTS/cogvideox-2b --data.stream.shards=DIR
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from data_engine.defaults import configs_dir
from trainer.checkpoint import RNGStateCallback, SafetensorsCheckpointIO
from trainer.config import STAGES, TrainConfigError, stage_spec
from trainer.data import LayerFlowDataModule
from trainer.module import LayerFlowModule
from trainer.progress import StepProgressBar
from trainer.quiet import quiet_training

CONFIG_DIR = configs_dir("train")


class LayerFlowCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.stage", "data.stage")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        return super()._instantiate_trainer(with_run_essentials(dict(config)), callbacks)


def with_run_essentials(kwargs: dict) -> dict:
    """RNG states in every checkpoint, checkpoints without pickle (DeepSpeed writes its own format), and a
    progress bar that counts optimizer steps."""
    callbacks = list(kwargs.get("callbacks") or [])
    if not any(isinstance(c, RNGStateCallback) for c in callbacks):
        callbacks.append(RNGStateCallback())
    if kwargs.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgressBar())
    kwargs["callbacks"] = callbacks
    strategy = kwargs.get("strategy")
    if "deepspeed" not in type(strategy).__name__.lower() and "deepspeed" not in str(strategy):
        plugins = list(kwargs.get("plugins") or [])
        if not any(isinstance(p, SafetensorsCheckpointIO) for p in plugins):
            plugins.append(SafetensorsCheckpointIO())
        kwargs["plugins"] = plugins
    return kwargs


def stage_config(stage: int, preset: str = "") -> Path:
    return CONFIG_DIR / f"{preset}stage{stage}.yaml"


def build_args(argv: list[str], subcommand: str | None = "fit") -> list[str]:
    """Our flags (--stage, --tiny) -> LightningCLI arguments (`fit` unless None) with the stage's config first."""
    pre = argparse.ArgumentParser(prog="layerflow train", add_help=False)
    pre.add_argument("--stage", type=int, required=True)
    pre.add_argument("--tiny", action="store_true", help="the CPU-sized config of the stage")
    ours, rest = pre.parse_known_args(argv)
    stage_spec(ours.stage)
    if "--config" not in rest and not any(a.startswith("--config=") for a in rest):
        rest = ["--config", str(stage_config(ours.stage, "tiny_" if ours.tiny else ""))] + rest
    return [*([subcommand] if subcommand else []), *rest, f"--model.stage={ours.stage}"]


def run(argv: list[str], fit: bool = True, **cli_kwargs) -> LayerFlowCLI:
    """Fit as configured by `argv`; with fit=False only build the module, data and trainer (cli.model, ...)."""
    # The arguments are ours (rewritten from sys.argv), not a mix of both as Lightning fears.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    quiet_training()
    return LayerFlowCLI(
        LayerFlowModule,
        LayerFlowDataModule,
        args=build_args(argv, "fit" if fit else None),
        run=fit,
        parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
        **cli_kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nstages: {', '.join(str(s) for s in STAGES)}; configs in {CONFIG_DIR}")
        return 0
    try:
        run(argv)
    except (TrainConfigError, FileNotFoundError, argparse.ArgumentError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    except MisconfigurationException as exc:
        print(f"error: {first_line(exc)} (the stage configs target GPUs; on a CPU add --tiny, or "
              f"--trainer.accelerator=cpu --trainer.precision=32-true)", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


SPECIFIC = ("not accepted", "not expected", "unrecognized", "does not exist", "invalid", "expected a")


def first_line(exc: BaseException) -> str:
    """The error as one line: its first line, plus the specific cause when the parser nests it deeper."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    if not lines:
        return type(exc).__name__
    cause = next((line for line in lines[1:] if any(s in line.lower() for s in SPECIFIC)), None)
    return f"{lines[0]} {cause}" if cause else lines[0]
