"""ViCLIP (InternVid, ViT-L/14) assembled from open_clip's CLIP modules, loading ViCLIP's checkpoint keys.

No maintained package ships ViCLIP. Its towers are CLIP's: the text tower is OpenAI CLIP's with a 32-token
context; the vision tower is CLIP ViT-L/14 whose patch conv is a Conv3d with time kernel 1 (the same weights
as a Conv2d), plus a learned temporal position embedding added to every patch token of frame t. All frames'
patch tokens form one sequence behind the first frame's class token; the output is that token after
ln_post @ proj. Token order inside the sequence does not change the result (no positional mask).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from evaluation.models.checkpoint import load_state_dict, load_strict, seeded

VICLIP_FRAMES = 8
VICLIP_CONTEXT = 32


def viclip_config(tiny: bool = False) -> dict:
    vision = {"image_size": 224, "patch_size": 14, "width": 1024, "layers": 24, "head_width": 64}
    text = {"context_length": VICLIP_CONTEXT, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}
    if tiny:
        vision.update(width=64, layers=2, head_width=32)
        text.update(width=64, heads=2, layers=2)
    return {"embed_dim": 768, "quick_gelu": True, "vision_cfg": vision, "text_cfg": text}


class ViCLIP(nn.Module):
    def __init__(self, tiny: bool = False, num_frames: int = VICLIP_FRAMES) -> None:
        super().__init__()
        import open_clip

        self.clip = open_clip.CLIP(**viclip_config(tiny))
        width = self.clip.visual.conv1.out_channels
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, num_frames, width))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, H, W] (CLIP-normalised) -> [B, embed_dim], not normalised."""
        v = self.clip.visual
        b, t = video.shape[:2]
        x = v.conv1(video.flatten(0, 1))  # [B*T, C, h, w]
        x = x.flatten(2).transpose(1, 2) + v.positional_embedding[1:]
        temporal = self.temporal_positional_embedding
        temporal = temporal.mean(1, keepdim=True) if t == 1 else temporal[:, :t]
        x = x.reshape(b, t, -1, x.shape[-1]) + temporal[:, :, None, :]
        cls = (v.class_embedding + v.positional_embedding[0]).expand(b, 1, -1)
        x = torch.cat((cls, x.flatten(1, 2)), dim=1)
        x = v.transformer(v.ln_pre(x))
        return v.ln_post(x[:, 0]) @ v.proj

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


def viclip_key_map(key: str) -> str | None:
    """ViCLIP checkpoint key -> our key (None: a training-only tensor we do not hold)."""
    if key == "temp":
        return None
    if key == "vision_encoder.temporal_positional_embedding":
        return "temporal_positional_embedding"
    if key.startswith("vision_encoder."):
        return "clip.visual." + key[len("vision_encoder."):]
    if key.startswith("text_encoder."):
        return "clip." + key[len("text_encoder."):]
    return key


def convert_viclip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        new = viclip_key_map(k)
        if new is None:
            continue
        if new == "clip.visual.conv1.weight" and v.ndim == 5:
            v = v[:, :, 0]  # Conv3d with a time kernel of 1
        out[new] = v
    return out


def build_viclip(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> ViCLIP:
    with seeded(seed):
        model = ViCLIP(tiny=tiny)
    if weights is not None:
        sd = convert_viclip_state_dict(load_state_dict(weights, nested_key="model"))
        sd.setdefault("clip.logit_scale", model.clip.logit_scale.detach().clone())
        load_strict(model, sd, weights, "ViCLIP ViT-L/14")
    return model.eval().requires_grad_(False)
