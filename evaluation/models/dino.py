"""DINO ViT-B/16 on timm's VisionTransformer, with DINO's own position-embedding interpolation.

VBench feeds DINO frames whose shorter side is 224 and keeps the aspect ratio. DINO resizes its 14x14
position grid with `interpolate(scale_factor=((h0 + 0.1) / 14, (w0 + 0.1) / 14), mode="bicubic")`, i.e. the
source grid is remapped with those scales; timm's resampling uses target sizes (and antialias) and gives
features up to 0.09 apart, so this module applies DINO's call to timm's blocks.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.models.checkpoint import load_state_dict, load_strict, seeded


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


def build_dino(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> DinoViT:
    """DINO ViT-B/16 (timm `vit_base_patch16_224`, no head), strict from `weights` or random init."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    with seeded(seed):
        if tiny:
            vit = VisionTransformer(
                img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=0, dynamic_img_size=True
            )
        else:
            vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True)
    if weights is not None:
        load_strict(vit, load_state_dict(weights), weights, "DINO ViT-B/16 (timm layout)")
    return DinoViT(vit).eval().requires_grad_(False)
