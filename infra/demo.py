"""`layerflow demo` (`make demo`): the main job end to end on CPU, with the `tiny` preset, on built-in videos.

1. dataset   the Ray data engine (local Ray) runs the tiny perception chain on two synthetic videos (real
             architectures, random weights: their layers are noise, the plumbing is real) and writes the tiny
             synthetic world's layered clips, which carry their true layers, into the same shards;
2. train     the paper's three stages on the world's clips (`data.mix`: origin synthetic), from a model folder
             holding the world's VAE and its pretrained base (both shipped: `layerflow.toyworld.TINY_WORLD_VAE`,
             `TINY_WORLD_BASE`, made by stage 0): stage 1 trains every block, then the Motion and Content LoRAs;
3. generate  the trained model generates all layers from three prompts and decomposes a held-out blended clip
             (`layerflow generate`, the files a user gets);
4. score     every task on held-out clips of another world seed, next to the untrained model, the trivial
             baseline and the VAE's ceiling (`evaluation.metrics.toyworld`), and a picture of the decomposition;
5. edit      the edit loop (`layerflow edit`): the held-out clip decomposed, its foreground composed onto another
             held-out clip's background and harmonised there by the bg-conditioned task, with `edit.png`;
6. view      a studio page (`layerflow view`) that plays every layer of steps 3 and 5 in the browser.

Each step prints where its outputs are (its time: BENCHMARKS.md). `make eval` scores generated layers with the
paper's VBench metrics (they need frames of at least 128 px; the world trains at 32 x 48).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_engine.defaults import configs_dir

console = Console()
EXAMPLES = """examples:
  layerflow demo                                   # everything under outputs/demo/
  layerflow demo --out /tmp/demo --stage-steps 300 20 60
"""
# A third of the recipe's budget (the benchmark's 2400 / 100 / 300): on 2 cores its steps train in 868 s, and the
# demo, 685 s in all at 1200 / 50 / 150, must fit ten minutes.
DEMO_STAGE_STEPS = (800, 40, 100)
HELDOUT_SEED = 1000  # the world's held-out clips (the shards hold seed 0, the VAE was trained on seed 0)
HELDOUT_CLIPS = 8


def build_dataset(out: Path) -> Path:
    from data_engine.engine.config import load_config
    from data_engine.engine.runner import run

    cfg = load_config(configs_dir("engine") / "demo.yaml", out=str(out))
    run(cfg, console=console)
    return out


def train(shards: Path, out: Path, recipe, threads: int) -> Path:
    """The trained run's folder (`layerflow.toyworld.train`); its stage-3 export is the model."""
    from layerflow.toyworld import train as train_world

    return train_world(recipe, out, threads, log=console.print, mix="{synthetic: 1}", shards=shards)


def generate(model_dir: Path, out: Path, inputs: Path, recipe, steps: int) -> list[Path]:
    """Generation from held-out prompts and the decomposition of a held-out clip, whose blend goes to `inputs`."""
    from data_engine.video_io import write_video
    from layerflow.toyworld import heldout_clips
    from model.generate import main as generate_main

    clip = heldout_clips(recipe, HELDOUT_SEED, 1)[0]  # decomposed
    captions = heldout_clips(recipe, HELDOUT_SEED + 1, 1)[0]["captions"]  # generation's prompts, held out too
    common = ["--model-dir", str(model_dir), "--out", str(out), "--frames", str(recipe.frames_per_layer),
              "--height", str(recipe.height), "--width", str(recipe.width), "--steps", str(steps), "--seed", "0"]
    prompts = ["--fg-prompt", captions.fg, "--bg-prompt", captions.bg, "--blend-prompt", captions.blend]
    if generate_main(["--task", "generate", *prompts, *common]) != 0:
        raise RuntimeError("generation failed (see the message above)")
    blend_path = write_video(inputs / "blend.mp4", clip["blend"], 8.0)
    given = ["--fg-prompt", clip["captions"].fg, "--bg-prompt", clip["captions"].bg]
    if generate_main(["--task", "decompose", "--blend", str(blend_path), *given, *common]) != 0:
        raise RuntimeError("decomposition failed (see the message above)")
    return [out / "generate", out / "decompose"]


def edit(model_dir: Path, out: Path, inputs: Path, recipe, steps: int) -> Path:
    """The edit loop on the held-out clip that step 3 decomposed (`inputs`/blend.mp4), onto another held-out clip's
    background."""
    from data_engine.video_io import write_video
    from layerflow.studio.edit import main as edit_main
    from layerflow.toyworld import heldout_clips

    clip = heldout_clips(recipe, HELDOUT_SEED, 1)[0]
    background = write_video(inputs / "new_bg.mp4", heldout_clips(recipe, HELDOUT_SEED + 2, 1)[0]["bg"], 8.0)
    args = [str(inputs / "blend.mp4"), "--background", str(background), "--out", str(out),
            "--harmonise", "--model-dir", str(model_dir), "--fg-prompt", clip["captions"].fg, "--bg-prompt",
            clip["captions"].bg, "--frames", str(recipe.frames_per_layer), "--height", str(recipe.height),
            "--width", str(recipe.width), "--steps", str(steps), "--seed", "0"]
    if edit_main(args) != 0:
        raise RuntimeError("the edit loop failed (see the message above)")
    return out / "edit.png"


def view(folder: Path) -> Path:
    from layerflow.studio.view_cli import main as view_main

    if view_main([str(folder)]) != 0:
        raise RuntimeError("the studio page failed (see the message above)")
    return folder / "studio" / "index.html"


def score(run: Path, out: Path, recipe, steps: int) -> Path:
    from layerflow.toyworld import evaluate, print_table, summary_line, write_report

    result = evaluate(run, recipe, HELDOUT_SEED, HELDOUT_CLIPS, steps, log=console.print)
    print_table(result)
    table, decomposition, generation = write_report(result, out)
    console.print(f"decomposition of held-out clips (input blend | true fg, alpha, bg | decomposed): {decomposition}")
    console.print(f"generation from held-out prompts (fg, alpha, bg, blend | the layers composited): {generation}")
    console.print(f"scores ({table}): {summary_line(result)}")
    return decomposition


def main(argv: list[str] | None = None) -> int:
    import torch

    from layerflow.toyworld import Recipe

    parser = argparse.ArgumentParser(prog="layerflow demo", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--stage-steps", type=int, nargs=3, default=list(DEMO_STAGE_STEPS),
                        metavar=("S1", "S2", "S3"),
                        help="optimizer steps of stages 1, 2, 3 (the benchmark's recipe: "
                             f"{' '.join(map(str, Recipe.stage_steps))})")
    parser.add_argument("--sample-steps", type=int, default=8, help="sampling steps")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; on 2 idle cores a training step (batch 8, latent cache) took 0.115 s "
                             "with two and 0.185 s with one; on cores busy with other work use 1")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    recipe = replace(Recipe(), stage_steps=tuple(args.stage_steps))
    timings: list[tuple[str, float, Path]] = []
    started = time.time()

    def step(number: int, title: str, fn, *fn_args) -> Path:
        console.rule(f"[bold]LayerFlow demo {number}/6: {title}")
        t0 = time.time()
        result = fn(*fn_args)
        where = result[0].parent if isinstance(result, list) else result
        timings.append((title, time.time() - t0, where))
        console.print(f"[green]{title}: done in {time.time() - t0:.0f} s -> {where}")
        return result

    shards = step(1, "dataset (Ray engine: tiny perception chain + the synthetic world)", build_dataset,
                  out / "dataset")
    run = step(2, "train stages 1 -> 2 -> 3 on the world (tiny)", train, shards, out / "train", recipe,
               args.threads)
    model = run / "train" / "stage3" / "final"
    step(3, "generate all layers, decompose a held-out blend", generate, model, out / "generate", out / "inputs",
         recipe, args.sample_steps)
    picture = step(4, "score the four tasks on held-out clips", score, run, out / "score", recipe, args.sample_steps)
    edited = step(5, "edit: decompose, compose onto a new background, harmonise", edit, model,
                  out / "generate" / "edit", out / "inputs", recipe, args.sample_steps)
    page = step(6, "a studio page of the generated and edited layers", view, out / "generate")

    table = Table(title=f"LayerFlow demo finished in {time.time() - started:.0f} s")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("outputs")
    for title, seconds, where in timings:
        table.add_row(title, f"{seconds:.0f}", str(where))
    console.print(table)
    console.print(f"Everything is under [bold]{out}[/bold]; the picture of the learned layers is {picture}, the edit "
                  f"loop's is {edited}; open {page} in a browser to play the layers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
