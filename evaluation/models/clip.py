"""OpenAI-layout CLIP through open_clip's `CLIP` class (quick-GELU, as OpenAI CLIP and VBench use).

A weight file fixes the architecture: `clip_config` reads it from the tensor shapes, so the released ViT-L/14
and ViT-B/32 files and a tiny file in the same layout go through the same code.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from evaluation.errors import WeightsFormatError
from evaluation.models.checkpoint import HEAD_WIDTH, count_blocks, heads_of, load_state_dict, load_strict, seeded

# VBench's backbones; the open_clip config names with QuickGELU (OpenAI's activation).
CLIP_L14 = "ViT-L-14-quickgelu"
CLIP_B32 = "ViT-B-32-quickgelu"


def tiny_config(arch: str) -> dict:
    """The real config with narrow, shallow towers: same class, patch size, image size and output width, and
    64-wide heads, so a saved tiny model reloads through `clip_config` as the same network."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if cfg is None:
        raise ValueError(f"unknown open_clip config {arch!r}")
    cfg["vision_cfg"].update(width=64, layers=2, head_width=HEAD_WIDTH)
    cfg["text_cfg"].update(width=64, heads=1, layers=2)
    return cfg


def _shape(sd: dict[str, torch.Tensor], key: str, source: str | Path, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise WeightsFormatError(f"{source}: does not hold {what} weights (no {key!r})")
    return tuple(sd[key].shape)


def clip_config(sd: dict[str, torch.Tensor], source: str | Path = "state dict") -> dict:
    """open_clip `CLIP(**config)` of an OpenAI-layout state dict, read from its tensor shapes."""
    what = "OpenAI-layout CLIP"
    width, _, patch, _ = _shape(sd, "visual.conv1.weight", source, what)
    tokens = _shape(sd, "visual.positional_embedding", source, what)[0]
    grid = round((tokens - 1) ** 0.5)
    if grid * grid + 1 != tokens:
        raise WeightsFormatError(f"{source}: visual.positional_embedding has {tokens} rows, not a square grid + 1")
    context, text_width = _shape(sd, "positional_embedding", source, what)
    heads_of(width, source)  # the vision tower's heads come from head_width: refuse a width it cannot split
    return {
        "embed_dim": _shape(sd, "visual.proj", source, what)[1],
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": grid * patch, "patch_size": patch, "width": width, "head_width": HEAD_WIDTH,
            "layers": count_blocks(sd, "visual.transformer.resblocks."),
            "mlp_ratio": _shape(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight", source, what)[0] / width,
        },
        "text_cfg": {
            "context_length": context, "width": text_width, "heads": heads_of(text_width, source),
            "vocab_size": _shape(sd, "token_embedding.weight", source, what)[0],
            "layers": count_blocks(sd, "transformer.resblocks."),
            "mlp_ratio": _shape(sd, "transformer.resblocks.0.mlp.c_fc.weight", source, what)[0] / text_width,
        },
    }


def build_clip(arch: str, weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> nn.Module:
    """open_clip CLIP in eval mode: loaded strictly from `weights` (architecture read from the file), or
    random init of `arch` (full size or `tiny`).

    The model is built with `open_clip.CLIP` rather than `create_model(pretrained=None)`, which logs
    "Model initialized randomly" even when the weights are loaded right after.
    """
    import open_clip

    if weights is not None:
        sd = load_state_dict(weights)
        cfg = clip_config(sd, weights)
    else:
        cfg = tiny_config(arch) if tiny else copy.deepcopy(open_clip.get_model_config(arch))
    with seeded(seed):
        model = open_clip.CLIP(**cfg)
    if weights is not None:
        load_strict(model, sd, weights, "open_clip CLIP (OpenAI layout)")
    return model.eval().requires_grad_(False)


def clip_tokenizer(context_length: int):
    """CLIP's BPE tokenizer for a model's context length; the vocabulary ships inside open_clip."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)
