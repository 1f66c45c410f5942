"""The paper's recipe end to end on the tiny synthetic world, scored against the world's own truth.

What `layerflow demo` and `benchmarks/toyworld.py` run, with the commands a user runs at full size, at the tiny
size. A run's folder is `<root>/<hash of its Recipe>/`; a finished one is read back instead of retrained.

1. `layerflow dataset --config synthetic_videos`: the Ray engine writes shards of the synthetic world (training seed);
2. the model folder stage 1 starts from, the tiny stand-in for the CogVideoX-2B folder: the world's pretrained
   base (`TINY_WORLD_BASE`, shipped; `python -m layerflow.toyworld pretrain` makes it with `layerflow train
   --stage 0 --tiny`: the transformer as a text-to-video model of the world's blends) with the world's VAE
   (`TINY_WORLD_VAE`, shipped, or one `python -m trainer.vae` trains);
3. `layerflow precompute --stage 1 --tiny`: the latent cache stages 1 and 3 read (a step then costs a third);
4. `layerflow train --stage 1|2|3 --tiny`: the base (every block), the Motion LoRA on static duplicated frames
   (from pixels: its static framing is not the cache's), the Content LoRA with the per-sample motion scale, each
   stage from the previous stage's export, each with its loss curves (`loss_curves.png` in the stage's folder).

Then every task runs through `LayerFlowPipeline` (the Motion LoRA off, as sampling runs it) on held-out clips
of another world seed, scored by `evaluation.metrics.toyworld` next to the untrained model, the trivial baseline
and the VAE's ceiling (the true layers through the VAE's round trip).
"""
from __future__ import annotations

import hashlib
import json
import math
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

import data_engine
import model
import trainer
from data_engine.defaults import configs_dir
from data_engine.schema import alpha_name, fg_name
from evaluation.metrics import toyworld as tw
from layerflow.cli import main as layerflow
from model.layout import SequenceLayout, Task, task_spec
from model.pipeline import LayerFlowPipeline
from model.schedule import make_scheduler
from model.tiny import build_tiny_vae
from trainer.cli import stage_config
from trainer.components import build_components
from trainer.config import ModelConfig
from trainer.demo import train_all_stages
from trainer.vae import LAYOUTS as VAE_LAYOUTS
from trainer.vae import VAETrainConfig, heldout_psnr, pack_clips, reconstruct, world_layers
from trainer.vae import main as train_vae

# The world's VAE, trained by our own trainer: 9 minutes on one core, more than the demo's whole budget, so the
# demo and the benchmark start from this checkpoint (2.7 MB; `report.json` beside it: held-out PSNR 26.1 dB over
# all layers, 9.8 dB at its random init). The DiT stages still train in front of the user. Regenerate it with
#     python -m trainer.vae --steps 1800 --threads 1 --out DIR   # then copy DIR/vae/* and DIR/report.json here
TINY_WORLD_VAE = Path(__file__).resolve().parent / "assets" / "tiny_world_vae"
# The world's pretrained base (stage 0: the tiny transformer as a text-to-video model of the world's blends, with
# the T5 and tokenizer it read), what stage 1 starts from as the paper's starts from CogVideoX-2B. Regenerate it with
#     python -m layerflow.toyworld pretrain --out DIR   # then copy DIR/{transformer,text_encoder,tokenizer,...} here
TINY_WORLD_BASE = Path(__file__).resolve().parent / "assets" / "tiny_world_base"
BASE_PARTS = ("transformer", "text_encoder", "tokenizer")
DONE = "recipe.json"  # written last: a run folder holding it is complete
LOSS_CURVES = "loss_curves.png"  # what trainer.callbacks.LossCurvesCallback draws in a stage's folder
# Every stage's callbacks here: the loss curves and the export, no checkpoints (the tiny configs keep one every 2
# steps, to resume from: a run here is redone whole).
TRAIN_CALLBACKS = ("[{class_path: trainer.callbacks.LossCurvesCallback}, "
                   "{class_path: trainer.checkpoint.ExportCallback}]")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Everything the trained run depends on; its hash names the run folder."""

    world_seed: int = VAETrainConfig.train_world_seed  # the VAE's, too; held-out clips come from another seed
    videos: int = 64  # synthetic videos in the shards, one clip each
    video_frames: int = 16  # training windows of `frames_per_layer` frames are drawn from each clip
    # The VAE trainer's world geometry, which is the tiny configs' training geometry (data.stream): the world is
    # rendered `source_size` square and scaled to cover height x width, by the engine as by `trainer.vae`.
    frames_per_layer: int = VAETrainConfig.frames_per_layer
    height: int = VAETrainConfig.height
    width: int = VAETrainConfig.width
    source_size: int = VAETrainConfig.source_size
    # None: the shipped TINY_WORLD_VAE; a number: train the VAE that many steps here.
    vae_steps: int | None = None
    # Stage 1 starts from the shipped stage-0 base (TINY_WORLD_BASE); False: from `preset`'s random weights.
    pretrained_base: bool = True
    # The transformer preset of a random base (stage 0 pretrains this preset; the shipped base is one).
    preset: str = "tiny-world"
    # Optimizer steps of stages 1, 2, 3; stage 1 trains every block of the never-pretrained tiny base. The
    # matte forms late and suddenly: on decomposition alone, alpha IoU stays under 0.05 for the first ~6000
    # samples, then climbs (held-out 0.42 at 12000, batch 8; at batch 2 it had not formed after 3000 steps), and
    # mixing tasks delays it: decomposition gets two thirds of stage 1's 2400 x 8 samples (at half: IoU 0.06
    # against 0.20, the other tasks' scores about the same).
    stage_steps: tuple[int, int, int] = (2400, 100, 300)
    batch_size: int = 8
    # Every stage's learning rate, in place of the tiny configs' 1e-2 (set for LoRAs on a frozen base): for the
    # whole transformer, 1e-3 and 3e-3 reached the same loss in 1500 steps, 3e-3 a higher held-out bg PSNR; 6e-3
    # formed the matte later.
    lr: float = 3e-3
    # data.stream.tasks of every stage (a YAML mapping, e.g. "{decompose: 1}"); None: the configs' (all four).
    tasks: str | None = "{decompose: 6, fg_conditioned: 1, bg_conditioned: 1, generate: 1}"
    # Objects per clip, each its own foreground layer (the world's `num_objects`; 1: the paper's layout).
    objects: int = 1
    # Every stage's learning-rate schedule (model.optim.schedule): "cosine" decays it to 0 at the stage's last step.
    schedule: str = "cosine"
    # model.loss.layer_weights of every stage, a YAML mapping ("{}" or None: every layer alike). The matte is the
    # layer the model fits worst; weighting its loss 3x raised held-out alpha IoU on every training seed measured
    # (BENCHMARKS.md, "Recipe choices and their effect").
    layer_weights: str | None = "{alpha: 3}"
    # The training run's seed (every stage's draws of noise, timesteps, prompt dropout and sample order): another
    # seed is another run of the same recipe, for the spread of its scores.
    train_seed: int = 0

    def key(self) -> str:
        """A hash of the recipe and of the rest of what shapes the run: the VAE trainer's settings or the shipped
        VAE's bytes, the configs that the engine and the tiny stages read, and the code of the packages that
        build the data and the model and train it (a change there retrains)."""
        configs = [configs_dir("engine") / "synthetic_videos.yaml", configs_dir("engine") / "synthetic_world.yaml",
                   *(stage_config(s, "tiny_") for s in (1, 2, 3))]
        vae = (asdict(VAETrainConfig(steps=self.vae_steps)) if self.vae_steps is not None else
               hashlib.sha256((TINY_WORLD_VAE / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest())
        base = hashlib.sha256()
        if self.pretrained_base:
            for path in sorted(TINY_WORLD_BASE.rglob("*")):
                if path.is_file():
                    base.update(str(path.relative_to(TINY_WORLD_BASE)).encode() + path.read_bytes())
        code = hashlib.sha256()
        for package in (data_engine, model, trainer):
            root = Path(package.__file__).parent
            for path in sorted(root.rglob("*.py")):
                code.update(str(path.relative_to(root)).encode() + path.read_bytes())
        code.update(Path(__file__).read_bytes())
        ingredients = {"recipe": asdict(self), "vae": vae, "base": base.hexdigest(),
                       "configs": [path.read_text() for path in configs],
                       "code": code.hexdigest()}
        return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()[:12]


def run_step(title: str, command: str, fn, *args, log: Log = print) -> float:
    """Run one command of the recipe; returns its seconds."""
    log(f"\n== {title}\n$ {command}")
    started = time.perf_counter()
    if fn(*args) not in (0, None):
        raise RuntimeError(f"toyworld: `{command}` failed (see above)")
    seconds = time.perf_counter() - started
    log(f"-- {title}: {seconds:.0f} s")
    return seconds


def build_dataset(recipe: Recipe, out: Path, log: Log = print) -> None:
    """One object: the synthetic videos through the engine's video stages (probe, split, compose). K objects: the
    world's layered clips through the engine (`synthetic_world`): the model-free video path makes one foreground
    per clip."""
    sets = {"sources.0.seed": recipe.world_seed, "sources.0.num_clips": recipe.videos,
            "sources.0.num_frames": recipe.video_frames, "sources.0.height": recipe.source_size,
            "sources.0.width": recipe.source_size,
            "clip.num_frames": recipe.video_frames, "clip.height": recipe.height, "clip.width": recipe.width,
            "run.maxcount": recipe.videos}
    config = "synthetic_videos"
    if recipe.objects > 1:
        config = "synthetic_world"
        sets.update({"sources.0.num_objects": recipe.objects, "sources.0.clip_height": recipe.height,
                     "sources.0.clip_width": recipe.width})
    argv = ["dataset", "--config", config, "--out", str(out), "--no-progress"]
    argv += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    seconds = run_step("shards of the synthetic world (Ray engine)", f"layerflow {shlex.join(argv)}", layerflow, argv,
                       log=log)
    log(f"-- the engine wrote {recipe.videos / seconds:.2f} clips/s (Ray's start included)")


def build_base(recipe: Recipe, run: Path, threads: int, log: Log = print) -> Path:
    """The model folder stage 1 starts from: the world's VAE with the pretrained base (`TINY_WORLD_BASE`: transformer,
    T5, tokenizer) or, with `recipe.pretrained_base` off, `recipe.preset`'s random transformer (built as `layerflow
    train --stage 1 --tiny` builds it without a folder: its LoRA shape) and random T5."""
    from diffusers import AutoencoderKLCogVideoX

    vae_dir = TINY_WORLD_VAE
    if recipe.vae_steps is not None:
        argv = ["--out", str(run / "tiny_vae"), "--steps", str(recipe.vae_steps), "--threads", str(threads)]
        run_step("the tiny VAE on the world", f"python -m trainer.vae {shlex.join(argv)}", train_vae, argv, log=log)
        vae_dir = run / "tiny_vae" / "vae"
    base = run / "base"
    if recipe.pretrained_base:
        shutil.rmtree(base, ignore_errors=True)
        for part in BASE_PARTS:
            shutil.copytree(TINY_WORLD_BASE / part, base / part)
        shutil.copytree(vae_dir, base / "vae")
        make_scheduler("dpm").save_pretrained(base / "scheduler")
        shutil.copy(TINY_WORLD_BASE / "layerflow_pipeline.json", base / "layerflow_pipeline.json")
        return base
    network = yaml.safe_load(stage_config(1, "tiny_").read_text())["model"]["network"]
    parts = build_components(ModelConfig(**{**network, "preset": recipe.preset}))
    vae = AutoencoderKLCogVideoX.from_pretrained(vae_dir, use_safetensors=True)
    LayerFlowPipeline(tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, vae=vae,
                      transformer=parts.transformer, scheduler=make_scheduler("dpm")).save_pretrained(base)
    return base


def train(recipe: Recipe, root: Path, threads: int = 1, log: Log = print, mix: str | None = None,
          shards: Path | None = None) -> Path:
    """The trained run's folder (`<run>/train/stage3/final` is the model); reused when a finished one with this
    recipe exists. `shards`: train on these (e.g. the demo's engine output) instead of building the world's."""
    run = root / recipe.key()
    if (run / DONE).is_file():
        log(f"reusing the trained run {run} (delete it to retrain)")
        return run
    shutil.rmtree(run, ignore_errors=True)  # an unfinished run: its steps may be half-written
    started = time.perf_counter()
    if shards is None:
        shards = run / "dataset"
        build_dataset(recipe, shards, log)
    base = build_base(recipe, run, threads, log)
    # The VAE's geometry, whatever the tiny configs say.
    data = [f"--data.stream.{k}={getattr(recipe, k)}" for k in ("frames_per_layer", "height", "width")]
    if mix:
        data.append(f"--data.stream.mix={mix}")
    cache = run / "latent_cache"
    argv = ["precompute", "--stage", "1", "--tiny", "--cache", str(cache), f"--data.stream.shards={shards}",
            f"--model.network.pretrained={base}", *data]
    run_step("the latent cache of stages 1 and 3", f"layerflow {shlex.join(argv)}", layerflow, argv, log=log)
    overrides = [*data, f"--data.stream.batch_size={recipe.batch_size}", f"--model.optim.lr={recipe.lr}",
                 "--model.network.stage1_blocks=all", "--trainer.log_every_n_steps=50",
                 f"--trainer.callbacks={TRAIN_CALLBACKS}", "--trainer.enable_checkpointing=false"]
    overrides.append(f"--model.optim.schedule={recipe.schedule}")
    overrides += [f"--seed_everything={recipe.train_seed}", f"--model.seed={recipe.train_seed}",
                  f"--data.stream.seed={recipe.train_seed}"]
    if recipe.tasks:
        overrides.append(f"--data.stream.tasks={recipe.tasks}")
    if recipe.layer_weights:
        overrides.append(f"--model.loss.layer_weights={recipe.layer_weights}")
    cached = [f"--data.stream.cache={cache}"]
    t0 = time.perf_counter()
    steps = dict(zip((1, 2, 3), recipe.stage_steps))
    train_all_stages(shards, run / "train", steps, base=base, overrides=overrides,
                     stage_overrides={1: cached, 2: ["--data.stream.use_cache=false"], 3: cached},
                     log=lambda command: log(f"\n== training\n$ {command}"))
    log(f"-- training: {time.perf_counter() - t0:.0f} s")
    (run / DONE).write_text(json.dumps({**asdict(recipe), "seconds": time.perf_counter() - started}, indent=1))
    return run


# ---- stage 0: the shipped base --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pretraining:
    """How `TINY_WORLD_BASE` was made: `layerflow train --stage 0 --tiny` on the blends of `videos` clips of the
    training world, from the random transformer of `Recipe.preset` and the tiny T5 (seed 0) and the world's VAE."""

    videos: int = 1024
    # Frames per training clip: 16 frames are 4 latent frames, the positions stage 1's four sub-clips (fg, alpha,
    # bg, blend: one latent frame each at the recipe's 4 frames) take, so the base meets motion across them as the
    # real recipe's CogVideoX-2B has. On 16-frame held-out clips a `tiny` base reached a loss of 0.285 against 0.441
    # for one pretrained on 4-frame clips (one latent frame: no time axis); stage 1's scores: BENCHMARKS.md.
    frames: int = 16
    steps: int = 1500
    batch_size: int = 8
    lr: float = 3e-3
    heldout_seed: int = 1000  # the report's held-out loss: clips of another world seed
    heldout_clips: int = 32

    def recipe(self) -> Recipe:
        """The world, geometry and random base of stage 0 (its clips `frames` long), as `Recipe` fields."""
        return Recipe(videos=self.videos, video_frames=max(self.frames, Recipe.video_frames),
                      frames_per_layer=self.frames, pretrained_base=False)


def heldout_text_to_video_loss(folder: Path, recipe: Recipe, seed: int, count: int) -> float:
    """Stage 0's loss of the model in `folder` on `count` held-out clips of world `seed`, at fixed timesteps spread
    over the schedule and fixed noise: how well it models the world's blends from their prompts."""
    from trainer.data import collate
    from trainer.module import LayerFlowModule

    network = yaml.safe_load(stage_config(0, "tiny_").read_text())["model"]["network"]
    module = LayerFlowModule(stage=0, network=ModelConfig(**{**network, "pretrained": str(folder)}))
    module.use_components(build_components(module.model_cfg))
    module.eval()
    examples = [{"key": f"heldout-{i}", "origin": "synthetic", "layers": {n: c[n] for n in c if n != "captions"},
                 "captions": c["captions"].as_dict(), "motion_scale": 0.0,
                 "keep": {n: True for n in c["captions"].as_dict()}}
                for i, c in enumerate(heldout_clips(recipe, seed, count))]
    batch = collate(examples, "generate", recipe.frames_per_layer)
    timesteps = torch.linspace(0, 999, count).round().long()
    with torch.no_grad():  # the noise: the module's own draws for step 0, the same for every model
        return float(module.compute_loss(batch, 0, timesteps=timesteps).mean())


def pretrain_base(out: Path, cfg: Pretraining = Pretraining(), threads: int = 2, log: Log = print) -> Path:
    """Stage 0 of the tiny world into `out` (transformer/, text_encoder/, tokenizer/, layerflow_pipeline.json, the loss
    curves and `report.json`), with the commands a user runs at full size; what `TINY_WORLD_BASE` holds."""
    started = time.perf_counter()
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    recipe = cfg.recipe()
    build_dataset(recipe, work / "dataset", log)
    random_base = build_base(recipe, work, threads, log)
    data = [f"--data.stream.{k}={getattr(recipe, k)}" for k in ("frames_per_layer", "height", "width")]
    cache = work / "latent_cache"
    argv = ["precompute", "--stage", "0", "--tiny", "--cache", str(cache), f"--data.stream.shards={work / 'dataset'}",
            f"--model.network.pretrained={random_base}", *data]
    run_step("the latent cache of stage 0", f"layerflow {shlex.join(argv)}", layerflow, argv, log=log)
    root = work / "stage0"
    argv = ["train", "--stage", "0", "--tiny", f"--data.stream.shards={work / 'dataset'}",
            f"--data.stream.cache={cache}", f"--model.network.pretrained={random_base}", *data,
            f"--data.stream.batch_size={cfg.batch_size}", f"--trainer.max_steps={cfg.steps}",
            f"--model.optim.lr={cfg.lr}", "--model.optim.schedule=cosine",
            f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=50",
            "--trainer.enable_checkpointing=false", f"--trainer.callbacks={TRAIN_CALLBACKS}"]
    run_step("stage 0: the base as a text-to-video model of the world", f"layerflow {shlex.join(argv)}", layerflow,
             argv, log=log)
    final = root / "final"
    for part in BASE_PARTS:
        shutil.rmtree(out / part, ignore_errors=True)
        shutil.copytree(final / part, out / part)
    shutil.copy(final / "layerflow_pipeline.json", out / "layerflow_pipeline.json")
    shutil.copy(root / LOSS_CURVES, out / LOSS_CURVES)
    losses = {name: heldout_text_to_video_loss(folder, recipe, cfg.heldout_seed, cfg.heldout_clips)
              for name, folder in (("random", random_base), ("pretrained", final))}
    size = sum(f.stat().st_size for part in BASE_PARTS for f in (out / part).rglob("*") if f.is_file())
    report = {"pretraining": asdict(cfg), "command": f"python -m layerflow.toyworld pretrain --out {out}",
              "heldout_text_to_video_loss": losses, "seconds": round(time.perf_counter() - started),
              "size_mb": round(size / 2**20, 2)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(work)
    log(f"stage-0 base in {out}: held-out text-to-video loss {losses['random']:.4f} (random) -> "
        f"{losses['pretrained']:.4f}, {size / 2**20:.1f} MB")
    return out


# ---- held-out evaluation --------------------------------------------------------------------------------------

def world_geometry(recipe: Recipe) -> VAETrainConfig:
    """The recipe's frames and sizes as the world generator (`trainer.vae.world_layers`) reads them."""
    return VAETrainConfig(frames_per_layer=recipe.frames_per_layer, height=recipe.height, width=recipe.width,
                          source_size=recipe.source_size)


def heldout_clips(recipe: Recipe, seed: int, count: int) -> list[dict]:
    """`count` clips of world `seed` with the recipe's objects, at the training geometry: the world the VAE
    trains on (`trainer.vae.world_layers`), rendered and scaled as the shards are."""
    return world_layers(world_geometry(recipe), seed, range(count), recipe.objects)


# (task, score, label, target, kind): each row is the mean over clips of one score (booleans: the fraction true).
# kind: "any", a score of any number of objects; "each", one per object, and their mean, with K objects
# (`tw.decomposition_scores`); "one", one object only (its task is not scored with K > 1).
ROWS = (
    ("decompose", "alpha_iou", "decompose: alpha IoU", ">= 0.7", "each"),
    ("decompose", "bg_psnr_object", "decompose: bg PSNR in object region (dB)", ">= trivial + 6", "any"),
    ("decompose", "fg_psnr_object", "decompose: fg PSNR on object (dB)", "", "each"),
    ("fg_conditioned", "bg_psnr_object", "fg_conditioned: bg PSNR in object region (dB)", "", "one"),
    ("fg_conditioned", "fg_unchanged", "fg_conditioned: fg and alpha unchanged", "1", "one"),
    ("bg_conditioned", "coverage_ok", "bg_conditioned: matte covers 2-60 %", "1", "one"),
    ("bg_conditioned", "clear_blend_psnr", "bg_conditioned: blend = bg where clear (dB)", "", "one"),
    ("bg_conditioned", "bg_unchanged", "bg_conditioned: bg unchanged", "1", "one"),
    ("generate", "coherence_psnr", "generate: blend coherence (dB)", ">= 22", "any"),
    ("generate", "shape_ok", "generate: shape as prompted", "", "one"),
    ("generate", "colour_ok", "generate: colour as prompted", "", "one"),
)


def table_rows(objects: int) -> list[tuple[str, str, str, str]]:
    """(task, score, label, target) of the table for clips of `objects` objects: `ROWS`, with K > 1 those of any
    number of objects, a per-object score once per foreground layer and once as the mean."""
    if objects == 1:
        return [row[:4] for row in ROWS]
    out = []
    for task, score, label, target, kind in ROWS:
        if kind == "each":
            out += [(task, score if k == 0 else f"{score}_{k}", f"{label} [{fg_name(k)}]", "") for k in range(objects)]
            out.append((task, f"{score}_mean", f"{label} [mean]", target))
        elif kind == "any":
            out.append((task, score, label, target))
    return out


def scored_tasks(objects: int) -> tuple[str, ...]:
    """The tasks the table scores with `objects` objects, in `ROWS` order: all four with one object, decomposition
    into K foregrounds and generation from K + 2 prompts with more."""
    return tuple(dict.fromkeys(task for task, *_ in table_rows(objects)))


def sample_tasks(pipe: LayerFlowPipeline, clips: list[dict], recipe: Recipe, steps: int, guidance: float,
                 seed: int, tasks: tuple[str, ...] | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each of `tasks` (default: `scored_tasks`) on every clip (one batch per task), with the clip's captions as
    prompts."""
    out = {}
    for task in tasks or scored_tasks(recipe.objects):
        spec = task_spec(task, recipe.objects)
        result = pipe(captions=[c["captions"] for c in clips], task=spec,
                      layers={layer: [c[layer] for c in clips] for layer in spec.conditions},
                      num_frames=recipe.frames_per_layer, height=recipe.height, width=recipe.width,
                      num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator().manual_seed(seed))
        out[task] = [{n: c.layer(n) for n in c.layer_names} for c in result.clips]
    return out


def trivial_outputs(clips: list[dict], recipe: Recipe) -> dict[str, list[dict[str, np.ndarray]]]:
    """The trivial answer of each scored task with the recipe's K objects."""
    shape, k = (recipe.frames_per_layer, recipe.height, recipe.width), recipe.objects
    answers = {"decompose": lambda c: tw.trivial_decomposition(c["blend"], k),
               "fg_conditioned": lambda c: tw.trivial_fg_conditioned(c["fg"], c["alpha"]),
               "bg_conditioned": lambda c: tw.trivial_bg_conditioned(c["bg"]),
               "generate": lambda c: tw.trivial_generation(*shape, k)}
    return {task: [answers[task](c) for c in clips] for task in scored_tasks(k)}


def scores(outputs: dict[str, list[dict[str, np.ndarray]]], clips: list[dict],
           objects: int = 1) -> dict[str, dict[str, float]]:
    """Per task, each score of `table_rows(objects)`: its mean over the clips (NaN-free: a clip whose score is undefined
    is left out)."""
    def fg_conditioned(out: dict, clip: dict) -> dict:
        row = tw.fg_conditioned_scores({"fg": clip["fg"], "alpha": clip["alpha"]}, out, clip["bg"])
        return {**row, "fg_unchanged": row["fg_unchanged"] and row["alpha_unchanged"]}

    score = {"decompose": tw.decomposition_scores, "fg_conditioned": fg_conditioned,
             "bg_conditioned": lambda out, clip: tw.bg_conditioned_scores(clip["bg"], out),
             "generate": lambda out, clip: tw.generation_scores(out, clip["captions"].fg)}
    table = table_rows(objects)
    means = {}
    for task in scored_tasks(objects):
        per_clip = [score[task](o, c) for o, c in zip(outputs[task], clips)]
        means[task] = {}
        for name in {s for t, s, *_ in table if t == task}:
            values = [float(row[name]) for row in per_clip if not math.isnan(float(row[name]))]
            means[task][name] = float(np.mean(values)) if values else math.nan
    return means


def vae_ceiling(recipe: Recipe, vae, clips: list[dict]) -> tuple[dict, dict[str, float]]:
    """The true layers of the held-out clips through the VAE's round trip (`trainer.vae.reconstruct`), as each
    task's output (its given layers kept, as the pipeline keeps them): what a perfect transformer would score
    behind this VAE. Also the round trip's PSNR over all layers (`trainer.vae.heldout_psnr`) of the clips in the
    layouts the pipeline encodes, trained and at the VAE's random init."""
    cfg, k = world_geometry(recipe), recipe.objects
    videos = {task: pack_clips(clips, task, recipe.frames_per_layer, k) for task in VAE_LAYOUTS}
    layout = SequenceLayout.for_task(Task.GENERATE, recipe.frames_per_layer, num_foregrounds=k)
    decoded = [layout.unpack(video.transpose(0, 1)) for video in reconstruct(vae, videos[Task.GENERATE])]
    outputs = {task: [{**d, **{layer: c[layer] for layer in task_spec(task, k).conditions}}
                      for d, c in zip(decoded, clips)] for task in scored_tasks(k)}
    random = build_tiny_vae(vae.config.latent_channels, cfg.seed, cfg.vae)
    psnr = {"trained": heldout_psnr(vae, videos, cfg.frames_per_layer, k)["all"],
            "random": heldout_psnr(random, videos, cfg.frames_per_layer, k)["all"]}
    return outputs, psnr


COLUMNS = {
    "trained": "the stage-3 export",
    "train seed": "the stage-3 export on clips of its training world's seed (memorisation shows as a gap)",
    "untrained": "the folder stage 1 starts from (the stage-0 base, or with --random-base a random transformer)",
    "trivial": "evaluation.metrics.toyworld's trivial baseline",
    "VAE only": "the true layers through the VAE round trip: the most any transformer scores behind this VAE",
}


@dataclass
class Evaluation:
    columns: dict[str, dict[str, dict[str, float]]]  # column -> task -> score -> mean over the clips
    vae_psnr: dict[str, float]  # the VAE's round trip over all layers: trained, random
    clips: list[dict]  # the held-out clips' true layers and captions
    outputs: dict[str, list[dict[str, np.ndarray]]]  # the trained model's layers, per task and clip
    seed: int  # the held-out clips' world seed
    objects: int  # objects per clip


def evaluate(run: Path, recipe: Recipe, seed: int, count: int, sample_steps: int = 8, guidance: float = 6.0,
             log: Log = print) -> Evaluation:
    """Every column of the table on `count` held-out clips of world `seed` with the recipe's objects, and the VAE's
    round-trip PSNR."""
    if seed == recipe.world_seed:
        raise ValueError(f"held-out seed {seed} is the training world's seed; choose another")
    clips = heldout_clips(recipe, seed, count)
    # The trained model on clips of its own training world too: a gap to the held-out column is memorisation.
    seen = heldout_clips(recipe, recipe.world_seed, min(count, recipe.videos))
    models = {"trained": (run / "train" / "stage3" / "final", clips), "untrained": (run / "base", clips),
              "train seed": (run / "train" / "stage3" / "final", seen)}
    columns, outputs = {}, {}
    for name, (folder, world) in models.items():
        t0 = time.perf_counter()
        pipe = LayerFlowPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        outputs[name] = sample_tasks(pipe, world, recipe, sample_steps, guidance, seed)
        columns[name] = scores(outputs[name], world, recipe.objects)
        log(f"-- sampling {', '.join(outputs[name])} with {recipe.objects} object(s), {name} model: "
            f"{time.perf_counter() - t0:.0f} s")
    columns["trivial"] = scores(trivial_outputs(clips, recipe), clips, recipe.objects)
    ceiling, vae_psnr = vae_ceiling(recipe, pipe.vae, clips)  # every stage keeps the base's VAE
    columns["VAE only"] = scores(ceiling, clips, recipe.objects)
    return Evaluation(columns, vae_psnr, clips, outputs["trained"], seed, recipe.objects)


def print_table(evaluation: Evaluation) -> None:
    columns, table = evaluation.columns, table_rows(evaluation.objects)
    names = list(columns)
    label_width = max(len(label) for _, _, label, _ in table)
    objects = f" with {evaluation.objects} objects" if evaluation.objects > 1 else ""
    print(f"\nheld-out clips: {len(evaluation.clips)} of world seed {evaluation.seed}{objects}; mean over clips")
    for name in names:
        print(f"  {name}: {COLUMNS[name]}")
    print(f"{'score':<{label_width}}  " + "  ".join(f"{n:>9}" for n in names) + "  target")
    for task, score, label, target in table:
        cells = "  ".join(f"{columns[n][task][score]:9.2f}" for n in names)
        print(f"{label:<{label_width}}  {cells}  {target}")


def summary_line(evaluation: Evaluation) -> str:
    """The line users grep: the paper's scores with one object; with K the K-object ones (their keys differ)."""
    trained, k = evaluation.columns["trained"], evaluation.objects
    decompose, generate = trained["decompose"], trained["generate"]
    line = (f"toyworld objects={k} decompose_alpha_iou_mean={decompose['alpha_iou_mean']:.2f}" if k > 1 else
            f"toyworld decompose_alpha_iou={decompose['alpha_iou']:.2f}")
    line += (f" decompose_bg_psnr_db={decompose['bg_psnr_object']:.1f}"
             f" generate_blend_consistency_db={generate['coherence_psnr']:.1f}")
    if k == 1:
        line += (f" fg_conditioned_bg_psnr_db={trained['fg_conditioned']['bg_psnr_object']:.1f}"
                 f" vae_psnr_db={evaluation.vae_psnr['trained']:.1f}"
                 f" colour_as_prompted={generate['colour_ok']:.2f}")
    return line


def _rgb(layer: np.ndarray, frame: int) -> np.ndarray:
    return layer[frame] if layer.ndim == 4 else np.repeat(layer[frame][..., None], 3, axis=-1)


def _save_grid(rows: list[np.ndarray], path: Path, zoom: int) -> Path:
    from PIL import Image

    grid = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(path)
    return path


def _gap(image: np.ndarray) -> np.ndarray:
    return np.full((image.shape[0], 2, 3), 255, np.uint8)


def _strip(layers: dict[str, np.ndarray], names: list[str], frame: int) -> np.ndarray:
    return np.concatenate([_rgb(layers[n], frame) for n in names], axis=1)


def decomposition_picture(evaluation: Evaluation, path: Path, frame: int = 0, zoom: int = 4, rows: int = 8) -> Path:
    """A PNG, one row per held-out clip (the first `rows`): the input blend, then the true fg, alpha (each
    object's), bg, then the decomposed ones."""
    names = [n for k in range(evaluation.objects) for n in (fg_name(k), alpha_name(k))] + ["bg"]
    lines = []
    for clip, out in list(zip(evaluation.clips, evaluation.outputs["decompose"]))[:rows]:
        blend = _rgb(clip["blend"], frame)
        lines.append(np.concatenate([blend, _gap(blend), _strip(clip, names, frame), _gap(blend),
                                     _strip(out, names, frame)], axis=1))
    return _save_grid(lines, path, zoom)


def generation_picture(evaluation: Evaluation, path: Path, frame: int = 0, zoom: int = 4, rows: int = 8) -> Path:
    """A PNG, one row per held-out clip's prompts (the first `rows`): the generated fg, alpha (each object's), bg
    and blend, then the generated layers composited, which a coherent generation's blend equals."""
    names = [n for k in range(evaluation.objects) for n in (fg_name(k), alpha_name(k))] + ["bg", "blend"]
    lines = []
    for out in evaluation.outputs["generate"][:rows]:
        layers = _strip(out, names, frame)
        composed = tw.implied_blend({n: out[n][frame:frame + 1] for n in names if n != "blend"})[0]
        lines.append(np.concatenate([layers, _gap(layers), composed], axis=1))
    return _save_grid(lines, path, zoom)


def write_report(evaluation: Evaluation, folder: Path) -> list[Path]:
    """The table's numbers (`scores.json`) and the decomposition and generation pictures of the held-out clips,
    in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "scores.json"
    table.write_text(json.dumps({"seed": evaluation.seed, "clips": len(evaluation.clips), "columns": evaluation.columns,
                                 "vae_psnr": evaluation.vae_psnr}, indent=1))
    return [table, decomposition_picture(evaluation, folder / "decomposition.png"),
            generation_picture(evaluation, folder / "generation.png")]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m layerflow.toyworld",
                                     description="the tiny world's shipped assets")
    sub = parser.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("pretrain", help="stage 0: the pretrained base stage 1 starts from (TINY_WORLD_BASE)")
    pre.add_argument("--out", type=Path, default=Path("outputs/tiny_world_base"))
    pre.add_argument("--videos", type=int, default=Pretraining.videos)
    pre.add_argument("--steps", type=int, default=Pretraining.steps)
    pre.add_argument("--frames", type=int, default=Pretraining.frames, help="frames per training clip")
    pre.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pretrain_base(args.out, Pretraining(videos=args.videos, frames=args.frames, steps=args.steps), args.threads,
                  log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
