"""`python -m trainer.vae [--out DIR] [--steps N]`: train the tiny preset's VAE to reconstruct the synthetic world.

The real preset keeps the pretrained CogVideoX VAE. The tiny preset's VAE is the same diffusers class
(`AutoencoderKLCogVideoX`) at a tiny size; with random weights its latents carry little the tiny transformer could
learn, so here our own code trains one: clips of the procedural layered world (`data_engine.synthetic`),
packed as the pipeline encodes them (fg, alpha as grey RGB, bg, blend concatenated along time, in [-1, 1]),
are encoded and decoded by the VAE's own `encode` / `decode`, with a squared-error reconstruction loss and a small
KL term, under AdamW. Held-out clips come from another seed of the world: the PSNR reported is on clips never
trained on.

A plain loop rather than Lightning: one model, one optimizer, one CPU thread; nothing to distribute or resume.
Writes `<out>/vae/` (`save_pretrained`, loadable by `AutoencoderKLCogVideoX.from_pretrained` and usable as a
tiny pipeline's `vae/`) and `<out>/report.json` (held-out PSNR before and after, steps, seconds, size).

Examples:
  python -m trainer.vae                              # -> outputs/tiny_vae/{vae/,report.json}
  python -m trainer.vae --steps 100 --out /tmp/vae   # a quick run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX

from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import cover_geometry, resize_crop
from model.config import get_preset
from model.layout import SequenceLayout, Task, signed_to_uint8
from model.tiny import TinyVAEConfig, build_tiny_vae

# Wider than the preset's random VAE (8, 8, 8), which stays as it is for the tests' random pipeline. At 150 steps
# (32, 32, 32) scored no better per step at twice the cost per step, so these widths: 0.68 M float32 weights
# (2.7 MB). Three blocks keep the tiny transformer's geometry: 4x in space and time, 16 latent channels.
TRAINED_TINY_VAE = TinyVAEConfig(block_out_channels=(16, 32, 32), norm_num_groups=4)
# The two frame layouts the pipeline encodes: the four sub-clips (generation, decomposition), and the same after a
# duplicated first frame (fg- and bg-conditioned generation), whose causal first latent holds that frame alone.
LAYOUTS = (Task.GENERATE, Task.FG_CONDITIONED)


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 600
    # Not 1: at batch 1 PyTorch runs conv3d on its slow non-oneDNN path, 0.8 s a step on one thread against 0.28 s
    # for two clips.
    batch_size: int = 2
    lr: float = 2e-3
    # Small enough not to cost reconstruction; it keeps the latents near unit scale for the diffusion model.
    kl_weight: float = 1e-6
    seed: int = 0  # the VAE's initial weights and the posterior noise
    train_world_seed: int = 0
    heldout_world_seed: int = 1
    heldout_clips: int = 8
    # The tiny training configs' frames per layer and size (infra/configs/train/tiny_stage*.yaml, data.stream).
    frames_per_layer: int = 4
    height: int = 32
    width: int = 48
    # Clips are rendered square at this size and scaled to cover the tiny size and centre-cropped, as the trainer
    # frames the demo's synthetic clips (128 x 128, infra/configs/engine/demo.yaml): same object sizes, same filter.
    source_size: int = 128
    vae: TinyVAEConfig = TRAINED_TINY_VAE

    def __post_init__(self) -> None:
        if self.train_world_seed == self.heldout_world_seed:
            raise ValueError("train_world_seed and heldout_world_seed must differ: held-out clips are never trained on")


def world_layers(cfg: VAETrainConfig, world_seed: int, indices: range, num_objects: int = 1) -> list[dict]:
    """Synthetic clips `indices` of world `world_seed` with `num_objects` objects at the training geometry: rendered
    `source_size` square and scaled to cover height x width, as the engine frames them. Each a dict of its uint8
    layers (`data_engine.schema.layer_names`) and its `captions`."""
    world = SyntheticConfig(num_frames=cfg.frames_per_layer, height=cfg.source_size, width=cfg.source_size,
                            seed=world_seed, num_objects=num_objects)
    geometry = cover_geometry(world.height, world.width, cfg.height, cfg.width)
    clips = []
    for index in indices:
        clip = synthetic_clip(world, index)
        clips.append({"captions": clip.captions,
                      **{name: resize_crop(clip.layer(name), geometry) for name in clip.layer_names}})
    return clips


def pack_clips(clips: list[dict], task: Task, frames_per_layer: int, num_foregrounds: int = 1) -> torch.Tensor:
    """Clips' layers in `task`'s layout, as the pipeline hands them to the VAE: [N, 3, frames, H, W] in [-1, 1]."""
    layout = SequenceLayout.for_task(task, frames_per_layer, num_foregrounds=num_foregrounds)
    return torch.stack([layout.pack({name: clip[name] for name in layout.layers}) for clip in clips]
                       ).permute(0, 2, 1, 3, 4)


def world_clips(cfg: VAETrainConfig, world_seed: int, indices: range, task: Task) -> torch.Tensor:
    """Synthetic clips `indices` of world `world_seed` (`world_layers`) in `task`'s layout (`pack_clips`)."""
    return pack_clips(world_layers(cfg, world_seed, indices), task, cfg.frames_per_layer)


def reconstruct(vae: AutoencoderKLCogVideoX, videos: torch.Tensor) -> torch.Tensor:
    """The deterministic round trip (posterior mean), in [-1, 1]."""
    with torch.no_grad():
        return vae.decode(vae.encode(videos).latent_dist.mode()).sample.clamp(-1.0, 1.0)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per clip, in dB, on the 8-bit frames the pipeline would write."""
    mse = (signed_to_uint8(recon).float() - signed_to_uint8(target).float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def heldout_set(cfg: VAETrainConfig) -> dict[Task, torch.Tensor]:
    """The held-out clips (another seed of the world than training's) in each layout."""
    return {task: world_clips(cfg, cfg.heldout_world_seed, range(cfg.heldout_clips), task) for task in LAYOUTS}


def heldout_psnr(vae: AutoencoderKLCogVideoX, heldout: dict[Task, torch.Tensor],
                 frames_per_layer: int, num_foregrounds: int = 1) -> dict[str, float]:
    """Mean PSNR over clips and layouts of the whole video ("all") and of each layer's frames."""
    scores: dict[str, list[torch.Tensor]] = {"all": []}
    for task, videos in heldout.items():
        recon = reconstruct(vae, videos)
        layout = SequenceLayout.for_task(task, frames_per_layer, num_foregrounds=num_foregrounds)
        scores["all"].append(psnr(recon, videos))
        for name in layout.layers:
            part = layout.frame_slice(name)
            scores.setdefault(name, []).append(psnr(recon[:, :, part], videos[:, :, part]))
    return {name: float(torch.cat(values).mean()) for name, values in scores.items()}


def train_step(vae: AutoencoderKLCogVideoX, optimizer: torch.optim.Optimizer, videos: torch.Tensor,
               kl_weight: float, generator: torch.Generator) -> float:
    """One AdamW step on the squared error of decoding a posterior sample, + KL. Squared error is what PSNR scores
    and weighs the objects' large errors over the backgrounds' many small ones (L1 reached 0.7 dB less in 600
    steps); a sample, not the mean, because the trainer encodes with sampled latents."""
    posterior = vae.encode(videos).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    loss = (recon - videos).pow(2).mean() + kl_weight * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def cosine_decay(steps: int):
    """The learning-rate factor at each step: cosine from 1 to 0, so the last steps polish rather than jump."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def calibrate_scaling_factor(vae: AutoencoderKLCogVideoX, videos: torch.Tensor) -> float:
    """Set `scaling_factor` to 1 / std of the latents, as Stable Diffusion's was: the pipeline multiplies latents by
    it, and the diffusion model is trained to denoise unit-variance latents."""
    with torch.no_grad():
        std = float(vae.encode(videos).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return 1.0 / std


def train_tiny_vae(cfg: VAETrainConfig = VAETrainConfig(), log=print) -> tuple[AutoencoderKLCogVideoX, dict]:
    """Train from `cfg.seed`; returns the VAE (eval mode, scaling factor set) and its report."""
    latent_channels = get_preset("tiny").in_channels
    vae = build_tiny_vae(latent_channels, cfg.seed, cfg.vae)
    heldout = heldout_set(cfg)
    before = heldout_psnr(vae, heldout, cfg.frames_per_layer)
    log(f"untrained: held-out PSNR {before['all']:.2f} dB")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_decay(cfg.steps))
    generator = torch.Generator().manual_seed(cfg.seed)
    vae.train()
    started, cpu_started = time.perf_counter(), time.process_time()
    for step in range(cfg.steps):
        # Fresh clips every step, the layouts in turn: the world is endless, so the VAE cannot memorise it.
        batch = world_clips(cfg, cfg.train_world_seed, range(step * cfg.batch_size, (step + 1) * cfg.batch_size),
                            LAYOUTS[step % len(LAYOUTS)])
        loss = train_step(vae, optimizer, batch, cfg.kl_weight, generator)
        schedule.step()
        if (step + 1) % max(cfg.steps // 10, 1) == 0:
            log(f"step {step + 1}/{cfg.steps}: loss {loss:.4f} ({time.perf_counter() - started:.0f} s)")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    vae.eval()
    scaling = calibrate_scaling_factor(vae, world_clips(cfg, cfg.train_world_seed, range(cfg.heldout_clips),
                                                        Task.GENERATE))
    after = heldout_psnr(vae, heldout, cfg.frames_per_layer)
    log(f"trained: held-out PSNR {after['all']:.2f} dB after {cfg.steps} steps in {seconds:.0f} s")
    report = {"psnr_untrained": before, "psnr_trained": after, "steps": cfg.steps, "train_seconds": seconds,
              # CPU time as well: on a shared machine the wall time also counts other processes' turns.
              "train_cpu_seconds": cpu_seconds, "seconds_per_step": seconds / max(cfg.steps, 1),
              "threads": torch.get_num_threads(), "scaling_factor": scaling, "config": asdict(cfg)}
    return vae, report


def save(vae: AutoencoderKLCogVideoX, report: dict, out: str | Path) -> Path:
    """`<out>/vae/` (safetensors) and `<out>/report.json` (with the weights' size); returns the vae folder."""
    folder = Path(out) / "vae"
    vae.save_pretrained(folder, safe_serialization=True)
    report = {**report, "weights_bytes": sum(p.stat().st_size for p in folder.glob("*.safetensors"))}
    (Path(out) / "report.json").write_text(json.dumps(report, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.vae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/tiny_vae"))
    parser.add_argument("--steps", type=int, default=VAETrainConfig.steps)
    parser.add_argument("--seed", type=int, default=VAETrainConfig.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the figures: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vae, report = train_tiny_vae(VAETrainConfig(steps=args.steps, seed=args.seed))
    folder = save(vae, report, args.out)
    print(f"tiny VAE written: {folder} ({folder.parent / 'report.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
