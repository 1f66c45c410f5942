"""The paper's recipe end to end on the tiny synthetic world, scored against the world's own truth.

    python benchmarks/toyworld.py [--seed 1000] [--clips 8] [--out outputs/toyworld] [--sample-steps 8]

Trains with the commands a user runs at full size, at the tiny size (or reuses the run it made before: the run's
folder is `<out>/<hash of Recipe>/`, and a finished one is read back instead of retrained):

1. `layerflow dataset --config synthetic`: the Ray engine writes shards of the synthetic world (training seed);
2. `python -m trainer.vae`: the tiny VAE learns the world; with the tiny preset's random transformer and T5 it
   makes the model folder stage 1 starts from, the tiny stand-in for the CogVideoX-2B folder;
3. `layerflow train --stage 1|2|3 --tiny`: base blocks, Motion LoRA on static duplicated frames, Content LoRA
   with the per-sample motion scale, each stage from the previous stage's export.

Then every task runs through `LayerFlowPipeline` (the Motion LoRA off, as sampling runs it) on held-out clips
of world seed `--seed`, for the trained model and the same pipeline before training (its random-init transformer
with the trained VAE), all scored by `evaluation.metrics.toyworld` next to its trivial baseline and to the VAE's
ceiling (the true layers through the VAE's round trip). A cold run takes about 6 minutes on 2 cores, a rerun
about one; figures and what limits them in BENCHMARKS.md. It prints a table and ends with exactly one line:

    toyworld decompose_alpha_iou=.. decompose_bg_psnr_db=.. generate_blend_consistency_db=.. fg_conditioned_bg_psnr_db=.. vae_psnr_db=..
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_engine.defaults import configs_dir  # noqa: E402
from data_engine.schema import LAYERS  # noqa: E402
from data_engine.synthetic import SyntheticConfig, synthetic_clip  # noqa: E402
from data_engine.video_io import cover_geometry, resize_crop  # noqa: E402
from evaluation.metrics import toyworld as tw  # noqa: E402
from layerflow.cli import main as layerflow  # noqa: E402
from model.layout import SequenceLayout, Task  # noqa: E402
from model.pipeline import LayerFlowPipeline  # noqa: E402
from model.schedule import make_scheduler  # noqa: E402
from model.tiny import build_tiny_vae  # noqa: E402
from trainer.cli import stage_config  # noqa: E402
from trainer.components import build_components  # noqa: E402
from trainer.config import ModelConfig  # noqa: E402
from trainer.demo import train_all_stages  # noqa: E402
from trainer.vae import VAETrainConfig, heldout_psnr, heldout_set, reconstruct  # noqa: E402
from trainer.vae import main as train_vae  # noqa: E402

DONE = "recipe.json"  # written last: a run folder holding it is complete


@dataclass(frozen=True)
class Recipe:
    """Everything the trained run depends on; its hash names the run folder."""

    world_seed: int = VAETrainConfig.train_world_seed  # the VAE's, too; held-out clips: --seed (default 1000)
    videos: int = 64  # synthetic videos in the shards, one clip each
    video_frames: int = 16  # training windows of `frames_per_layer` frames are drawn from each clip
    # The VAE trainer's world geometry, which is the tiny configs' training geometry (data.stream): the world is
    # rendered `source_size` square and scaled to cover height x width, by the engine as by `trainer.vae`.
    frames_per_layer: int = VAETrainConfig.frames_per_layer
    height: int = VAETrainConfig.height
    width: int = VAETrainConfig.width
    source_size: int = VAETrainConfig.source_size
    vae_steps: int = VAETrainConfig.steps
    # Optimizer steps of stages 1, 2, 3 (batch, learning rate: the tiny configs'). Twice as many steps (300, 30,
    # 300: 2 more minutes) scored no better on the held-out clips; stage 2 trains a LoRA that sampling turns off.
    stage_steps: tuple[int, int, int] = (150, 30, 150)

    def key(self) -> str:
        """A hash of the recipe and of the rest of what shapes the run: the VAE trainer's settings and the configs
        that the engine and the tiny stages read. (Code changes are not in it: delete the run to retrain.)"""
        configs = [configs_dir("engine") / "synthetic.yaml", *(stage_config(s, "tiny_") for s in (1, 2, 3))]
        ingredients = {"recipe": asdict(self), "vae": asdict(VAETrainConfig(steps=self.vae_steps)),
                       "configs": [path.read_text() for path in configs]}
        return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()[:12]


def run_step(title: str, command: str, fn, *args) -> None:
    print(f"\n== {title}\n$ {command}", flush=True)
    started = time.perf_counter()
    if fn(*args) not in (0, None):
        raise SystemExit(f"toyworld: `{command}` failed (see above)")
    print(f"-- {title}: {time.perf_counter() - started:.0f} s", flush=True)


def build_dataset(recipe: Recipe, out: Path) -> None:
    sets = {"sources.0.seed": recipe.world_seed, "sources.0.num_clips": recipe.videos,
            "sources.0.num_frames": recipe.video_frames, "sources.0.height": recipe.source_size,
            "sources.0.width": recipe.source_size,
            "clip.num_frames": recipe.video_frames, "clip.height": recipe.height, "clip.width": recipe.width,
            "run.maxcount": recipe.videos}
    argv = ["dataset", "--config", "synthetic", "--out", str(out), "--no-progress"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    run_step("shards of the synthetic world (Ray engine)", f"layerflow {shlex.join(argv)}", layerflow, argv)


def build_base(recipe: Recipe, vae_out: Path, base: Path, threads: int) -> None:
    """The tiny VAE trained on the world, in a model folder with the tiny preset's random transformer (built as
    `layerflow train --stage 1 --tiny` builds it without a folder: its LoRA shape) and random T5."""
    from diffusers import AutoencoderKLCogVideoX

    argv = ["--out", str(vae_out), "--steps", str(recipe.vae_steps), "--threads", str(threads)]
    run_step("the tiny VAE on the world", f"python -m trainer.vae {shlex.join(argv)}", train_vae, argv)
    network = yaml.safe_load(stage_config(1, "tiny_").read_text())["model"]["network"]
    parts = build_components(ModelConfig(**network))
    vae = AutoencoderKLCogVideoX.from_pretrained(vae_out / "vae", use_safetensors=True)
    LayerFlowPipeline(tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, vae=vae,
                      transformer=parts.transformer, scheduler=make_scheduler("dpm")).save_pretrained(base)


def train(recipe: Recipe, root: Path, threads: int) -> Path:
    """The trained run's folder; reused when a finished one with this recipe exists."""
    run = root / recipe.key()
    if (run / DONE).is_file():
        print(f"reusing the trained run {run} (delete it to retrain)")
        return run
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run: its steps may be half-written
    started = time.perf_counter()
    build_dataset(recipe, run / "dataset")
    build_base(recipe, run / "tiny_vae", run / "base", threads)
    # The VAE's geometry, whatever the tiny configs say; the exports and no checkpoints (the tiny configs keep one
    # every 2 steps, to resume from: a run here is redone whole).
    overrides = [f"--data.stream.{k}={getattr(recipe, k)}" for k in ("frames_per_layer", "height", "width")]
    overrides += ["--trainer.callbacks=[{class_path: trainer.checkpoint.ExportCallback}]",
                  "--trainer.enable_checkpointing=false"]
    t0 = time.perf_counter()
    steps = dict(zip((1, 2, 3), recipe.stage_steps))
    train_all_stages(run / "dataset", run / "train", steps, base=run / "base", overrides=overrides,
                     log=lambda command: print(f"\n== training\n$ {command}", flush=True))
    print(f"-- training: {time.perf_counter() - t0:.0f} s", flush=True)
    (run / DONE).write_text(json.dumps({**asdict(recipe), "seconds": time.perf_counter() - started}, indent=1))
    return run


# ---- held-out evaluation --------------------------------------------------------------------------------------

def heldout_clips(recipe: Recipe, seed: int, count: int) -> list[dict]:
    """Clips of world `seed` at the training geometry, rendered and scaled as the shards and the VAE trainer do."""
    world = SyntheticConfig(num_frames=recipe.frames_per_layer, height=recipe.source_size,
                            width=recipe.source_size, seed=seed)
    geometry = cover_geometry(world.height, world.width, recipe.height, recipe.width)
    clips = []
    for index in range(count):
        clip = synthetic_clip(world, index)
        clips.append({"captions": clip.captions, **{n: resize_crop(clip.layer(n), geometry) for n in LAYERS}})
    return clips


TASK_INPUTS = {"decompose": {"blend": "blend"}, "fg_conditioned": {"foreground": "fg", "alpha": "alpha"},
               "bg_conditioned": {"background": "bg"}, "generate": {}}


def sample_tasks(pipe: LayerFlowPipeline, clips: list[dict], recipe: Recipe, steps: int, guidance: float,
                 seed: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every task on every clip (one batch per task), with the clip's captions as prompts."""
    out = {}
    for task, inputs in TASK_INPUTS.items():
        result = pipe(fg_prompt=[c["captions"].fg for c in clips], bg_prompt=[c["captions"].bg for c in clips],
                      blend_prompt=[c["captions"].blend for c in clips], task=task,
                      **{arg: [c[layer] for c in clips] for arg, layer in inputs.items()},
                      num_frames=recipe.frames_per_layer, height=recipe.height, width=recipe.width,
                      num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator().manual_seed(seed))
        out[task] = [{n: c.layer(n) for n in LAYERS} for c in result.clips]
    return out


def trivial_outputs(clips: list[dict], recipe: Recipe) -> dict[str, list[dict[str, np.ndarray]]]:
    shape = (recipe.frames_per_layer, recipe.height, recipe.width)
    return {"decompose": [tw.trivial_decomposition(c["blend"]) for c in clips],
            "fg_conditioned": [tw.trivial_fg_conditioned(c["fg"], c["alpha"]) for c in clips],
            "bg_conditioned": [tw.trivial_bg_conditioned(c["bg"]) for c in clips],
            "generate": [tw.trivial_generation(*shape) for _ in clips]}


# (task, score, label, target): each row is the mean over clips of one score (booleans: the fraction true).
ROWS = (
    ("decompose", "alpha_iou", "decompose: alpha IoU", ">= 0.7"),
    ("decompose", "bg_psnr_object", "decompose: bg PSNR in object region (dB)", ">= trivial + 6"),
    ("decompose", "fg_psnr_object", "decompose: fg PSNR on object (dB)", ""),
    ("fg_conditioned", "bg_psnr_object", "fg_conditioned: bg PSNR in object region (dB)", ""),
    ("fg_conditioned", "fg_unchanged", "fg_conditioned: fg and alpha unchanged", "1"),
    ("bg_conditioned", "coverage_ok", "bg_conditioned: matte covers 2-60 %", "1"),
    ("bg_conditioned", "clear_blend_psnr", "bg_conditioned: blend = bg where clear (dB)", ""),
    ("bg_conditioned", "bg_unchanged", "bg_conditioned: bg unchanged", "1"),
    ("generate", "coherence_psnr", "generate: blend coherence (dB)", ">= 22"),
    ("generate", "shape_ok", "generate: shape as prompted", ""),
    ("generate", "colour_ok", "generate: colour as prompted", ""),
)


def scores(outputs: dict[str, list[dict[str, np.ndarray]]], clips: list[dict]) -> dict[str, dict[str, float]]:
    """Per task, each score's mean over the clips (NaN-free: a clip whose score is undefined is left out)."""
    rows = {
        "decompose": [tw.decomposition_scores(o, c) for o, c in zip(outputs["decompose"], clips)],
        "fg_conditioned": [{**s, "fg_unchanged": s["fg_unchanged"] and s["alpha_unchanged"]} for s in (
            tw.fg_conditioned_scores({"fg": c["fg"], "alpha": c["alpha"]}, o, c["bg"])
            for o, c in zip(outputs["fg_conditioned"], clips))],
        "bg_conditioned": [tw.bg_conditioned_scores(c["bg"], o) for o, c in zip(outputs["bg_conditioned"], clips)],
        "generate": [tw.generation_scores(o, c["captions"].fg) for o, c in zip(outputs["generate"], clips)],
    }
    means = {}
    for task, per_clip in rows.items():
        means[task] = {}
        for name in {score for t, score, *_ in ROWS if t == task}:
            values = [float(row[name]) for row in per_clip if not math.isnan(float(row[name]))]
            means[task][name] = float(np.mean(values)) if values else math.nan
    return means


def vae_ceiling(recipe: Recipe, vae, clips: list[dict], seed: int) -> tuple[dict, dict[str, float]]:
    """The true layers of the held-out clips through the VAE's round trip (`trainer.vae.reconstruct`), as each
    task's output (its given layers kept, as the pipeline keeps them): what a perfect transformer would score
    behind this VAE. Also the round trip's PSNR over all layers (`trainer.vae.heldout_psnr`), trained and at the
    VAE's random init."""
    cfg = VAETrainConfig(frames_per_layer=recipe.frames_per_layer, height=recipe.height, width=recipe.width,
                         source_size=recipe.source_size, heldout_world_seed=seed, heldout_clips=len(clips))
    videos = heldout_set(cfg)  # the same clips, in the layouts the pipeline encodes
    layout = SequenceLayout.for_task(Task.GENERATE, recipe.frames_per_layer)
    decoded = [layout.unpack(video.transpose(0, 1)) for video in reconstruct(vae, videos[Task.GENERATE])]
    outputs = {task: [{**d, **{layer: c[layer] for layer in inputs.values()}} for d, c in zip(decoded, clips)]
               for task, inputs in TASK_INPUTS.items()}
    random = build_tiny_vae(vae.config.latent_channels, cfg.seed, cfg.vae)
    psnr = {"trained": heldout_psnr(vae, videos, cfg.frames_per_layer)["all"],
            "random": heldout_psnr(random, videos, cfg.frames_per_layer)["all"]}
    return outputs, psnr


COLUMNS = {
    "trained": "the stage-3 export",
    "untrained": "the folder stage 1 starts from (random transformer, trained VAE)",
    "trivial": "evaluation.metrics.toyworld's trivial baseline",
    "VAE only": "the true layers through the VAE round trip: the most any transformer scores behind this VAE",
}


def print_table(columns: dict[str, dict[str, dict[str, float]]], seed: int, count: int) -> None:
    names = list(columns)
    label_width = max(len(label) for *_, label, _ in ROWS)
    print(f"\nheld-out clips: {count} of world seed {seed}; mean over clips")
    for name in names:
        print(f"  {name}: {COLUMNS[name]}")
    print(f"{'score':<{label_width}}  " + "  ".join(f"{n:>9}" for n in names) + "  target")
    for task, score, label, target in ROWS:
        cells = "  ".join(f"{columns[n][task][score]:9.2f}" for n in names)
        print(f"{label:<{label_width}}  {cells}  {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1000, help="world seed of the held-out clips")
    parser.add_argument("--clips", type=int, default=8, help="held-out clips")
    parser.add_argument("--out", type=Path, default=Path("outputs/toyworld"), help="where trained runs are kept")
    parser.add_argument("--sample-steps", type=int, default=8, help="sampler steps (the tiny preset's default)")
    parser.add_argument("--guidance", type=float, default=6.0, help="CFG weight (the pipeline's default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on 2 shared cores two threads ran a training step ~4x slower than one")
    args = parser.parse_args(argv)
    if args.seed == Recipe.world_seed:
        parser.error(f"--seed must differ from the training world's seed {Recipe.world_seed}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    recipe = Recipe()
    run = train(recipe, args.out, args.threads)

    clips = heldout_clips(recipe, args.seed, args.clips)
    models = {"trained": run / "train" / "stage3" / "final", "untrained": run / "base"}
    columns = {}
    for name, folder in models.items():
        t0 = time.perf_counter()
        pipe = LayerFlowPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        columns[name] = scores(sample_tasks(pipe, clips, recipe, args.sample_steps, args.guidance, args.seed), clips)
        print(f"-- sampling the four tasks, {name} model: {time.perf_counter() - t0:.0f} s", flush=True)
    columns["trivial"] = scores(trivial_outputs(clips, recipe), clips)
    ceiling, vae_psnr = vae_ceiling(recipe, pipe.vae, clips, args.seed)  # every stage keeps the base's VAE
    columns["VAE only"] = scores(ceiling, clips)
    print_table(columns, args.seed, args.clips)
    print(f"VAE round trip PSNR on the same clips, all layers: {vae_psnr['trained']:.2f} dB trained, "
          f"{vae_psnr['random']:.2f} dB at its random init")
    print(f"\nrecipe {recipe.key()}: {json.dumps(asdict(recipe))}; total {time.perf_counter() - started:.0f} s")
    trained = columns["trained"]
    print(f"toyworld decompose_alpha_iou={trained['decompose']['alpha_iou']:.2f} "
          f"decompose_bg_psnr_db={trained['decompose']['bg_psnr_object']:.1f} "
          f"generate_blend_consistency_db={trained['generate']['coherence_psnr']:.1f} "
          f"fg_conditioned_bg_psnr_db={trained['fg_conditioned']['bg_psnr_object']:.1f} "
          f"vae_psnr_db={vae_psnr['trained']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
