"""Build the models a training run needs (transformer, VAE, T5, tokenizer) and load trainable weights.

The tiny preset is built in-process from a seed; a real run reads a local diffusers-layout folder: stock
CogVideoX-2B (its transformer converted on load) or a LayerFlow model folder written by `export_model`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from trainer.config import ModelConfig, TrainConfigError

TRAINABLE_FILE = "trainable.safetensors"


@dataclass
class Components:
    transformer: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any


def build_components(cfg: ModelConfig) -> Components:
    """From `pretrained` when given (stock CogVideoX-2B or an earlier stage's export); else a tiny preset."""
    from model.config import TINY_PRESETS, get_preset

    if cfg.pretrained:
        return _load_pretrained(Path(cfg.pretrained), cfg)
    if cfg.preset in TINY_PRESETS:
        from model.pipeline import build_tiny_pipeline
        from model.transformer import LayerFlowTransformer

        pipe = build_tiny_pipeline(seed=cfg.seed, preset=cfg.preset)
        transformer = pipe.transformer
        if cfg.lora_overrides():
            # The same seed as the pipeline's own transformer: only the LoRA shape differs.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                transformer = LayerFlowTransformer.from_config(get_preset(cfg.preset, **cfg.lora_overrides()))
        return Components(transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer)
    raise TrainConfigError(f"model.network.pretrained is empty; preset {cfg.preset!r} loads its weights from a "
                           "local folder with transformer/, vae/, text_encoder/, tokenizer/ (see README: weights)")


def _load_pretrained(root: Path, cfg: ModelConfig) -> Components:
    from model.pipeline import ModelFolderError, load_model_folder

    if not root.exists():
        raise TrainConfigError(
            f"model.network.pretrained={root} does not exist; when it is an earlier stage's export, train that stage "
            "first (e.g. `make train STAGE=1 ARGS=--tiny`), or pass --model.network.pretrained=null for a fresh model")
    # float32 weights whatever the files hold (the CogVideoX-2B release is float16): the trainer's precision
    # setting decides the compute dtype.
    try:
        parts = load_model_folder(root, torch.float32, partial(_load_transformer, cfg=cfg))
    except ModelFolderError as exc:
        raise TrainConfigError(f"model.pretrained={root}: missing {', '.join(d + '/' for d in exc.missing)}") from None
    return Components(**parts)


def _load_transformer(folder: Path, cfg: ModelConfig) -> nn.Module:
    """Stock CogVideoX converted with the configured LoRA shape, or a LayerFlow model, which keeps its own."""
    from model.config import get_preset
    from model.transformer import LayerFlowTransformer

    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") == "CogVideoXTransformer3DModel":
        preset = get_preset(cfg.preset, **cfg.lora_overrides())
        return LayerFlowTransformer.from_diffusers(
            folder, motion_rank=preset.motion_rank, content_rank=preset.content_rank,
            lora_alpha=preset.lora_alpha, lora_blocks=preset.lora_blocks)
    transformer = LayerFlowTransformer.from_pretrained(folder, torch_dtype=torch.float32)
    have = transformer.layerflow_config.to_dict()
    differ = {k: (v, have[k]) for k, v in cfg.lora_overrides().items()
              if (list(v) if isinstance(v, tuple) else v) != have[k]}
    if differ:
        raise TrainConfigError(f"model.network sets {', '.join(f'{k}={w!r}' for k, (w, _) in differ.items())} but "
                               f"{folder.parent} was trained with "
                               f"{', '.join(f'{k}={h!r}' for k, (_, h) in differ.items())}; "
                               "drop these keys (a LayerFlow folder keeps its LoRA shape)")
    return transformer


def load_trainable(transformer: nn.Module, path: str | Path) -> list[str]:
    """Load a stage's weights (`trainable.safetensors`, or a checkpoint folder holding one) into the transformer."""
    p = Path(path)
    if p.is_dir():
        p = p / TRAINABLE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no trainable weights here; give a trainable.safetensors or a checkpoint folder")
    weights = load_file(str(p))
    weights = {k.removeprefix("transformer."): v for k, v in weights.items()}
    params = dict(transformer.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise TrainConfigError(f"{p}: {len(unknown)} weight(s) the model does not have (e.g. {unknown[0]}); "
                               "was it trained with another preset?")
    with torch.no_grad():
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise TrainConfigError(f"{p}: {name} has shape {tuple(value.shape)}, the model "
                                       f"{tuple(params[name].shape)}")
            params[name].copy_(value)
    return sorted(weights)
