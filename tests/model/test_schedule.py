"""Diffusion schedule: the noise schedule recomputed from its definition, and the official dynamic CFG formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from model.schedule import (
    GuidanceSchedule,
    ScheduleError,
    alpha_bar,
    guidance_scale,
    make_scheduler,
    training_loss_weight,
)


def _reference_alphas_cumprod() -> np.ndarray:
    """ZeroSNRDDPMDiscretization of the official config, in float64 numpy: scaled-linear betas 0.00085..0.012,
    SNR shift 3 (alpha_bar / (3 - 2 alpha_bar)), then the zero-terminal-SNR rescale of sqrt(alpha_bar)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ab = np.cumprod(1 - betas)
    ab = ab / (3.0 + (1 - 3.0) * ab)
    s = np.sqrt(ab)
    s0, st = s[0], s[-1]
    s = (s - st) * s0 / (s0 - st)
    return s**2


@pytest.mark.parametrize("sampler,cls", [("dpm", CogVideoXDPMScheduler), ("ddim", CogVideoXDDIMScheduler)])
def test_scheduler_is_zero_snr_shifted_v_prediction(sampler, cls):
    sched = make_scheduler(sampler)
    assert isinstance(sched, cls)
    assert sched.config.prediction_type == "v_prediction"
    ab = sched.alphas_cumprod.double().numpy()
    assert ab[-1] == pytest.approx(0.0, abs=1e-12)  # zero terminal SNR
    np.testing.assert_allclose(ab, _reference_alphas_cumprod(), rtol=1e-5, atol=1e-7)
    # The shift really is applied: without it alpha_bar(500) is far larger.
    unshifted = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    assert ab[500] < 0.6 * unshifted[500]


def test_trailing_timesteps():
    sched = make_scheduler("dpm")
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(999, 0, -20))


def test_unknown_sampler():
    with pytest.raises(ScheduleError, match="choose one of official, dpm, ddim"):
        make_scheduler("euler")


def _sat_dynamic_cfg(scale: float, timestep: int, num_steps: int) -> float:
    """The official guider (sgm DynamicCFG, exp 5) as the VPSDEDPMPP2MSampler calls it:
    step_index = num_steps - timestep, with timestep the discrete 0..999 value."""
    step_index = num_steps - timestep
    return 1 + scale * (1 - math.cos(math.pi * (step_index / num_steps) ** 5)) / 2


def _diffusers_dynamic_cfg(guidance: float, t: torch.Tensor, num_inference_steps: int) -> float:
    """The line in diffusers' CogVideoXPipeline.__call__ (use_dynamic_cfg=True)."""
    return 1 + guidance * (
        (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0)) / 2)


@pytest.mark.parametrize("steps", [50, 20])
def test_dynamic_cfg_matches_official_and_diffusers(steps):
    sched = make_scheduler("dpm")
    sched.set_timesteps(steps)
    scales = []
    for i, t in enumerate(sched.timesteps):
        ours = guidance_scale(6.0, int(t), i, steps, "dynamic")
        assert ours == _sat_dynamic_cfg(6.0, int(t), steps)
        assert ours == _diffusers_dynamic_cfg(6.0, t, steps)
        scales.append(ours)
    assert all(1.0 <= s <= 7.0 for s in scales)
    # The official schedule is the known non-monotone "wave" (CogVideo issue #267).
    diffs = np.diff(scales)
    assert (diffs > 0).any() and (diffs < 0).any()


def test_monotone_and_constant_schedules():
    steps = 50
    mono = [guidance_scale(6.0, 0, i, steps, GuidanceSchedule.MONOTONE) for i in range(steps)]
    assert mono[0] == 1.0
    assert all(b >= a for a, b in zip(mono, mono[1:]))
    assert mono[-1] == pytest.approx(1 + 6 * (1 - math.cos(math.pi * (49 / 50) ** 5)) / 2)
    assert guidance_scale(6.0, 999, 0, steps, "constant") == 6.0
    with pytest.raises(ScheduleError, match="choose one of dynamic, monotone, constant"):
        guidance_scale(6.0, 0, 0, steps, "cosine")


def test_training_loss_weight():
    sched = make_scheduler("dpm")
    t = torch.tensor([0, 250, 999])
    ab = alpha_bar(sched, t)
    assert torch.equal(ab, sched.alphas_cumprod[t].float())
    w = training_loss_weight(ab)
    assert torch.allclose(w, 1 / (1 - ab))
    assert w[2] == pytest.approx(1.0)  # zero terminal SNR: pure noise has weight 1
    weights = training_loss_weight(alpha_bar(sched, torch.arange(1000)))
    assert torch.isfinite(weights).all() and (weights[:-1] >= weights[1:]).all()
