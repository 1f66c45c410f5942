"""`layerflow COMMAND [options]`: one command for the whole system.

Each command hands its arguments to the `main(argv)` of the module that owns it (the one `python -m` runs), so its
options, help and errors are that module's own. The command lives in `layerflow`, above every other package: it
imports all of them, and data_engine, model, trainer and evaluation never import a package above their own.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # whose main(argv) runs the command
    summary: str
    prefix: tuple[str, ...] = ()  # leading arguments that main expects: data_engine.cli serves two commands


COMMANDS = {
    "dataset": Command("data_engine.cli", "build layered shards with the Ray data engine", ("dataset",)),
    "weights": Command("data_engine.cli", "check or download the model weights", ("weights",)),
    "train": Command("trainer.cli", "train a stage: 1 base blocks, 2 Motion LoRA, 3 Content LoRA"),
    "precompute": Command("trainer.precompute", "cache VAE latents and T5 embeddings of a stage's training data"),
    "generate": Command("model.generate", "generate layered videos, conditioned on layers, or decompose a blend"),
    "convert": Command("model.convert", "convert the official LayerFlow checkpoints; check the port"),
    "eval": Command("evaluation.cli",
                    "the paper's VBench metrics per layer: generation, decomposition, score, compare"),
    "compose": Command("layerflow.studio.compose_cli",
                       "recompose layers: new background, move/scale/retime/fade, order"),
    "edit": Command("layerflow.studio.edit",
                    "decompose a video, put its foreground on another background, optionally harmonise"),
    "view": Command("layerflow.studio.view_cli", "a static page to play layers and browse shards (file://, --serve)"),
    "study": Command("layerflow.studio.study_cli", "the paper's user study: make the page, score the answers"),
    "demo": Command("layerflow.demo", "the main job end to end on synthetic videos (tiny models, CPU)"),
}

EXAMPLES = """\
examples (the tiny path on a CPU; each step reads what the one before wrote):
  layerflow dataset                                # shards -> outputs/dataset/
  layerflow train --stage 1 --tiny                 # then --stage 2, --stage 3 -> outputs/train/tiny_stage3/final/
  layerflow generate --config tiny                 # that model -> outputs/generate/tiny/generate/
  layerflow eval score outputs/generate/tiny/generate
  layerflow demo                                   # all of it under outputs/demo/"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items())
    return (f"usage: layerflow COMMAND [options]   (layerflow COMMAND --help: its options and examples)\n\n"
            f"commands:\n{rows}\n\n{EXAMPLES}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(command.module).main([*command.prefix, *argv[1:]])
