"""Dual LoRA invariants: scale 0 is the no-motion model, per-sample scales, merge, block rule, names."""
from __future__ import annotations

import pytest
import torch

from model.config import get_preset
from model.lora import DualLoRALinear, LoRAError, lora_layers, lora_merged, lora_parameters, merge_lora, unmerge_lora
from model.numerics import assert_float32_close
from model.transformer import LayerFlowTransformer

CONFIG = get_preset("tiny").replace(num_prompts=1, num_layers=2, lora_blocks="all", sample_height=4, sample_width=6)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, CONFIG.in_channels, 4, 6, generator=g)
    text = torch.randn(2, CONFIG.text_tokens_per_prompt, CONFIG.text_embed_dim, generator=g)
    return x, text, torch.tensor([700.0, 30.0])


def _live_model(config=CONFIG, lora_seed=1) -> LayerFlowTransformer:
    """Base weights from one fixed seed; random (non-zero) LoRA weights from `lora_seed`."""
    torch.manual_seed(0)
    model = LayerFlowTransformer.from_config(config).eval()
    g = torch.Generator().manual_seed(lora_seed)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def _without(model: LayerFlowTransformer, kind: str) -> LayerFlowTransformer:
    """The same weights in a model built without the `kind` LoRA."""
    other = LayerFlowTransformer.from_config(model.layerflow_config.replace(**{f"{kind}_rank": 0})).eval()
    state = {k: v for k, v in model.state_dict().items() if f".{kind}_lora." not in k}
    other.load_state_dict(state, strict=True)
    return other


@pytest.fixture(scope="module")
def live():
    return _live_model()


def test_fresh_lora_is_a_no_op():
    model = LayerFlowTransformer.from_config(CONFIG).eval()
    x, text, t = _inputs()
    with torch.no_grad():
        on = model(x, text, t, motion_scale=torch.ones(2))
        model.set_lora_enabled(False)
        off = model(x, text, t)
    assert torch.equal(on, off)


def test_motion_scale_zero_equals_model_without_motion_lora(live):
    x, text, t = _inputs()
    no_motion = _without(live, "motion")
    with torch.no_grad():
        ref = no_motion(x, text, t)
        assert_float32_close(live(x, text, t, motion_scale=torch.zeros(2)), ref, ulps=16)
        assert_float32_close(live(x, text, t), ref, ulps=16)  # None means 0
        assert (live(x, text, t, motion_scale=torch.ones(2)) - ref).abs().max() > 1e-3


def test_per_sample_scale_acts_per_sample(live):
    x, text, t = _inputs()
    no_motion = _without(live, "motion")
    with torch.no_grad():
        mixed = live(x, text, t, motion_scale=torch.tensor([0.0, 1.0]))
        ones = live(x, text, t, motion_scale=torch.ones(2))
        ref = no_motion(x, text, t)
    assert_float32_close(mixed[0], ref[0], ulps=16)
    assert_float32_close(mixed[1], ones[1], ulps=16)
    assert (mixed[1] - ref[1]).abs().max() > 1e-3


def test_content_lora_is_always_on(live):
    x, text, t = _inputs()
    with torch.no_grad():
        assert (live(x, text, t) - _without(live, "content")(x, text, t)).abs().max() > 1e-3


def test_merged_equals_unmerged():
    model = _live_model()
    x, text, t = _inputs()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        ref_off = model(x, text, t)
        ref_half = model(x, text, t, motion_scale=torch.full((2,), 0.5))
        assert not lora_merged(model)
        merge_lora(model)
        assert lora_merged(model)
        assert_float32_close(model(x, text, t), ref_off, ulps=64, what="merged at scale 0")
        merge_lora(model, content=False, motion_scale=0.5)
        assert_float32_close(model(x, text, t, motion_scale=0.5), ref_half, ulps=64, what="merged at scale 0.5")
        with pytest.raises(LoRAError, match="merged at scale 0.5"):
            model(x, text, t, motion_scale=torch.tensor([0.5, 1.0]))
        unmerge_lora(model)
        assert not lora_merged(model)
        assert_float32_close(model(x, text, t, motion_scale=torch.full((2,), 0.5)), ref_half, ulps=64,
                             what="unmerged")
    for name, p in model.named_parameters():
        assert_float32_close(p, weights[name], ulps=8, what=name)  # merge then unmerge: w + d - d


def test_block_rule_selects_every_sixth_block_of_the_2b_model():
    config = get_preset("cogvideox-2b")
    assert config.lora_block_indices() == (5, 11, 17, 23, 29)
    with torch.device("meta"):
        model = LayerFlowTransformer.from_config(config)
    blocks = sorted({int(name.split(".")[1]) for name, _ in lora_layers(model)})
    assert blocks == [5, 11, 17, 23, 29]
    wrapped = {name.split(".", 3)[3] for name, _ in lora_layers(model)}
    assert wrapped == {"to_q", "to_k", "to_v", "to_out.0"}
    assert config.replace(lora_blocks="all").lora_block_indices() == tuple(range(30))
    assert config.replace(lora_blocks=[29, 0]).lora_block_indices() == (0, 29)


def test_motion_and_content_parameters_are_separable_by_name(live):
    names = [n for n, _ in live.named_parameters()]
    motion = {n for n, _ in lora_parameters(live, "motion")}
    content = {n for n, _ in lora_parameters(live, "content")}
    assert motion and content and not motion & content
    assert all(".motion_lora." in n for n in motion) and all(".content_lora." in n for n in content)
    assert {n for n in names if "lora" in n} == motion | content
    assert "transformer_blocks.1.attn1.to_q.motion_lora.down.weight" in motion
    assert "transformer_blocks.1.attn1.to_out.0.content_lora.up.weight" in content
    # The base weights keep diffusers' names, so a diffusers state dict still loads.
    assert "transformer_blocks.1.attn1.to_q.weight" in names


def test_dual_lora_linear_formula():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6)
    layer = DualLoRALinear.from_linear(base, motion_rank=2, content_rank=4, lora_alpha=1.0)
    assert layer.weight is base.weight
    with torch.no_grad():
        for p in (layer.motion_lora.up.weight, layer.content_lora.up.weight):
            p.normal_()
    x = torch.randn(3, 5, 8)
    scale = torch.tensor([0.0, 1.0, 2.0])
    layer.motion_scale = scale
    a, b = layer.motion_lora, layer.content_lora
    expected = (base(x) + (x @ a.down.weight.T @ a.up.weight.T) * 0.5 * scale[:, None, None]
                + (x @ b.down.weight.T @ b.up.weight.T) * 0.25)
    assert_float32_close(layer(x), expected, ulps=64)
