"""The shipped stage-0 base (`infra/assets/tiny_world_base/`) is what its `report.json` says it is."""
from __future__ import annotations

import json

import pytest

from layerflow.toyworld import TINY_WORLD_BASE, Pretraining, Recipe, build_base, heldout_text_to_video_loss
from model.config import get_preset


def test_the_shipped_base_has_the_held_out_loss_its_report_gives(tmp_path):
    """Recomputing the report's held-out text-to-video loss (clips of another world seed, at the pretraining's
    frames, fixed timesteps and noise) on the shipped weights gives the reported figure, far below random weights':
    the asset, its report and `Pretraining` agree."""
    report = json.loads((TINY_WORLD_BASE / "report.json").read_text())
    cfg = Pretraining(**report["pretraining"])
    assert cfg == Pretraining(), "report.json was made with other settings than `Pretraining`'s defaults"
    folder = build_base(Recipe(), tmp_path, threads=1, log=lambda _: None)
    loss = heldout_text_to_video_loss(folder, cfg.recipe(), cfg.heldout_seed, cfg.heldout_clips)
    reported = report["heldout_text_to_video_loss"]
    assert loss == pytest.approx(reported["pretrained"], rel=1e-3)
    assert loss < 0.5 * reported["random"]


def test_the_shipped_base_is_the_recipes_preset():
    """Stage 1 trains the base it is given: the shipped one must be the preset a random base would be."""
    shipped = json.loads((TINY_WORLD_BASE / "transformer" / "config.json").read_text())["layerflow"]
    preset = get_preset(Recipe.preset)
    for field in ("num_attention_heads", "attention_head_dim", "num_layers", "text_tokens_per_prompt"):
        assert shipped[field] == getattr(preset, field), field
