"""Diffusion schedule of LayerFlow (CogVideoX-2B's): schedulers, classifier-free guidance schedule, loss weight.

v-prediction on a zero-terminal-SNR discretisation with SNR shift 3.0, sampled with DPM++ 2M (VP-SDE): "official"
(`model.official_sampler`, the official discretisation, the default of converted official checkpoints) or "dpm"
(diffusers' `CogVideoXDPMScheduler`, trailing timesteps over the 1000-entry table), or with DDIM ("ddim").
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Literal

import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from model.official_sampler import OfficialDPMScheduler

Sampler = Literal["official", "dpm", "ddim"]
SAMPLERS: dict[str, type] = {"official": OfficialDPMScheduler, "dpm": CogVideoXDPMScheduler,
                             "ddim": CogVideoXDDIMScheduler}
DEFAULT_STEPS = 50


class ScheduleError(ValueError):
    """A bad sampler or guidance option; the message names the valid choices."""


@dataclass(frozen=True)
class SchedulerConfig:
    """The CogVideoX-2B noise schedule (its `scheduler_config.json`), as the official SAT configs define it."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "v_prediction"
    rescale_betas_zero_snr: bool = True
    snr_shift_scale: float = 3.0
    timestep_spacing: str = "trailing"
    clip_sample: bool = False
    set_alpha_to_one: bool = True
    steps_offset: int = 0


def make_scheduler(sampler: Sampler | str = "dpm", config: SchedulerConfig | None = None):
    """A fresh scheduler of the given kind with the LayerFlow schedule."""
    try:
        cls = SAMPLERS[sampler]
    except KeyError:
        raise ScheduleError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}") from None
    config = config or SchedulerConfig()
    if cls is OfficialDPMScheduler:  # v-prediction, zero terminal SNR and its own spacing are what it is
        return cls(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                   beta_end=config.beta_end, snr_shift_scale=config.snr_shift_scale)
    return cls(**asdict(config))


def scheduler_class(class_name: str) -> type:
    """The sampler class a saved scheduler_config.json names in `_class_name`."""
    for cls in SAMPLERS.values():
        if cls.__name__ == class_name:
            return cls
    names = ", ".join(cls.__name__ for cls in SAMPLERS.values())
    raise ScheduleError(f"unsupported scheduler {class_name!r} in scheduler_config.json; use one of {names}")


def sampler_name(scheduler) -> str:
    for name, cls in SAMPLERS.items():
        if isinstance(scheduler, cls):
            return name
    raise ScheduleError(f"unsupported scheduler {type(scheduler).__name__}; use one of {', '.join(SAMPLERS)}")


class GuidanceSchedule(str, Enum):
    # The official and diffusers schedule: it feeds the discrete timestep (0..999) where a step counter was
    # meant, which gives CogVideoX's "wave-like" scale; kept because the released checkpoints were tuned on it.
    # It depends on the sampler's timesteps: the official sampler's give the official scales at any step count.
    DYNAMIC = "dynamic"
    # The same cosine ramp over the step counter (what the formula was meant to compute).
    MONOTONE = "monotone"
    CONSTANT = "constant"

    @classmethod
    def parse(cls, value: GuidanceSchedule | str) -> GuidanceSchedule:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ScheduleError(f"unknown guidance schedule {value!r}; choose one of {names}") from None


def guidance_scale(
    weight: float,
    timestep: int,
    step_index: int,
    num_inference_steps: int,
    schedule: GuidanceSchedule | str = GuidanceSchedule.DYNAMIC,
) -> float:
    """CFG scale at one sampler step: `uncond + scale * (cond - uncond)`.

    dynamic:  1 + w * (1 - cos(pi * ((N - t) / N) ** 5)) / 2, t the discrete timestep, N the step count;
    monotone: the same with the step counter i (0 at the first step) in place of N - t;
    constant: w.
    """
    schedule = GuidanceSchedule.parse(schedule)
    if schedule is GuidanceSchedule.CONSTANT:
        return float(weight)
    progress = (num_inference_steps - int(timestep)) if schedule is GuidanceSchedule.DYNAMIC else int(step_index)
    return 1.0 + weight * (1.0 - math.cos(math.pi * (progress / num_inference_steps) ** 5.0)) / 2.0


def alpha_bar(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """alpha_bar(t) (cumulative signal fraction) of the scheduler's training discretisation at `timesteps`."""
    table = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
    return table[timesteps.long()]


def training_loss_weight(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Per-sample weight 1 / (1 - alpha_bar) of the v-prediction MSE, as the official training weights it.

    With zero terminal SNR alpha_bar(T) = 0, so the weight is finite everywhere on the training grid (t >= 0
    keeps alpha_bar < 1).
    """
    return 1.0 / (1.0 - alpha_bar_t)
