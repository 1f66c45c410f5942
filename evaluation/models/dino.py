"""DINO ViT-B/16 on timm's VisionTransformer, with DINO's own position-embedding interpolation.

VBench feeds DINO frames whose shorter side is 224 and keeps the aspect ratio. DINO resizes its 14x14
position grid with `interpolate(scale_factor=((h0 + 0.1) / 14, (w0 + 0.1) / 14), mode="bicubic")`, i.e. the
source grid is remapped with those scales; timm's resampling uses target sizes (and antialias) and gives
features up to 0.09 apart, so this module applies DINO's call to timm's blocks. A weight file fixes the
architecture (`dino_config` reads it from the tensor shapes), as for every loader of this package.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.errors import WeightsFormatError
from evaluation.models.checkpoint import count_blocks, heads_of, load_state_dict, load_strict, seeded


def dino_pos_embed(pos_embed: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """DINO's `interpolate_pos_encoding` for an input of height x width pixels."""
    n = pos_embed.shape[1] - 1
    h0, w0 = height // patch, width // patch
    if h0 * w0 == n and height == width:
        return pos_embed
    side = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / side, (w0 + 0.1) / side), mode="bicubic")
    if grid.shape[-2:] != (h0, w0):
        raise ValueError(f"position grid resized to {tuple(grid.shape[-2:])}, expected {(h0, w0)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], grid), dim=1)


class DinoViT(nn.Module):
    """DINO's forward (cls token after the final norm) over a timm VisionTransformer's modules."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.patch = vit.patch_embed.patch_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        # DINO's stride-16 conv silently drops a partial last patch (VBench's 240x320 -> 224x298 frames);
        # timm's patch embed refuses such sizes, and cropping to whole patches gives DINO's exact conv output.
        x = x[..., : h - h % self.patch, : w - w % self.patch]
        tokens = self.vit.patch_embed(x).flatten(1, 2)  # dynamic_img_size: NHWC out
        tokens = torch.cat((self.vit.cls_token.expand(b, -1, -1), tokens), dim=1)
        tokens = tokens + dino_pos_embed(self.vit.pos_embed, h, w, self.patch)
        tokens = self.vit.norm_pre(self.vit.pos_drop(tokens))
        return self.vit.norm(self.vit.blocks(tokens))[:, 0]


def dino_config(sd: dict[str, torch.Tensor], source: str | Path = "state dict") -> dict:
    """timm `VisionTransformer(**config)` of a DINO ViT state dict in timm's layout, read from its tensor shapes
    (DINO's ViTs, S/16 to B/8, all use 64-wide heads)."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    absent = [k for k in needed if k not in sd]
    if absent:
        raise WeightsFormatError(f"{source}: does not hold a timm ViT (no {', '.join(absent)})")
    width, patch = sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[-1]
    grid = round((sd["pos_embed"].shape[1] - 1) ** 0.5)
    return {
        "img_size": grid * patch, "patch_size": patch, "embed_dim": width, "num_heads": heads_of(width, source),
        "depth": count_blocks(sd, "blocks."), "mlp_ratio": sd["blocks.0.mlp.fc1.weight"].shape[0] / width,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
    }


def build_dino(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> DinoViT:
    """DINO ViT on timm's VisionTransformer (no head): strict from `weights`, whose shapes give the
    architecture, or random init of ViT-B/16 (`vit_base_patch16_224`) or a tiny ViT."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    sd = load_state_dict(weights) if weights is not None else None
    with seeded(seed):
        if sd is not None:
            vit = VisionTransformer(**dino_config(sd, weights), num_classes=0, dynamic_img_size=True)
        elif tiny:
            vit = VisionTransformer(  # one 64-wide head, as `dino_config` reads a saved model back
                img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=1, num_classes=0, dynamic_img_size=True
            )
        else:
            vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True)
    if sd is not None:
        load_strict(vit, sd, weights, "DINO ViT (timm layout)")
    return DinoViT(vit).eval().requires_grad_(False)
