"""The official sampler: its discretisation against the official README's definition, the pipeline's
reproducibility hooks, and the sampling loop against the official one (../shared/reference/sat_sampler) for every
task: the fixture's runs step by step, and the layouts it has no run for against the README's loop written here."""
from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler
from safetensors.torch import load_file, save_file

from model.convert import PARITY_ULPS, build_model, infer_config, load_official_state_dict, main, sampler_run
from model.numerics import assert_float32_close, float32_tolerance
from model.official_sampler import OfficialDPMScheduler, OfficialSamplerError
from model.pipeline import LayerFlowPipeline, PipelineInputError, build_tiny_pipeline
from model.sampler_fixture import latent_pipeline, replay
from model.schedule import guidance_scale, make_scheduler

LINE = re.compile(r"^\s+(\S+)\s+max\|diff\| = (\S+) <= (\S+)\s+(ok|FAIL)$", re.M)


# ---- the README's sampling loop, written apart from model/official_sampler.py -----------------------------------
def _zero_terminal(values: np.ndarray, keep: float, zero: float) -> np.ndarray:
    """Moved and scaled so that `zero` becomes 0 and `keep` stays."""
    return (values - zero) * keep / (keep - zero)


def _log_snr_half(a: float) -> float:
    """log(a / sqrt(1 - a^2)); a = 0 is pure noise."""
    return -math.inf if a == 0 else math.log(a / math.sqrt(1 - a * a))


class ReadmeLoop:
    """../shared/reference/sat_sampler/README.md's "What the official sampling does", in float64 coefficients; the
    clean latents are put into the sequence by hand at `cond_at` and the network's outputs for them dropped."""

    def __init__(self, model, context: torch.Tensor, num_steps: int, cond: torch.Tensor | None = None,
                 cond_at: int = 0) -> None:
        betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
        alpha_bar = np.cumprod(1 - betas)
        root = np.sqrt(alpha_bar / (3 + (1 - 3) * alpha_bar))  # SNR divided by shift_scale 3
        self.timesteps = np.floor(np.linspace(999, 0, num_steps, endpoint=False)).astype(int)
        chosen = root[self.timesteps]  # descending t: the last is the smallest t
        self.alphas = [float(a) for a in _zero_terminal(chosen, chosen[-1], chosen[0])] + [1.0]
        self.table = _zero_terminal(root, root[0], root[-1])
        self.model, self.context, self.cond, self.cond_at = model, context, cond, cond_at

    def guidance(self, i: int) -> float:
        n, t = len(self.timesteps), int(self.timesteps[i])
        return 1 + 6 * (1 - math.cos(math.pi * ((n - t) / n) ** 5)) / 2

    def full(self, x: torch.Tensor) -> torch.Tensor:
        if self.cond is None:
            return x
        return torch.cat([x[:, : self.cond_at], self.cond, x[:, self.cond_at:]], dim=1)

    def x0(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The guided x0 of step i: CFG on the denoised values, c_skip and c_out from the snapped table entry."""
        a = float(self.table[np.abs(self.table - self.alphas[i]).argmin()])
        joined = self.full(x)
        text = torch.cat([torch.zeros_like(self.context), self.context])
        with torch.no_grad():
            out = self.model(torch.cat([joined, joined]), text, torch.full((2 * x.shape[0],), float(self.timesteps[i])))
        if self.cond is not None:
            out = torch.cat([out[:, : self.cond_at], out[:, self.cond_at + self.cond.shape[1]:]], dim=1)
        x0_u, x0_c = (a * x - math.sqrt(1 - a * a) * v for v in out.chunk(2))
        return x0_u + self.guidance(i) * (x0_c - x0_u)

    def step(self, x: torch.Tensor, x0: torch.Tensor, i: int, x0_prev: torch.Tensor | None,
             noise: torch.Tensor | None) -> torch.Tensor:
        """DPM++(2M) SDE from alphas[i] to alphas[i + 1]; the last step returns x0."""
        if i == len(self.timesteps) - 1:
            return x0
        a, a_next = self.alphas[i], self.alphas[i + 1]
        lam, lam_next = _log_snr_half(a), _log_snr_half(a_next)
        h = lam_next - lam
        d = x0
        if i > 0:
            r = (lam - _log_snr_half(self.alphas[i - 1])) / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        sigma, sigma_next = math.sqrt(1 - a * a), math.sqrt(1 - a_next * a_next)
        return (sigma_next / sigma * math.exp(-h)) * x + (a_next * -math.expm1(-2 * h)) * d \
            + (sigma_next * math.sqrt(-math.expm1(-2 * h))) * noise

    def run(self, x: torch.Tensor, noises) -> tuple[list[torch.Tensor], torch.Tensor]:
        steps, x0_prev = [], None
        for i in range(len(self.timesteps)):
            x0 = self.x0(x, i)
            x = self.step(x, x0, i, x0_prev, noises(i) if i < len(self.timesteps) - 1 else None)
            x0_prev = x0
            steps.append(x)
        return steps, self.full(x)


# ---- the discretisation, from the README's definition (no fixture needed) ---------------------------------------
@pytest.mark.parametrize("steps", [50, 3, 7])
def test_timesteps_and_alphas_are_the_readmes(steps):
    sched = OfficialDPMScheduler()
    sched.set_timesteps(steps)
    readme = ReadmeLoop(None, torch.zeros(0), steps)
    assert sched.timesteps.tolist() == readme.timesteps.tolist()
    assert_float32_close(sched.sampler_alphas, torch.tensor(readme.alphas), ulps=4, what="sampler sqrt(alpha_bar)")
    assert_float32_close(sched.denoiser_alphas, torch.from_numpy(readme.table), ulps=4, what="denoiser table")
    assert sched.sampler_alphas[0] == 0 and sched.sampler_alphas[-1] == 1


def test_known_answers_of_the_official_discretisation():
    sched = OfficialDPMScheduler()
    sched.set_timesteps(3)
    assert sched.timesteps.tolist() == [999, 666, 333]  # trailing spacing gives 332
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(999, 0, -20))
    t = sched.timesteps[1:]
    # Rescaled over the 50 chosen timesteps: 1.0010483 times the 1000-entry table's values at every step.
    ratio = sched.sampler_alphas[1:-1].double() / sched.denoiser_alphas[t].double()
    assert (ratio - 1.0010483).abs().max() < 2e-7
    # The denoiser's snap lands on entry t - 1 for t = 159, 139, ..., 19 and on t before.
    snapped = [int((sched.denoiser_alphas == sched.quantized_alpha(a)).nonzero()) for a in sched.sampler_alphas[:-1]]
    assert snapped == [t - 1 if t <= 159 else t for t in sched.timesteps.tolist()]


def test_the_official_guidance_at_few_steps():
    """The official dynamic scale reads the raw timestep: at 3 steps the last is 333, where the scale is 1."""
    sched = make_scheduler("official")
    sched.set_timesteps(3)
    scales = [guidance_scale(6.0, int(t), i, 3) for i, t in enumerate(sched.timesteps)]
    assert scales[2] == pytest.approx(1.0, abs=1e-9)
    assert guidance_scale(6.0, 332, 2, 3) == pytest.approx(3.75, abs=0.01)  # diffusers' trailing timestep


def test_a_step_is_the_readmes_dpmpp_2m_sde():
    """Every kind of step (from pure noise, first order, second order, the last one's x0) on random values."""
    g = torch.Generator().manual_seed(0)
    x, v, noise = (torch.randn(2, 3, 4, generator=g) for _ in range(3))
    sched = OfficialDPMScheduler()
    sched.set_timesteps(5)
    readme = ReadmeLoop(None, torch.zeros(0), 5)
    x0_prev = None
    for i, t in enumerate(sched.timesteps):
        ours, x0 = sched.step(v, t, x, noise=noise, return_dict=False)
        a = float(readme.table[np.abs(readme.table - readme.alphas[i]).argmin()])
        x0_readme = a * x - math.sqrt(1 - a * a) * v
        assert_float32_close(x0, x0_readme, ulps=4, what=f"x0 of step {i}")
        assert_float32_close(ours, readme.step(x, x0_readme, i, x0_prev, noise), ulps=8, what=f"step {i}")
        x, x0_prev = ours, x0_readme
    assert torch.equal(ours, x0)


def test_steps_out_of_order_and_bad_noise_give_one_clear_line():
    sched = OfficialDPMScheduler()
    x = torch.zeros(1, 2)
    with pytest.raises(OfficialSamplerError, match="call set_timesteps") as err:
        sched.step(x, 999, x)
    sched.set_timesteps(3)
    with pytest.raises(OfficialSamplerError, match="expected 999") as err:
        sched.step(x, 666, x)
    with pytest.raises(OfficialSamplerError, match=r"latents' shape \(1, 2\)") as err:
        sched.step(x, 999, x, noise=torch.zeros(2))
    assert "\n" not in str(err.value)
    with pytest.raises(OfficialSamplerError, match="1..1000"):
        sched.set_timesteps(0)


# ---- the pipeline: selecting the sampler, reproducibility hooks --------------------------------------------------
F, H, W = 4, 32, 48
PROMPTS = ("a red disc", "a beach", "a red disc on a beach")


@pytest.fixture(scope="module")
def pipe() -> LayerFlowPipeline:
    p = build_tiny_pipeline(seed=0, sampler="official")
    p.set_progress_bar_config(disable=True)
    return p


def test_scheduler_folder_selects_the_sampler(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    assert isinstance(LayerFlowPipeline.from_pretrained(tmp_path / "model").scheduler, OfficialDPMScheduler)
    for name, cls in (("dpm", CogVideoXDPMScheduler), ("ddim", CogVideoXDDIMScheduler)):
        assert isinstance(LayerFlowPipeline.from_pretrained(tmp_path / "model", sampler=name).scheduler, cls)
    config = tmp_path / "model" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "EulerDiscreteScheduler"}))
    with pytest.raises(PipelineInputError, match="unsupported scheduler 'EulerDiscreteScheduler'") as err:
        LayerFlowPipeline.from_pretrained(tmp_path / "model")
    assert "\n" not in str(err.value)


def test_a_generator_draws_as_the_official_code(pipe):
    """`generator=` gives the same run as its draws passed by hand: the initial latents, then per step one draw
    (the first) or two, the second used, as the official sampler draws from its global RNG."""
    steps = 3
    kwargs = dict(num_frames=F, height=H, width=W, num_inference_steps=steps, output_type="latent")
    drawn = pipe(*PROMPTS, generator=torch.Generator().manual_seed(5), **kwargs).latents
    g = torch.Generator().manual_seed(5)
    shape = (1, 4, 16, H // 4, W // 4)
    latents = torch.randn(shape, generator=g)
    noises = [torch.randn(shape, generator=g) for _ in range(1 + 2 * (steps - 2))][0::2]
    seen = []

    def record(_p, i, t, kwargs):
        seen.append((i, int(t), tuple(kwargs["latents"].shape)))
        return {}

    given = pipe(*PROMPTS, latents=latents, step_noise=lambda i: noises[i], callback_on_step_end=record,
                 **kwargs).latents
    assert torch.equal(given, drawn)
    assert seen == [(i, t, shape) for i, t in enumerate([999, 666, 333])]


def test_callback_latents_replace_the_step_result(pipe):
    kwargs = dict(num_frames=F, height=H, width=W, num_inference_steps=2, output_type="latent")
    out = pipe(*PROMPTS, generator=torch.Generator().manual_seed(1),
               callback_on_step_end=lambda p, i, t, k: {"latents": torch.zeros_like(k["latents"])}, **kwargs)
    assert not out.latents.any()


def test_condition_latents_stand_in_for_the_conditions(pipe):
    g = torch.Generator().manual_seed(2)
    clean = torch.randn(1, 3, 16, H // 4, W // 4, generator=g)  # duplicated frame 0, fg and alpha: 3 of 5 latents
    out = pipe(*PROMPTS, task="fg_conditioned", condition_latents=clean, num_frames=F, height=H, width=W,
               num_inference_steps=2, generator=g)
    assert torch.equal(out.latents[:, :3], clean)
    assert out.clips[0].fg.shape == (F, H, W, 3)  # decoded, as no pixels were given


@pytest.mark.parametrize("call, words", [
    (lambda p: p(*PROMPTS, latents=torch.zeros(1, 3, 16, 8, 12)), "`latents` must have shape [1, 4, 16, 8, 12]"),
    (lambda p: p(*PROMPTS, condition_latents=torch.zeros(1, 4, 16, 8, 12)), "task generate has no conditions"),
    (lambda p: p(*PROMPTS, task="bg_conditioned", condition_latents=torch.zeros(1, 3, 16, 8, 12)),
     "`condition_latents` must have shape [1, 1, 16, 8, 12]"),
    (lambda p: p(*PROMPTS, task="bg_conditioned"), 'needs layers["bg"]'),
])
def test_bad_hook_inputs_give_one_clear_line(pipe, call, words):
    with pytest.raises(PipelineInputError) as err:
        call(lambda *a, **k: pipe(*a, num_frames=F, height=H, width=W, num_inference_steps=1, **k))
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("sampler, how", [("dpm", "draws its own"), ("ddim", "adds none")])
def test_step_noise_needs_the_official_sampler(sampler, how):
    p = build_tiny_pipeline(seed=0, sampler=sampler)
    with pytest.raises(PipelineInputError, match=f"step_noise needs the official sampler; .* {how}"):
        p(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=1, step_noise=lambda i: None)


# ---- the official sampling loop (../shared/reference/sat_sampler) ------------------------------------------------
@pytest.fixture(scope="module")
def fixture_runs(sat_sampler):
    """Each run's tensors and pipeline, loaded once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = sampler_run(sat_sampler, name)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def fixture_replays(fixture_runs):
    """Each run sampled once by our pipeline from the fixture's noise (the 50-step runs take seconds each)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = fixture_runs(name), replay(fixture_runs(name))
        return cache[name]
    return get


@pytest.mark.parametrize("name", ["gen", "fg2bg", "gen_steps3"])
def test_the_schedule_is_the_fixtures(sat_sampler, name):
    tensors = load_file(str(sat_sampler / f"{name}_sampling.safetensors"))
    sched = OfficialDPMScheduler()
    sched.set_timesteps(len(tensors["schedule.timestep"]))
    assert torch.equal(sched.timesteps, tensors["schedule.timestep"])
    assert_float32_close(sched.sampler_alphas[:-1], tensors["schedule.alpha"], ulps=1, what="alpha")
    assert_float32_close(sched.sampler_alphas[1:], tensors["schedule.alpha_next"], ulps=1, what="alpha_next")
    quantized = torch.stack([sched.quantized_alpha(a) for a in sched.sampler_alphas[:-1]])
    assert_float32_close(quantized, tensors["schedule.alpha_quantized"], ulps=1, what="alpha_quantized")
    scales = [guidance_scale(6.0, int(t), i, len(sched.timesteps)) for i, t in enumerate(sched.timesteps)]
    assert_float32_close(torch.tensor(scales, dtype=torch.float64), tensors["schedule.guidance_scale"], ulps=1,
                         what="guidance scale")


@pytest.mark.parametrize("name", ["gen", "fg2bg", "gen_steps3"])
def test_sampling_matches_the_official_loop_at_every_step(fixture_replays, name):
    run, result = fixture_replays(name)
    assert len(result.steps) == run.num_steps
    for i, latents in enumerate(result.steps):
        assert_float32_close(latents, run.tensors[f"step{i:02d}.x_out"], ulps=PARITY_ULPS, what=f"{name} step {i}")
    assert_float32_close(result.full, run.tensors["final.full"], ulps=PARITY_ULPS, what=f"{name} final full")


def test_a_generator_seeded_as_the_official_run_replays_it(fixture_replays):
    run, recorded = fixture_replays("gen_steps3")
    seeded = replay(run, "seed")
    assert_float32_close(seeded.full, run.tensors["final.full"], ulps=PARITY_ULPS, what="seeded final full")
    assert torch.equal(seeded.full, recorded.full)  # the same draws as the recorded noise


def test_diffusers_dpm_scheduler_misses_the_official_loop(fixture_replays):
    """The tolerance tells the official sampler from diffusers' (the issue's 0.74 at 3 steps)."""
    run, _ = fixture_replays("gen_steps3")
    official = run.pipeline.scheduler
    run.pipeline.scheduler = make_scheduler("dpm")  # it draws from the generator as the official code does
    try:
        theirs = replay(run, "seed").full
    finally:
        run.pipeline.scheduler = official
    reference = run.tensors["final.full"]
    assert (theirs - reference).abs().max() > 100 * float32_tolerance(reference, PARITY_ULPS)


def test_the_readme_loop_is_the_official_one(fixture_runs):
    """The loop written above from the README reproduces the fixture: gen_steps3 whole, fg2bg step by step from
    the fixture's own latents (from noise, first order, second order, the last step)."""
    run = fixture_runs("gen_steps3")
    t = run.tensors
    context = t["context"].reshape(run.batch, -1, t["context"].shape[-1])
    readme = ReadmeLoop(run.pipeline.transformer, context, run.num_steps)
    steps, full = readme.run(t["initial_noise"], lambda i: t[f"step{i:02d}.noise"])
    for i, x in enumerate(steps):
        assert_float32_close(x, t[f"step{i:02d}.x_out"], ulps=PARITY_ULPS, what=f"README loop, step {i}")
    run = fixture_runs("fg2bg")
    t = run.tensors
    context = t["context"].reshape(run.batch, -1, t["context"].shape[-1])
    readme = ReadmeLoop(run.pipeline.transformer, context, run.num_steps, t["cond_latents"], cond_at=0)
    for i in (0, 1, 2, run.num_steps - 1):
        x = t["initial_noise"] if i == 0 else t[f"step{i - 1:02d}.x_out"]
        x0 = readme.x0(x, i)
        assert_float32_close(x0, t[f"step{i:02d}.denoised"], ulps=PARITY_ULPS, what=f"fg2bg x0, step {i}")
        previous = t[f"step{i - 1:02d}.denoised"] if i else None
        noise = t.get(f"step{i:02d}.noise")
        assert_float32_close(readme.step(x, t[f"step{i:02d}.denoised"], i, previous, noise), t[f"step{i:02d}.x_out"],
                             ulps=PARITY_ULPS, what=f"fg2bg step {i}")


def _decomposition_model(sat_sampler):
    """The gen network as the decomposition release is built: two prompts, no layer embedder, a trained position
    table (random here), converted from official names."""
    meta = json.loads((sat_sampler / "fixture.json").read_text())
    sd = load_official_state_dict(sat_sampler / "gen_state_dict.safetensors")
    sd = {k: v for k, v in sd.items() if "txt_embedder" not in k}
    table = sd["mixins.pos_embed.pos_embedding"]
    g = torch.Generator().manual_seed(4)
    sd["mixins.pos_embed.pos_embedding"] = torch.randn(1, 2 * 226 + 16 * 6, table.shape[2], generator=g)
    config, variant = infer_config(sd, None, "seg", latent_size=(4, 6), layernorm_eps=meta["layernorm_eps"])
    assert variant.name == "multi-layer-decomposition-rgba"
    return build_model(sd, config)


# Where the README's official models keep their clean latents: the bg of [dup, fg x4, alpha x4, bg x4, blend x4]
# (latents 9..12 of 17), the blend of [fg, alpha, bg, blend] (the last 4 of 16).
LAYOUTS = {"bg_conditioned": ("fg2bg", 13, 4, 9, 3), "decompose": ("gen", 12, 4, 12, 2)}


@pytest.mark.parametrize("task", list(LAYOUTS))
def test_layouts_without_a_fixture_run_follow_the_readme_loop(sat_sampler, fixture_runs, task):
    weights, noisy, clean, cond_at, prompts = LAYOUTS[task]
    run = fixture_runs(weights)
    model = _decomposition_model(sat_sampler) if task == "decompose" else run.pipeline.transformer
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    pipeline = latent_pipeline(model)
    context = run.tensors["context"].reshape(run.batch, 3, -1, 32)[:1, :prompts].reshape(1, -1, 32)
    g = torch.Generator().manual_seed(9)
    latents = torch.randn(1, noisy, 16, 4, 6, generator=g)
    cond = torch.randn(1, clean, 16, 4, 6, generator=g)
    noises = [torch.randn(1, noisy, 16, 4, 6, generator=g) for _ in range(3)]
    steps: list[torch.Tensor] = []
    out = pipeline(task=task, prompt_embeds=context, latents=latents, condition_latents=cond,
                   step_noise=lambda i: noises[i], num_frames=16, height=4 * pipeline.vae_scale_factor_spatial,
                   width=6 * pipeline.vae_scale_factor_spatial, num_inference_steps=4, output_type="latent",
                   callback_on_step_end=lambda p, i, t, k: steps.append(k["latents"]) or {})
    readme_steps, readme_full = ReadmeLoop(model, context, 4, cond, cond_at).run(latents, lambda i: noises[i])
    for i, (ours, theirs) in enumerate(zip(steps, readme_steps, strict=True)):
        assert_float32_close(ours, theirs, ulps=PARITY_ULPS, what=f"{task} step {i}")
    assert_float32_close(out.latents, readme_full, ulps=PARITY_ULPS, what=f"{task} full")
    assert torch.equal(out.latents[:, cond_at:cond_at + clean], cond)


# ---- layerflow convert verify-sampler -----------------------------------------------------------------------------
def _one_run_fixture(sat_sampler, folder, perturb_step: int | None = None):
    meta = json.loads((sat_sampler / "fixture.json").read_text())
    meta["runs"] = {"gen_steps3": meta["runs"]["gen_steps3"]}
    folder.mkdir()
    (folder / "fixture.json").write_text(json.dumps(meta))
    shutil.copy(sat_sampler / "gen_state_dict.safetensors", folder)
    tensors = load_file(str(sat_sampler / "gen_steps3_sampling.safetensors"))
    if perturb_step is not None:
        tensors[f"step{perturb_step:02d}.x_out"] = tensors[f"step{perturb_step:02d}.x_out"] + 1e-3
    save_file(tensors, str(folder / "gen_steps3_sampling.safetensors"))
    return folder


def test_verify_sampler_prints_every_step(sat_sampler, tmp_path, capsys):
    assert main(["verify-sampler", str(_one_run_fixture(sat_sampler, tmp_path / "ok"))]) == 0
    lines = LINE.findall(capsys.readouterr().out)
    assert [label for label, *_ in lines] == [f"gen_steps3.step0{i}" for i in range(3)] + ["gen_steps3.final.full"]
    assert all(verdict == "ok" and float(diff) <= float(tol) for _, diff, tol, verdict in lines)


def test_verify_sampler_fails_on_a_wrong_step(sat_sampler, tmp_path, capsys):
    assert main(["verify-sampler", str(_one_run_fixture(sat_sampler, tmp_path / "bad", perturb_step=1))]) == 1
    verdicts = {label: verdict for label, _, _, verdict in LINE.findall(capsys.readouterr().out)}
    assert verdicts["gen_steps3.step01"] == "FAIL" and verdicts["gen_steps3.step00"] == "ok"


def test_verify_sampler_on_a_folder_without_a_fixture(tmp_path, capsys):
    assert main(["verify-sampler", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} has no fixture.json")
