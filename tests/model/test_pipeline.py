"""LayerFlowPipeline on the tiny preset: parity with diffusers' CogVideoXPipeline, all four tasks end to end.

Sizes are kept small (4 frames per layer = 1 latent per layer, 32x48, 2-3 steps) so the file runs in seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

from data_engine.schema import LAYERS, Captions, LayeredClip, composite, over_grey
from model.layout import SequenceLayout, Task
from model.lora import lora_parameters
from model.numerics import assert_float32_close
from model.pipeline import LayerFlowPipeline, PipelineInputError, build_tiny_pipeline
from model.schedule import guidance_scale as cfg_scale
from model.schedule import make_scheduler
from model.transformer import _diffusers_kwargs

F, H, W = 4, 32, 48
PROMPTS = ("A brown dog runs.", "A quiet park with trees.", "A brown dog runs in a quiet park.")


@pytest.fixture(scope="module")
def pipe() -> LayerFlowPipeline:
    p = build_tiny_pipeline(seed=0)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def decompose_pipe() -> LayerFlowPipeline:
    p = build_tiny_pipeline(seed=0, num_prompts=2)
    p.set_progress_bar_config(disable=True)
    return p


def _source_clip(seed: int = 3) -> LayeredClip:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    alpha = np.stack([((xx - 10 - 3 * t) ** 2 + (yy - 16) ** 2 < 80) * 255 for t in range(F)]).astype(np.uint8)
    rgb = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (F, H, W, 3), dtype=np.uint8)
    return LayeredClip("src-00000-00", over_grey(rgb, alpha), alpha, bg, composite(rgb, alpha, bg), Captions(*PROMPTS))


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stock_diffusers_transformer(ours) -> CogVideoXTransformer3DModel:
    """diffusers' own CogVideoXTransformer3DModel with our base weights (layer embedder and LoRAs left out)."""
    stock = CogVideoXTransformer3DModel(**_diffusers_kwargs(ours.layerflow_config))
    missing, _ = stock.load_state_dict(ours.state_dict(), strict=False)
    assert not missing
    # The official final LayerNorm eps (1e-6) differs from diffusers' default; parity needs the same value.
    stock.norm_out.norm.eps = ours.norm_out.norm.eps
    return stock.eval()


@pytest.mark.parametrize("sampler,guidance", [("dpm", 1.0), ("dpm", 6.0), ("ddim", 6.0)])
def test_latents_match_diffusers_cogvideox_pipeline(pipe, sampler, guidance):
    """With layer features off, generation is CogVideoX sampling: same latents as diffusers' pipeline, whose
    unconditional branch we feed our all-zero embeddings; and its dynamic CFG scale equals ours at every step."""
    steps = 3
    pipe.transformer.set_layer_features(False)
    dpm_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(sampler)
    try:
        ours = pipe(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=steps,
                    guidance_scale=guidance, generator=_generator(), output_type="latent")
        embeds = pipe.encode_prompt([Captions(*PROMPTS)], Task.GENERATE)
        reference = CogVideoXPipeline(
            tokenizer=pipe.tokenizer,
            text_encoder=pipe.text_encoder,
            vae=pipe.vae,
            transformer=_stock_diffusers_transformer(pipe.transformer),
            scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config),
        )
        reference.set_progress_bar_config(disable=True)
        seen = []

        def record(p, i, t, kwargs):
            seen.append((int(t), p.guidance_scale))
            return {}

        theirs = reference(
            prompt_embeds=embeds,
            negative_prompt_embeds=torch.zeros_like(embeds),
            num_frames=(4 - 1) * 4 + 1,  # diffusers counts frames of 4 latents (one per layer) this way
            height=H,
            width=W,
            num_inference_steps=steps,
            guidance_scale=guidance,
            use_dynamic_cfg=True,
            generator=_generator(),
            output_type="latent",
            callback_on_step_end=record,
        ).frames
    finally:
        pipe.transformer.set_layer_features(True)
        pipe.scheduler = dpm_scheduler
    assert ours.latents.shape == theirs.shape == (1, 4, 16, H // 4, W // 4)
    assert_float32_close(ours.latents, theirs, ulps=64, what="latents vs diffusers' CogVideoX")
    if guidance > 1:
        assert [s for _, s in seen] == [cfg_scale(guidance, t, i, steps) for i, (t, _) in enumerate(seen)]


def test_prompt_encoding_matches_diffusers_t5(pipe):
    """Each indexed prompt encoded as CogVideoX encodes one prompt, concatenated in fg, bg, blend order."""
    reference = CogVideoXPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler)
    ours = pipe.encode_prompt([Captions(*PROMPTS)], "generate")
    tokens = pipe.transformer.layerflow_config.text_tokens_per_prompt
    parts = [reference._get_t5_prompt_embeds(f"{i}, {p}", max_sequence_length=tokens, device="cpu")
             for i, p in enumerate(PROMPTS)]
    # Batched vs one-at-a-time matmuls differ in the last float bits only.
    assert_float32_close(ours, torch.cat(parts, dim=1), ulps=64, what="T5 embeddings")
    assert ours.shape == (1, 3 * tokens, 32)


def test_unconditional_branch_is_zero_embeddings(pipe):
    seen = {}

    def hook(module, args, kwargs):
        seen["text"] = kwargs["encoder_hidden_states"].clone()

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=1, generator=_generator(),
             output_type="latent")
    finally:
        handle.remove()
    uncond, cond = seen["text"].chunk(2)
    assert torch.equal(uncond, torch.zeros_like(cond))
    assert torch.equal(cond, pipe.encode_prompt([Captions(*PROMPTS)], "generate"))


@pytest.mark.parametrize(
    "task,conditions",
    [
        (Task.GENERATE, ()),
        (Task.FG_CONDITIONED, ("fg", "alpha")),
        (Task.BG_CONDITIONED, ("bg",)),
        (Task.DECOMPOSE, ("blend",)),
    ],
)
def test_every_task_end_to_end(pipe, decompose_pipe, task, conditions):
    source = _source_clip()
    runner = decompose_pipe if task is Task.DECOMPOSE else pipe
    out = runner(*PROMPTS, task=task, layers={layer: source.layer(layer) for layer in conditions}, num_frames=F,
                 height=H, width=W, num_inference_steps=2, generator=_generator())
    (clip,) = out.clips
    layout = SequenceLayout.for_task(task, F)
    assert out.latents.shape == (1, layout.num_latents, 16, H // 4, W // 4)
    assert clip.captions == Captions(*PROMPTS) and clip.alpha.shape == (F, H, W)
    for layer in LAYERS:
        given = layer in layout.spec.conditions
        # Conditions come back bit-identical; generated layers are new content.
        assert np.array_equal(clip.layer(layer), source.layer(layer)) == given, layer
    if layout.clean_indices:
        # The clean latents are the joint VAE encoding of the conditions, untouched by sampling.
        packed = layout.pack_conditions(source)
        expected = runner.encode_video(packed[None], _generator())
        clean, _ = layout.split_latents(out.latents)
        torch.testing.assert_close(clean, layout.split_latents(expected)[0], rtol=0, atol=0)


def test_condition_latents_come_from_one_joint_vae_pass(pipe):
    """The bg condition latent depends on the frames before it (causal VAE), so the pipeline must encode the
    whole sequence, as the official code does; encoding the bg sub-clip alone gives a different latent."""
    source = _source_clip()
    layout = SequenceLayout.for_task("bg_conditioned", F)
    out = pipe(*PROMPTS, task="bg_conditioned", layers={"bg": source.bg}, num_frames=F, height=H, width=W,
               num_inference_steps=1, generator=_generator(), output_type="latent")
    clean, _ = layout.split_latents(out.latents)
    alone = torch.from_numpy(source.bg).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
    separately = pipe.encode_video(alone, _generator())
    assert clean.shape == separately.shape
    assert not torch.allclose(clean, separately, atol=1e-3)


def test_same_seed_same_result_and_batch(pipe):
    a = pipe(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=1, generator=_generator(5),
             output_type="latent")
    b = pipe(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=1, generator=_generator(5),
             output_type="latent")
    assert torch.equal(a.latents, b.latents)
    batch = pipe([PROMPTS[0], "a cat"], PROMPTS[1], PROMPTS[2], num_frames=F, height=H, width=W,
                 num_inference_steps=1, generator=_generator(5))
    assert len(batch.clips) == 2 and batch.clips[1].captions.fg == "a cat"


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "tiny")
    loaded = LayerFlowPipeline.from_pretrained(tmp_path / "tiny")
    loaded.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=F, height=H, width=W, num_inference_steps=1, output_type="latent")
    a = pipe(*PROMPTS, generator=_generator(), **kwargs)
    b = loaded(*PROMPTS, generator=_generator(), **kwargs)
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(PipelineInputError, match="missing vae/, text_encoder/, tokenizer/, transformer/"):
        LayerFlowPipeline.from_pretrained(tmp_path / "tiny" / "vae")


def test_bad_inputs_name_the_problem(pipe):
    source = _source_clip()
    common = dict(num_frames=F, height=H, width=W, num_inference_steps=1)
    with pytest.raises(PipelineInputError, match=r'needs layers\["fg"\]'):
        pipe(*PROMPTS, task="fg_conditioned", layers={"alpha": source.alpha}, **common)
    with pytest.raises(PipelineInputError, match=r'is given fg, alpha; drop layers\["bg"\]'):
        pipe(*PROMPTS, task="fg_conditioned", layers={"fg": source, "alpha": source, "bg": source.bg}, **common)
    with pytest.raises(PipelineInputError, match=r"expected \(4, 32, 48, 3\)"):
        pipe(*PROMPTS, task="bg_conditioned", layers={"bg": source.bg[:, :16]}, **common)
    with pytest.raises(PipelineInputError, match="must be uint8"):
        pipe(*PROMPTS, task="bg_conditioned", layers={"bg": source.bg.astype(np.float32)}, **common)
    with pytest.raises(PipelineInputError, match="multiples of 8"):
        pipe(*PROMPTS, num_frames=F, height=30, width=W)


def test_prompt_slots_follow_the_model(pipe, decompose_pipe):
    source = _source_clip()
    common = dict(num_frames=F, height=H, width=W, num_inference_steps=1)
    with pytest.raises(PipelineInputError, match="model reads 2"):
        decompose_pipe(*PROMPTS, task="generate", **common)
    # The unified 3-slot model decomposes too: fg and bg prompts in their slots, the unused blend slot zeros.
    caps = [Captions(*PROMPTS)]
    embeds = pipe.encode_prompt(caps, "decompose")
    full = pipe.encode_prompt(caps, "generate")
    two = 2 * pipe.transformer.layerflow_config.text_tokens_per_prompt
    torch.testing.assert_close(embeds[:, :two], full[:, :two], rtol=0, atol=0)
    assert embeds[:, two:].abs().max() == 0 and full[:, two:].abs().max() > 0
    out = pipe(*PROMPTS, task="decompose", layers={"blend": source.blend}, **common)
    assert np.array_equal(out.clips[0].blend, source.blend)


def test_vae_slicing_and_tiling_switches(pipe):
    latents = torch.randn(2, 4, 16, H // 4, W // 4, generator=_generator())
    whole = pipe.decode_latents(latents)
    pipe.vae.enable_slicing()
    try:
        sliced = pipe.decode_latents(latents)
    finally:
        pipe.vae.disable_slicing()
    # One sample at a time picks other convolution kernels than the batch of two: more roundings, same maths.
    assert_float32_close(sliced, whole, ulps=1024, what="sliced VAE decode")
    pipe.vae.enable_tiling()
    assert pipe.vae.use_tiling
    pipe.vae.disable_tiling()
    assert not pipe.vae.use_tiling


def test_fused_lora_samples_as_the_unfused_model(tmp_path):
    live = build_tiny_pipeline(seed=0)
    live.set_progress_bar_config(disable=True)
    g = _generator(1)
    with torch.no_grad():  # non-zero LoRAs, so that fusing has something to fold
        for _, p in lora_parameters(live.transformer):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))

    def sample() -> torch.Tensor:
        return live(*PROMPTS, num_frames=F, height=H, width=W, num_inference_steps=2, generator=_generator(),
                    output_type="latent").latents

    unfused = sample()
    live.transformer.set_lora_enabled(False)
    without = sample()
    live.transformer.set_lora_enabled(True)
    assert (unfused - without).abs().max() > 1e-2  # the Content LoRA matters in this model
    weights = {n: p.detach().clone() for n, p in live.transformer.named_parameters()}
    live.fuse_lora()
    assert_float32_close(sample(), unfused, ulps=64, what="fused vs unfused latents")
    with pytest.raises(PipelineInputError, match="unfuse_lora"):
        live.save_pretrained(tmp_path / "fused")
    live.unfuse_lora()
    for name, p in live.transformer.named_parameters():
        assert_float32_close(p, weights[name], ulps=8, what=name)
