"""`layerflow demo` (`make demo`): the main job end to end on built-in synthetic videos, on CPU, with the `tiny` preset.

1. dataset   the Ray data engine (local Ray) runs the tiny perception chain on synthetic videos and writes
             layered shards, together with synthetic layered clips that carry their true layers;
2. train     the tiny model, a few steps of each training stage (base, Motion LoRA, Content LoRA) on those shards;
3. generate  the trained model generates all layers from three prompts, and decomposes a blended video;
4. eval      the paper's VBench metrics per layer on the generated layers (tiny, random-init metric models).

Every model is its real architecture with random (tiny) weights, so the pictures are noise: the demo shows the
system working, not the paper's quality. Each step prints where its outputs are.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_engine.defaults import configs_dir

console = Console()
EXAMPLES = """examples:
  layerflow demo                                   # everything under outputs/demo/ (about a minute on 2 cores)
  layerflow demo --out /tmp/demo --train-steps 4
"""
PROMPTS = {
    "fg": "A red disc glides to the right against a plain backdrop.",
    "bg": "A wavy sunset coloured pattern slowly drifts left.",
    "blend": "A red disc glides to the right over a wavy sunset coloured pattern.",
}


def build_dataset(out: Path) -> Path:
    from data_engine.engine.config import load_config
    from data_engine.engine.runner import run

    cfg = load_config(configs_dir("engine") / "demo.yaml", out=str(out))
    run(cfg, console=console)
    return out


def train(shards: Path, out: Path, steps: int) -> Path:
    from trainer.demo import train_all_stages

    exports = train_all_stages(shards, out, steps=steps)
    return exports[3]


def generate(model_dir: Path, out: Path, size: int, steps: int) -> list[Path]:
    from data_engine.sources.synthetic import SyntheticConfig, synthetic_clip
    from data_engine.video_io import write_video
    from model.generate import main as generate_main

    common = ["--model-dir", str(model_dir), "--out", str(out), "--frames", "16", "--height", str(size),
              "--width", str(size), "--steps", str(steps), "--seed", "0"]
    prompts = ["--fg-prompt", PROMPTS["fg"], "--bg-prompt", PROMPTS["bg"], "--blend-prompt", PROMPTS["blend"]]
    if generate_main(["--task", "generate", *prompts, *common]) != 0:
        raise RuntimeError("generation failed (see the message above)")
    blend = synthetic_clip(SyntheticConfig(num_frames=16, height=size, width=size, seed=7), 0)
    blend_path = write_video(out.parent / "inputs" / "blend.mp4", blend.blend, blend.fps)
    if generate_main(["--task", "decompose", "--blend", str(blend_path), *prompts, *common]) != 0:
        raise RuntimeError("decomposition failed (see the message above)")
    return [out / "generate", out / "decompose"]


def evaluate(generated: Path, out: Path) -> Path:
    from evaluation.cli import run as eval_run

    paths = eval_run(["score", str(generated), "--out", str(out)])
    return Path(paths.get("report", out / "report.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layerflow demo", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps per training stage")
    parser.add_argument("--size", type=int, default=128, help="generated frame size (RAFT needs >= 128)")
    parser.add_argument("--sample-steps", type=int, default=4, help="sampling steps")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    timings: list[tuple[str, float, Path]] = []
    started = time.time()

    def step(number: int, title: str, fn, *fn_args) -> Path:
        console.rule(f"[bold]LayerFlow demo {number}/4: {title}")
        t0 = time.time()
        result = fn(*fn_args)
        where = result[0].parent if isinstance(result, list) else result
        timings.append((title, time.time() - t0, where))
        console.print(f"[green]{title}: done in {time.time() - t0:.0f} s -> {where}")
        return result

    shards = step(1, "dataset (Ray engine, tiny perception chain)", build_dataset, out / "dataset")
    model_dir = step(2, "train stages 1 -> 2 -> 3 (tiny)", train, shards, out / "train", args.train_steps)
    step(3, "generate all layers, decompose a blend", generate, model_dir, out / "generate", args.size,
         args.sample_steps)
    report = step(4, "evaluate the generated layers", evaluate, out / "generate", out / "eval")

    table = Table(title=f"LayerFlow demo finished in {time.time() - started:.0f} s")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("outputs")
    for title, seconds, where in timings:
        table.add_row(title, f"{seconds:.0f}", str(where))
    console.print(table)
    console.print(f"Everything is under [bold]{out}[/bold]; the evaluation report is {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
