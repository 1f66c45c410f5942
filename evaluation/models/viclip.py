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

from evaluation.errors import WeightsFormatError
from evaluation.models.checkpoint import HEAD_WIDTH, load_state_dict, load_strict, seeded
from evaluation.models.clip import clip_config

VICLIP_FRAMES = 8  # VBench samples 8 frames for ViCLIP
VICLIP_CONTEXT = 32


def viclip_config(tiny: bool = False) -> dict:
    """The released architecture (VBench's clip_joint_l14 / clip_text_l14), or narrow towers for random init
    (64-wide heads, as `viclip_architecture` reads a saved model back)."""
    vision = {"image_size": 224, "patch_size": 14, "width": 1024, "layers": 24, "head_width": HEAD_WIDTH}
    text = {"context_length": VICLIP_CONTEXT, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}
    if tiny:
        vision.update(width=64, layers=2)
        text.update(width=64, heads=1, layers=2)
    return {"embed_dim": 768, "quick_gelu": True, "vision_cfg": vision, "text_cfg": text}


class ViCLIP(nn.Module):
    def __init__(self, config: dict, num_frames: int = VICLIP_FRAMES) -> None:
        super().__init__()
        import open_clip

        self.clip = open_clip.CLIP(**config)
        width = self.clip.visual.conv1.out_channels
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, num_frames, width))

    @property
    def context_length(self) -> int:
        return self.clip.context_length

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


def viclip_architecture(sd: dict[str, torch.Tensor], source: str | Path = "state dict") -> tuple[dict, int]:
    """(open_clip config, frames) of a ViCLIP state dict in our key names (see `convert_viclip_state_dict`)."""
    if "temporal_positional_embedding" not in sd:
        raise WeightsFormatError(
            f"{source}: does not hold ViCLIP weights (no vision_encoder.temporal_positional_embedding)")
    config = clip_config({k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}, source)
    return config, sd["temporal_positional_embedding"].shape[1]


def build_viclip(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> ViCLIP:
    """ViCLIP in eval mode: strict from a checkpoint in ViCLIP's layout (`{'model': state dict}`), whose
    tensor shapes give the architecture, or random init (released size or `tiny`)."""
    if weights is None:
        with seeded(seed):
            return ViCLIP(viclip_config(tiny)).eval().requires_grad_(False)
    sd = convert_viclip_state_dict(load_state_dict(weights, nested_key="model"))
    config, num_frames = viclip_architecture(sd, weights)
    with seeded(seed):
        model = ViCLIP(config, num_frames)
    # ViCLIP keeps its temperature as 'temp'; CLIP's logit scale plays no part in a cosine score.
    sd.setdefault("clip.logit_scale", model.clip.logit_scale.detach().clone())
    load_strict(model, sd, weights, "ViCLIP")
    return model.eval().requires_grad_(False)
