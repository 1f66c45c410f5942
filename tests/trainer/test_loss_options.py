"""The loss and schedule options of the recipe: per-layer loss weights and the cosine learning-rate decay."""
from __future__ import annotations

import math

import pytest
import torch

from model.numerics import assert_float32_close
from trainer.config import LossConfig, TrainConfigError
from trainer.module import WarmupLR, layer_kind, layer_losses


def _cached_batch(module, task: str) -> dict:
    g = torch.Generator().manual_seed(3)
    tokens, width = module.text_tokens, module.transformer.layerflow_config.text_embed_dim
    batch = {"task": task, "frames_per_layer": 4, "motion_scale": torch.zeros(2),
             "latents": torch.randn(2, 4, 16, 8, 12, generator=g),
             "prompt_embeds": torch.randn(2, 3 * tokens, width, generator=g),
             "prompt_keep": torch.ones(2, 3, dtype=torch.bool)}
    if task == "decompose":
        batch["cond_latents"] = torch.randn(2, 1, 16, 8, 12, generator=g)
    return batch


def test_a_layer_weight_scales_that_layer_alone(tiny_module):
    plain = tiny_module(1)
    weighted = tiny_module(1, loss=LossConfig(layer_weights={"alpha": 3.0, "bg": 0.5}))
    weighted.transformer.load_state_dict(plain.transformer.state_dict())
    batch = _cached_batch(plain, "decompose")
    layout = plain.batch_layout(batch)
    before = layer_losses(plain.weighted_errors(batch, 0), layout)
    after = layer_losses(weighted.weighted_errors(batch, 0), layout)
    assert set(before) == {"fg", "alpha", "bg"}  # decomposition generates no blend
    assert_float32_close(after["alpha"], 3.0 * before["alpha"], 64, "alpha")
    assert_float32_close(after["bg"], 0.5 * before["bg"], 64, "bg")
    assert_float32_close(after["fg"], before["fg"], 64, "fg")


def test_layer_kinds_cover_every_foreground():
    assert [layer_kind(n) for n in ("fg", "alpha", "bg", "blend", "fg_1", "alpha_2")] == \
        ["fg", "alpha", "bg", "blend", "fg", "alpha"]


@pytest.mark.parametrize("weights", [{"matte": 2.0}, {"alpha": -1.0}])
def test_bad_layer_weights_are_refused(weights):
    with pytest.raises(TrainConfigError, match="layer_weights"):
        LossConfig(layer_weights=weights).validate()


def test_cosine_decay_known_values():
    schedule = WarmupLR(10, 110, 0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)  # the warm-up
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert schedule(110) == pytest.approx(0.1) and schedule(500) == pytest.approx(0.1)
    assert WarmupLR(10)(500) == 1.0  # constant after the warm-up, as the released configs
