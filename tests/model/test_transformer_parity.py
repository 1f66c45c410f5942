"""LayerFlowTransformer against diffusers' stock CogVideoX transformer, and its own invariants."""
from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from model.config import ConfigError, get_preset
from model.lora import lora_parameters
from model.numerics import assert_float32_close
from model.transformer import LayerFlowTransformer, TransformerInputError, _diffusers_kwargs

TINY = get_preset("tiny")
ONE_PROMPT = TINY.replace(num_prompts=1)  # one prompt's tokens: cheaper wherever the prompt count does not matter
N = TINY.text_tokens_per_prompt
FRAMES, H, W = 4, 4, 6  # a short clip keeps each forward in milliseconds


def _inputs(batch=2, prompts=3, frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, TINY.in_channels, H, W, generator=g)
    text = torch.randn(batch, prompts * N, TINY.text_embed_dim, generator=g)
    t = torch.tensor([999.0, 421.0][:batch])
    return x, text, t


def _stock(seed=0) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    kwargs = _diffusers_kwargs(TINY.replace(num_prompts=1, sample_height=H, sample_width=W, sample_frames=FRAMES))
    return CogVideoXTransformer3DModel(**kwargs).eval()


def _randomise(model, pattern: str, seed: int = 1) -> None:
    """Random values for the parameters whose name contains `pattern` (LayerNorm scales around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if pattern in name:
                centre = 1.0 if name == "layer_embedder.1.weight" else 0.0
                p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def stock_and_ours():
    stock = _stock()
    ours = LayerFlowTransformer.from_diffusers(stock, num_prompts=1, sample_frames=FRAMES, lora_blocks="all",
                                               final_norm_eps=stock.config.norm_eps).eval()
    return stock, ours


def test_equals_diffusers_with_layer_features_neutral(stock_and_ours):
    stock, ours = stock_and_ours
    x, text, t = _inputs(prompts=1)
    with torch.no_grad():
        ref = stock(x, text, t, return_dict=False)[0]
        out = ours(x, text, t, motion_scale=torch.ones(2))
    # from_diffusers: zero layer-embedding (LayerNorm affine 0) and zero LoRA up-matrices.
    assert ours.layer_embeddings().abs().max() == 0
    assert_float32_close(out, ref, ulps=16, what="ours with zero layer features vs stock")


def test_layer_features_change_output_and_switch_off_to_stock(stock_and_ours):
    stock, ours = stock_and_ours
    x, text, t = _inputs(prompts=1)
    model = LayerFlowTransformer.from_config(ours.layerflow_config).eval()
    model.load_state_dict(ours.state_dict())
    _randomise(model, "lora.up")
    _randomise(model, "layer_embedder", seed=2)
    with torch.no_grad():
        ref = stock(x, text, t, return_dict=False)[0]
        live = model(x, text, t, motion_scale=torch.ones(2))
        model.set_layer_embedding(False)
        no_embed = model(x, text, t, motion_scale=torch.ones(2))
        model.set_layer_features(False)
        off = model(x, text, t, motion_scale=torch.ones(2))
    assert (live - ref).abs().max() > 1e-2
    assert (no_embed - live).abs().max() > 1e-3
    assert_float32_close(off, ref, ulps=16, what="layer features off vs stock")


def test_layer_embedding_is_per_prompt_on_text_only():
    model = LayerFlowTransformer.from_config(TINY).eval()
    _randomise(model, "layer_embedder", seed=3)
    emb = model.layer_embeddings()
    assert emb.shape == (3 * N, TINY.hidden_size)
    for i in range(3):
        block = emb[i * N:(i + 1) * N]
        assert torch.equal(block, block[:1].expand_as(block))
    assert (emb[0] - emb[N]).abs().max() > 1e-3 and (emb[N] - emb[2 * N]).abs().max() > 1e-3
    # Video tokens get nothing: with the embedder on/off only the text part of the input sequence differs,
    # so swapping the prompts' order must change the output (layer awareness is not symmetric in prompts).
    x, text, t = _inputs()
    swapped = torch.cat([text[:, N:2 * N], text[:, :N], text[:, 2 * N:]], dim=1)
    with torch.no_grad():
        a, b = model(x, text, t), model(x, swapped, t)
        model.set_layer_embedding(False)
        c, d = model(x, text, t), model(x, swapped, t)
    assert (a - b).abs().max() > 1e-4
    # Without the embedder the text tokens are a set: swapping whole prompts leaves the output unchanged.
    assert_float32_close(c, d, ulps=64, what="prompts swapped without the embedder")


def test_condition_latents_join_and_are_sliced_off():
    model = LayerFlowTransformer.from_config(ONE_PROMPT).eval()
    _randomise(model, "lora.up")
    x, text, t = _inputs(prompts=1, frames=7)
    with torch.no_grad():
        full = model(x, text, t)
        front = model(x[:, 3:], text, t, cond_latents=x[:, :3])
        middle = model(torch.cat([x[:, :2], x[:, 5:]], 1), text, t, cond_latents=x[:, 2:5], cond_indices=[2, 3, 4])
    assert front.shape == (2, 4, TINY.in_channels, H, W)
    assert torch.equal(front, full[:, 3:])
    assert torch.equal(middle, torch.cat([full[:, :2], full[:, 5:]], 1))


def test_timestep_dtypes_and_scalar_broadcast():
    model = LayerFlowTransformer.from_config(ONE_PROMPT).eval()
    x, text, _ = _inputs(prompts=1)
    with torch.no_grad():
        a = model(x, text, torch.tensor([500, 500]))
        b = model(x, text, torch.tensor([500.0, 500.0]))
        c = model(x, text, 500)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_gradient_checkpointing_recomputes_with_the_same_motion_scale():
    torch.manual_seed(0)
    model = LayerFlowTransformer.from_config(ONE_PROMPT.replace(num_layers=2, lora_blocks="all")).train()
    _randomise(model, "lora.up")
    x, text, t = _inputs(prompts=1, frames=2)
    scale = torch.tensor([1.0, 0.0])

    def grads():
        model.zero_grad()
        model(x, text, t, motion_scale=scale).square().mean().backward()
        return {n: p.grad.clone() for n, p in lora_parameters(model, "motion")}

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    model.disable_gradient_checkpointing()
    assert all(g.abs().max() > 0 for g in plain.values())
    for name in plain:
        assert_float32_close(checkpointed[name], plain[name], ulps=64, what=name)


def test_save_pretrained_round_trip(tmp_path):
    config = ONE_PROMPT.replace(learned_pos_embedding=True, lora_blocks=(1, 5), sample_height=H, sample_width=W)
    model = LayerFlowTransformer.from_config(config).eval()
    _randomise(model, "lora.up")
    _randomise(model, "pos_embedding", seed=4)
    model.save_pretrained(str(tmp_path))
    loaded = LayerFlowTransformer.from_pretrained(str(tmp_path)).eval()
    assert loaded.layerflow_config == model.layerflow_config
    x, text, t = _inputs(prompts=1)
    with torch.no_grad():
        assert torch.equal(loaded(x, text, t, motion_scale=1.0), model(x, text, t, motion_scale=1.0))


def test_bad_inputs_give_one_clear_line():
    model = LayerFlowTransformer.from_config(TINY).eval()
    x, text, t = _inputs()
    cases = [
        (lambda: model(x, text[:, :2 * N], t), f"3 prompts x {N}"),
        (lambda: model(x[:, :, :8], text, t), "hidden_states must be"),
        (lambda: model(x, text, t[:1].expand(3)), "timestep must be"),
        (lambda: model(x[:, 2:], text, t, cond_latents=x[:, :2], cond_indices=[0, 0]), "cond_indices"),
        (lambda: model(x, text, t, motion_scale=torch.ones(3)), "motion_scale must be"),
    ]
    for call, words in cases:
        with pytest.raises(TransformerInputError) as err:
            call()
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="valid presets: cogvideox-2b, tiny"):
        get_preset("huge")
