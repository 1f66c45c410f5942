"""Stage 0: the base pretrained as a plain text-to-video model on the blends, which stage 1 then starts from."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from model.lora import is_lora_param
from model.numerics import assert_float32_close
from trainer.cli import main
from trainer.config import TrainConfigError
from trainer.data import LayerFlowDataModule


def _cached_batch(module, seed: int = 0) -> dict:
    """A generation batch as the latent cache hands it over: latents of the four sub-clips and three prompts."""
    g = torch.Generator().manual_seed(seed)
    tokens, width = module.text_tokens, module.transformer.layerflow_config.text_embed_dim
    return {"task": "generate", "frames_per_layer": 4, "motion_scale": torch.zeros(2),
            "latents": torch.randn(2, 4, 16, 8, 12, generator=g),
            "prompt_embeds": torch.randn(2, 3 * tokens, width, generator=g),
            "prompt_keep": torch.ones(2, 3, dtype=torch.bool)}


def test_stage0_sees_the_blend_and_its_prompt_only(tiny_module):
    """The stage-0 loss is a text-to-video loss on the blend: other layers and other prompts change nothing,
    the blend and its prompt change it, and it differs from stage 1's loss on the same sample."""
    module = tiny_module(0)
    batch = _cached_batch(module)
    tokens = module.text_tokens
    base = module.compute_loss(batch, 0)

    others = copy.deepcopy(batch)
    others["latents"][:, :3] = torch.randn_like(others["latents"][:, :3])  # fg, alpha, bg (one latent each)
    others["prompt_embeds"][:, :2 * tokens] = torch.randn_like(others["prompt_embeds"][:, :2 * tokens])
    assert_float32_close(module.compute_loss(others, 0), base, 64, "loss with other fg/alpha/bg and their prompts")

    blend = copy.deepcopy(batch)
    blend["latents"][:, 3] = torch.randn_like(blend["latents"][:, 3])
    assert float((module.compute_loss(blend, 0) - base).abs().max()) > 1e-3
    prompt = copy.deepcopy(batch)
    # (a random tiny model reads its text faintly: a prompt of larger embeddings moves its loss well past rounding)
    prompt["prompt_embeds"][:, 2 * tokens:] = 30 * torch.randn_like(prompt["prompt_embeds"][:, 2 * tokens:])
    assert float((module.compute_loss(prompt, 0) - base).abs().max()) > 1e-3

    generate = tiny_module(1)
    generate.transformer.load_state_dict(module.transformer.state_dict())
    assert float((generate.compute_loss(batch, 0) - base).abs().max()) > 1e-3


def test_stage0_trains_every_weight_but_the_loras(tiny_module):
    module = tiny_module(0)
    names = dict(module.transformer.named_parameters())
    trained = set(module.trainable_names)
    assert trained == {n for n in names if not is_lora_param(n)}
    assert any(".transformer_blocks.0." in f".{n}" for n in trained)  # not only the paper's 1/6 of the blocks


def test_stage0_refuses_other_tasks(shard_dir, tiny_data):
    with pytest.raises(TrainConfigError, match=r"data.stream.tasks=\{generate: 1\}"):
        LayerFlowDataModule(tiny_data(shard_dir, tasks={"decompose": 1}), stage=0)


def test_stage1_starts_from_the_stage0_export(shard_dir, tmp_path, tiny_module):
    """`layerflow train --stage 0 --tiny` exports a model folder; stage 1 built on it starts from its weights."""
    root = tmp_path / "stage0"
    assert main(["--stage", "0", "--tiny", f"--data.stream.shards={shard_dir}", "--trainer.max_steps=2",
                 f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
                 "--trainer.callbacks=[{class_path: trainer.checkpoint.ExportCallback}]"]) == 0
    exported = load_file(str(root / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))
    fresh = tiny_module(0).transformer.state_dict()
    moved = [k for k in exported if not is_lora_param(k) and not torch.equal(exported[k], fresh[k])]
    assert moved  # stage 0 trained

    from tests.trainer.conftest import TINY_MODEL
    from trainer.components import build_components
    from trainer.config import ModelConfig

    stage1 = build_components(ModelConfig(**{**TINY_MODEL.__dict__, "pretrained": str(root / "final")}))
    for name, value in stage1.transformer.state_dict().items():
        assert torch.equal(value, exported[name]), name
