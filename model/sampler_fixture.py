"""The official sampling loop's fixture (`sat_sampler` layout) replayed through `LayerFlowPipeline`; what
`layerflow convert verify-sampler DIR` (model.convert, which converts each run's network) compares.

A fixture folder holds fixture.json (per run: the official network config, task, batch, step count, seed) and,
per run, `<weights>_state_dict.safetensors` and `<run>_sampling.safetensors` (initial noise, context, condition
latents, each step's SDE noise and latents after it, the final full sequence); see
../shared/reference/sat_sampler/README.md. The fixture starts after T5 and the VAE, so the pipeline gets the text
embeddings and the condition latents as they are; its VAE only sets the latent geometry and never runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file

from model.layout import Task, task_spec
from model.pipeline import LayerFlowPipeline
from model.schedule import make_scheduler
from model.tiny import build_tiny_vae
from model.transformer import LayerFlowTransformer

Noise = Literal["recorded", "seed"]
# What the official sampler passes as guidance "6": DynamicCFG(scale=6) in every released yaml.
OFFICIAL_GUIDANCE = 6.0


class SamplerFixtureError(ValueError):
    """A folder that is not a sampler fixture, or lacks a run's file; the message names what is missing."""


@dataclass
class SamplerRun:
    name: str
    task: Task
    num_steps: int
    seed: int
    tensors: dict[str, torch.Tensor]
    pipeline: LayerFlowPipeline

    @property
    def batch(self) -> int:
        return self.tensors["initial_noise"].shape[0]


@dataclass
class Replay:
    steps: list[torch.Tensor]  # the noisy latents after each step
    full: torch.Tensor  # the final full sequence, conditions in place


def read_fixture(folder: str | Path) -> dict[str, Any]:
    """fixture.json, which must list its runs."""
    meta_path = Path(folder) / "fixture.json"
    if not meta_path.is_file():
        raise SamplerFixtureError(f"{folder} has no fixture.json; a sampler fixture holds fixture.json, "
                                  "<run>_sampling.safetensors and the runs' state dicts")
    meta = json.loads(meta_path.read_text())
    if not meta.get("runs"):
        raise SamplerFixtureError(f"{meta_path} lists no runs (expected a 'runs' mapping, as sat_sampler's)")
    return meta


def load_run(folder: str | Path, name: str, transformer: LayerFlowTransformer) -> SamplerRun:
    """A run's tensors and a pipeline with the official sampler around `transformer`, the run's network."""
    run = read_fixture(folder)["runs"][name]
    sampling = Path(folder) / f"{name}_sampling.safetensors"
    if not sampling.is_file():
        raise SamplerFixtureError(f"{sampling} is missing; fixture.json lists run {name!r}")
    return SamplerRun(name, Task.parse(run["task"]), int(run["num_steps"]), int(run["seed_global_rng_before_sample"]),
                      load_file(str(sampling)), latent_pipeline(transformer))


def latent_pipeline(transformer: LayerFlowTransformer) -> LayerFlowPipeline:
    """A pipeline with the official sampler that samples in latent space only: it is given the text embeddings
    and the condition latents (no T5), and its VAE, a tiny one, sets the latent geometry but never runs."""
    pipeline = LayerFlowPipeline(tokenizer=None, text_encoder=None,
                                 vae=build_tiny_vae(transformer.layerflow_config.in_channels),
                                 transformer=transformer, scheduler=make_scheduler("official"))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def replay(run: SamplerRun, noise: Noise = "recorded") -> Replay:
    """Sample the run with our pipeline. recorded: from the fixture's initial latents and per-step noise (the
    reproducibility hooks); seed: every draw from a generator seeded as the official run's global RNG was."""
    pipe, tensors = run.pipeline, run.tensors
    noisy = tensors["initial_noise"]
    height, width = (size * pipe.vae_scale_factor_spatial for size in noisy.shape[-2:])
    context = tensors["context"]
    steps: list[torch.Tensor] = []

    def record(_pipe, _i, _t, kwargs):
        steps.append(kwargs["latents"].clone())
        return {}

    if noise == "recorded":
        sources = {"latents": noisy, "step_noise": lambda i: tensors[f"step{i:02d}.noise"]}
    else:
        sources = {"generator": torch.Generator().manual_seed(run.seed)}
    out = pipe(
        task=run.task,
        prompt_embeds=context.reshape(run.batch, -1, context.shape[-1]),  # "(b p) n d": a sample's prompts in a row
        condition_latents=tensors.get("cond_latents"),
        num_frames=_frames_per_layer(run, pipe),
        height=height,
        width=width,
        num_inference_steps=run.num_steps,
        guidance_scale=OFFICIAL_GUIDANCE,
        callback_on_step_end=record,
        output_type="latent",
        **sources,
    )
    return Replay(steps, out.latents)


def _frames_per_layer(run: SamplerRun, pipe: LayerFlowPipeline) -> int:
    spec = task_spec(run.task)
    latents = run.tensors["final.full"].shape[1] - int(spec.duplicate_first_frame)
    return latents // len(spec.layers) * pipe.vae_scale_factor_temporal


def parity_checks(run: SamplerRun, result: Replay) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, ours, official) for the latents after every step and the final full sequence."""
    checks = [(f"{run.name}.step{i:02d}", ours, run.tensors[f"step{i:02d}.x_out"])
              for i, ours in enumerate(result.steps)]
    return checks + [(f"{run.name}.final.full", result.full, run.tensors["final.full"])]
