"""Trainer overhead and data throughput on the tiny world, as ratios measured in one interleaved run (CPU); with
--gpu and CUDA, the full-size stage-2 step (CogVideoX-2B, 64 frames x 480x720, random weights): time, peak memory,
MFU.

The tiny-world measurement trains stage 1 as `infra/toyworld.py`'s recipe does (`layerflow train --stage 1 --tiny`
with the recipe's overrides, batch 8, reading a latent cache) and, on the same batches of the same cache, the same
`LayerFlowModule` in a bare PyTorch loop (loss, backward, clipping, AdamW, no Lightning), in one process: the two
alternate step by step, so a change in the machine's load hits both. Each figure is a full cycle (fetch a batch,
step) after the first; also the cache's samples/s with no model, what the stream can supply.

    python benchmarks/train.py [--steps 60] [--threads 1] [--videos 16] [--gpu]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_engine.shards import ShardSink  # noqa: E402
from data_engine.synthetic import SyntheticConfig, synthetic_clip  # noqa: E402
from layerflow.toyworld import Recipe  # noqa: E402
from trainer.cli import run  # noqa: E402
from trainer.precompute import main as precompute  # noqa: E402


def world_cache(recipe: Recipe, videos: int, tmp: Path) -> list[str]:
    """The recipe's world clips and their latent cache in `tmp`; returns the `layerflow train` arguments of the
    recipe's stage 1 on them (as `infra/toyworld.py`'s `train` passes them) from the tiny config's random model:
    weights do not change a step's cost, and its VAE's latents have the shape of the world VAE's."""
    world = SyntheticConfig(num_frames=recipe.video_frames, height=recipe.source_size, width=recipe.source_size,
                            seed=recipe.world_seed, num_objects=recipe.objects, clip_height=recipe.height,
                            clip_width=recipe.width)
    shards = tmp / "dataset"
    with ShardSink(shards, maxcount=videos) as sink:
        for i in range(videos):
            sink.write(synthetic_clip(world, i))
    args = ["--stage", "1", "--tiny", f"--data.stream.shards={shards}",
            *(f"--data.stream.{k}={getattr(recipe, k)}" for k in ("frames_per_layer", "height", "width"))]
    if precompute([*args, "--cache", str(tmp / "latent_cache")]) != 0:
        raise RuntimeError("benchmarks/train.py: precompute failed (see above)")
    args += [f"--data.stream.cache={tmp / 'latent_cache'}", f"--data.stream.batch_size={recipe.batch_size}",
             f"--model.optim.lr={recipe.lr}", "--model.network.stage1_blocks=all", "--trainer.log_every_n_steps=50",
             "--trainer.callbacks=[{class_path: trainer.callbacks.LossCurvesCallback}]",
             "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false"]
    return args + ([f"--data.stream.tasks={recipe.tasks}"] if recipe.tasks else [])


def bare_cycles(args: list[str]) -> Iterator[float]:
    """The module `layerflow train` builds from `args`, trained by hand on its datamodule's batches (the batches
    Lightning gets): each `next` runs one cycle, fetch a batch and step, and returns its loss."""
    cli = run(args, fit=False)
    module, clip = cli.model, cli.trainer.gradient_clip_val
    module.configure_model()
    module.train()
    optim = module.configure_optimizers()
    optimizer, schedule = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    batches = iter(cli.datamodule.loader())
    for step in itertools.count():
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = module.compute_loss(batch, step).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), clip)
        optimizer.step()
        schedule.step()
        yield loss.item()


class BareCycleEachStep(L.Callback):
    """At each Lightning batch start, one bare cycle: the two loops alternate step by step, so a change in the
    machine's load hits both. Lightning's cycle k is all it does between the bare cycles k and k + 1."""

    def __init__(self, bare: Iterator[float]) -> None:
        self.bare = bare
        self.arrive: list[float] = []
        self.leave: list[float] = []
        self.losses: dict[str, list[float]] = {"bare": [], "lightning": []}

    def on_train_batch_start(self, *_) -> None:
        self.arrive.append(time.perf_counter())
        self.losses["bare"].append(next(self.bare))
        self.leave.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, *_) -> None:
        self.losses["lightning"].append(float(outputs["loss"]))

    def cycles(self) -> tuple[list[float], list[float]]:
        """(bare, Lightning) seconds per cycle, without the first of each (lazy set-up)."""
        bare = [b - a for a, b in zip(self.arrive, self.leave)]
        lightning = [a - b for b, a in zip(self.leave, self.arrive[1:])]
        return bare[1:len(lightning)], lightning[1:]


def interleaved_steps(args: list[str], steps: int, root: Path) -> BareCycleEachStep:
    """`layerflow train` as configured by `args` for `steps` steps, a bare cycle before each."""
    cli = run([*args, f"--trainer.max_steps={steps + 2}", f"--trainer.default_root_dir={root}",
               f"--trainer.logger.init_args.save_dir={root}"], fit=False)
    interleave = BareCycleEachStep(bare_cycles(args))
    cli.trainer.callbacks.append(interleave)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return interleave


def stream_rate(args: list[str], batches: int) -> float:
    """Samples per second of the cached stream alone (decode and collate, no model)."""
    dm = run(args, fit=False).datamodule
    loader = iter(dm.loader(num_batches=batches + 1))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * dm.cfg.batch_size / (time.perf_counter() - start)


def tiny_world(steps: int, threads: int, videos: int) -> None:
    torch.set_num_threads(threads)
    recipe = Recipe()
    with tempfile.TemporaryDirectory() as tmp:
        args = world_cache(recipe, videos, Path(tmp))
        interleaved = interleaved_steps(args, steps, Path(tmp) / "run")
        rate = stream_rate(args, 4 * steps)
    bare, lit = interleaved.cycles()
    # The same model on the same batches with the same draws: the two loops' losses agree step by step.
    gap = max(abs(a - b) / b for a, b in zip(interleaved.losses["lightning"], interleaved.losses["bare"]))
    ratios = [lit_s / bare_s for lit_s, bare_s in zip(lit, bare)]
    batch = recipe.batch_size
    print(f"tiny world, stage 1 as infra/toyworld.py trains it (batch {batch}, latent cache of {videos} clips), CPU, "
          f"{threads} thread(s): {len(ratios)} steps of each loop, alternating")
    print(f"  bare PyTorch step   {statistics.median(bare) * 1e3:7.1f} ms  (median; quartiles "
          f"{' / '.join(f'{q * 1e3:.1f}' for q in statistics.quantiles(bare))})")
    print(f"  Lightning step      {statistics.median(lit) * 1e3:7.1f} ms  (median; quartiles "
          f"{' / '.join(f'{q * 1e3:.1f}' for q in statistics.quantiles(lit))})")
    print(f"  Lightning / bare    {statistics.median(ratios):7.3f}    (median of step pairs; total / total "
          f"{sum(lit) / sum(bare):.3f}; target <= 1.10)")
    print(f"  cached stream       {rate:7.1f} samples/s (no model); the Lightning step consumes "
          f"{batch / statistics.median(lit):.1f} samples/s")
    print(f"  the two loops' losses differ by at most {gap:.1e} (relative) over "
          f"{len(interleaved.losses['lightning'])} steps")


def gpu_stage2(steps: int) -> None:
    from model.config import get_preset
    from model.transformer import LayerFlowTransformer

    cfg = get_preset("cogvideox-2b")
    device = torch.device("cuda")
    model = LayerFlowTransformer.from_config(cfg).to(device, torch.bfloat16)
    model.enable_gradient_checkpointing()
    for name, p in model.named_parameters():
        p.requires_grad_(".motion_lora." in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-4)
    x = torch.randn(1, 16, 16, 60, 90, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 678, 4096, device=device, dtype=torch.bfloat16)
    t = torch.tensor([500], device=device)
    scale = torch.ones(1, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, text, t, motion_scale=scale).float().square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in model.parameters())
    tokens = cfg.video_tokens + cfg.max_text_seq_length
    hidden, layers = cfg.hidden_size, cfg.num_layers
    # Forward FLOPs: 2 * params * tokens for the linears plus 4 * tokens^2 * hidden per layer for attention;
    # training = forward + recomputed forward (checkpointing) + backward (2x) = 4x forward.
    forward = 2 * n_params * tokens + 4 * tokens**2 * hidden * layers
    achieved = 4 * forward / seconds
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    ref = next((v for k, v in peak.items() if k in name), None)
    print(f"stage-2 step, CogVideoX-2B, 64 frames 480x720 ({tokens} tokens), batch 1, bf16, checkpointing, {name}:")
    print(f"  step time            {seconds:.3f} s")
    print(f"  peak memory          {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"  model FLOP/s         {achieved / 1e12:.1f} TFLOP/s" + (f" (MFU {achieved / ref:.1%} of dense bf16 peak)"
                                                                    if ref else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--videos", type=int, default=16, help="world clips in the cache")
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu: CUDA is not available on this machine")
        gpu_stage2(args.steps)
        return
    torch.manual_seed(0)
    tiny_world(args.steps, args.threads, args.videos)


if __name__ == "__main__":
    main()
