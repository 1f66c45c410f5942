"""The official LayerFlow sampler as a diffusers scheduler: SAT's `VPSDEDPMPP2MSampler` over
`ZeroSNRDDPMDiscretization(shift_scale=3)` with the `DiscreteDenoiser` (`VideoScaling`, v-prediction).

It shares the model's noise schedule with diffusers' `CogVideoXDPMScheduler` but discretises it as the official
code does, which changes the samples (see ../shared/reference/sat_sampler/README.md):
- timesteps floor(linspace(999, 0, n, endpoint=False)): 999, 666, 333 for n = 3, where trailing spacing gives 332;
- the sampler's sqrt(alpha_bar) is rescaled to zero terminal SNR over the n selected timesteps (their first and
  last value are the ends), not over the 1000-entry table: at 50 steps every value is 1.0010483 times the table's;
- the x0 prediction takes c_skip = a and c_out = -sqrt(1 - a^2) from the table entry a nearest to the sampler's
  sqrt(alpha_bar) (the denoiser's quantisation; entry t - 1 for the last 8 of 50 steps);
- DPM++(2M) SDE steps, and the last step returns that x0.
Every quantity is computed in the official precision and order (the table in float64, the rest in float32), so
that from the same noise the samples agree with the official ones to float32 rounding.

Guidance is left to the pipeline, on the model output: x0 is linear in it with the same c_skip and c_out for both
branches, so guiding v equals the official guiding of x0 up to rounding. The official dynamic scale
1 + w (1 - cos(pi ((N - t) / N)^5)) / 2 reads the raw timestep t of `timesteps` (0..999) where a step counter was
meant (`model.schedule.GuidanceSchedule.DYNAMIC`); with these timesteps it gives the official scales exactly, e.g.
1.0 at t = 333 of 3 steps (the argument of the cosine is then a huge even multiple of pi), where the 332 of
trailing spacing gives 3.75. N is the sampler's step count; the official configs give the guider the same count.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


class OfficialSamplerError(ValueError):
    """The official sampler used out of order or with bad settings; the message says what to do."""


@dataclass
class OfficialSamplerOutput(BaseOutput):
    """`prev_sample`: the latents after the step; `pred_original_sample`: the step's x0 prediction."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def shifted_alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float,
                           snr_shift_scale: float) -> np.ndarray:
    """alpha_bar of the DDPM table (betas linear in sqrt space) with its SNR divided by `snr_shift_scale`, float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64).numpy() ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    return alphas_cumprod / (snr_shift_scale + (1.0 - snr_shift_scale) * alphas_cumprod)


def zero_snr_sqrt(alphas_cumprod: np.ndarray) -> torch.Tensor:
    """sqrt(alpha_bar) in float32, moved and scaled so that the last value is 0 and the first unchanged (in the
    official order of float32 operations)."""
    root = torch.tensor(alphas_cumprod, dtype=torch.float32).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root -= last
    root *= first / (first - last)
    return root


def official_timesteps(num_inference_steps: int, num_train_timesteps: int) -> np.ndarray:
    """floor(linspace(T - 1, 0, n, endpoint=False)), descending."""
    return np.linspace(num_train_timesteps - 1, 0, num_inference_steps, endpoint=False).astype(np.int64)


class OfficialDPMScheduler(SchedulerMixin, ConfigMixin):
    """DPM++(2M) SDE on the official zero-terminal-SNR discretisation, for v-prediction models.

    `step(model_output, timestep, sample)` takes the (guided) v-prediction at `timesteps[i]`, in order. Every
    step but the last adds SDE noise: `noise` (a tensor, or a function returning one, called only then) when
    given, else drawn from `generator` as the official code draws it, from the second step on twice with the
    second draw used; so a generator seeded like the official run's global RNG replays that run.
    """

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 snr_shift_scale: float = 3.0) -> None:
        self.init_noise_sigma = 1.0
        self._alphas_cumprod = shifted_alphas_cumprod(num_train_timesteps, beta_start, beta_end, snr_shift_scale)
        # The denoiser's table: sqrt(alpha_bar) at every training timestep, rescaled over all of them.
        self.denoiser_alphas = zero_snr_sqrt(self._alphas_cumprod)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.int64)
        self.sampler_alphas = torch.empty(0)
        self._step_index = 0
        self._previous_x0: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """The n timesteps and the sampler's sqrt(alpha_bar) at each, with a 1 appended for after the last step."""
        steps = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= steps:
            raise OfficialSamplerError(f"num_inference_steps must be 1..{steps}, got {num_inference_steps}")
        timesteps = official_timesteps(num_inference_steps, steps)
        ascending = zero_snr_sqrt(self._alphas_cumprod[timesteps[::-1]])
        self.sampler_alphas = torch.cat([ascending.flip(0), ascending.new_ones(1)])
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self.num_inference_steps = num_inference_steps
        self._step_index = 0
        self._previous_x0 = None

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample

    def quantized_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        """The denoiser table's entry nearest to `alpha` (the first of equally near ones)."""
        return self.denoiser_alphas[(alpha - self.denoiser_alphas).abs().argmin()]

    def predict_original_sample(self, model_output: torch.Tensor, sample: torch.Tensor,
                                alpha: torch.Tensor) -> torch.Tensor:
        """x0 = v c_out + x c_skip with c_skip = a, c_out = -sqrt(1 - a^2), a the quantized sqrt(alpha_bar)."""
        a = self.quantized_alpha(alpha).to(sample.device)
        return model_output * -((1 - a**2) ** 0.5) + sample * a

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | Callable[[], torch.Tensor] | None = None,
        return_dict: bool = True,
    ) -> OfficialSamplerOutput | tuple[torch.Tensor, torch.Tensor]:
        i = self._step_index
        if self.num_inference_steps is None or i >= self.num_inference_steps:
            raise OfficialSamplerError("step() past the last timestep; call set_timesteps() before sampling again")
        if int(timestep) != int(self.timesteps[i]):
            raise OfficialSamplerError(f"step() got timestep {int(timestep)}, expected {int(self.timesteps[i])} "
                                       f"(step {i}); the steps must follow scheduler.timesteps")
        alpha, alpha_next = self.sampler_alphas[i], self.sampler_alphas[i + 1]
        x0 = self.predict_original_sample(model_output, sample, alpha)
        if i == self.num_inference_steps - 1:
            prev = x0
        else:
            prev = self._dpmpp_2m_sde(sample, x0, i, alpha, alpha_next, generator, noise)
        self._previous_x0 = x0
        self._step_index += 1
        return OfficialSamplerOutput(prev, x0) if return_dict else (prev, x0)

    def _dpmpp_2m_sde(self, x: torch.Tensor, x0: torch.Tensor, i: int, alpha: torch.Tensor, alpha_next: torch.Tensor,
                      generator, noise: torch.Tensor | Callable[[], torch.Tensor] | None) -> torch.Tensor:
        lamb, lamb_next = _log_snr_half(alpha), _log_snr_half(alpha_next)
        h = lamb_next - lamb
        device = x.device
        mult_x = (((1 - alpha_next**2) / (1 - alpha**2)) ** 0.5 * (-h).exp()).to(device)
        mult_x0 = ((-2 * h).expm1() * alpha_next).to(device)
        mult_noise = ((1 - alpha_next**2) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5).to(device)
        if callable(noise):
            noise = noise()
        if noise is None:
            for _ in range(1 if i == 0 else 2):  # the official step discards its first draw after the first step
                noise = randn_tensor(x.shape, generator=generator, device=device, dtype=x.dtype)
        elif noise.shape != x.shape:
            raise OfficialSamplerError(f"noise of step {i} must have the latents' shape {tuple(x.shape)}, "
                                       f"got {tuple(noise.shape)}")
        noise = noise.to(device=device, dtype=x.dtype)
        if i == 0:
            return mult_x * x - mult_x0 * x0 + mult_noise * noise
        r = (lamb - _log_snr_half(self.sampler_alphas[i - 1])) / h
        x0_2m = (1 + 1 / (2 * r)).to(device) * x0 - (1 / (2 * r)).to(device) * self._previous_x0
        return mult_x * x - mult_x0 * x0_2m + mult_noise * noise


def _log_snr_half(alpha: torch.Tensor) -> torch.Tensor:
    """log sqrt(SNR) = log(a / sqrt(1 - a^2)) for a = sqrt(alpha_bar), as the official sampler computes it."""
    alpha_bar = alpha**2
    return ((alpha_bar / (1 - alpha_bar)) ** 0.5).log()
