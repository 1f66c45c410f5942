"""OpenAI-layout CLIP through open_clip's `CLIP` class (quick-GELU, as OpenAI CLIP and VBench use)."""
from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from evaluation.models.checkpoint import load_state_dict, load_strict, seeded

# VBench's backbones; the open_clip config names with QuickGELU (OpenAI's activation).
CLIP_L14 = "ViT-L-14-quickgelu"
CLIP_B32 = "ViT-B-32-quickgelu"


def tiny_config(arch: str) -> dict:
    """The real config with narrow, shallow towers: same class, patch size, image size and output width."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if cfg is None:
        raise ValueError(f"unknown open_clip config {arch!r}")
    cfg["vision_cfg"].update(width=64, layers=2, head_width=32)
    cfg["text_cfg"].update(width=64, heads=2, layers=2)
    return cfg


def build_clip(arch: str, weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> nn.Module:
    """open_clip CLIP in eval mode: loaded strictly from `weights`, or random init (full size or `tiny`)."""
    import open_clip

    if tiny:
        with seeded(seed):
            model = open_clip.CLIP(**tiny_config(arch))
    else:
        with seeded(seed):
            model = open_clip.create_model(arch, pretrained=None)
    if weights is not None:
        load_strict(model, load_state_dict(weights), weights, f"open_clip {arch}")
    return model.eval().requires_grad_(False)


def clip_tokenizer(arch: str, context_length: int | None = None):
    """CLIP's BPE tokenizer; its vocabulary file ships inside open_clip, so nothing is downloaded."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    cfg = open_clip.get_model_config(arch)
    return SimpleTokenizer(context_length=context_length or cfg["text_cfg"].get("context_length", 77))
