"""VBench aesthetic_quality: LAION's linear head on L2-normalised CLIP ViT-L/14 features, /10, frame mean."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.errors import WeightsFormatError
from evaluation.frames import clip_preprocess
from evaluation.metrics.base import Metric, VideoScore, weight_path
from evaluation.models.checkpoint import load_state_dict, load_strict, seeded
from evaluation.models.clip import CLIP_L14, build_clip


def build_head(weights: str | Path | None = None, *, width: int = 768, seed: int = 0) -> nn.Linear:
    """LAION's `Linear(width, 1)`: strict from `weights`, whose weight tensor gives the width, or random init."""
    sd = load_state_dict(weights) if weights is not None else None
    if sd is not None and "weight" in sd:
        width = sd["weight"].shape[-1]
    with seeded(seed):
        head = nn.Linear(width, 1)
    if sd is not None:
        load_strict(head, sd, weights, f"LAION aesthetic Linear({width}, 1)")
    return head.eval().requires_grad_(False)


def head_scores(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """Per-frame VBench aesthetic values: head(normalise(features)) / 10."""
    return head(F.normalize(features.float(), dim=-1, p=2)).squeeze(-1) / 10


class AestheticQuality(Metric):
    name = "aesthetic"

    def __init__(self, clip_weights: str | Path | None = None, head_weights: str | Path | None = None, *,
                 random_init: bool = False, tiny: bool = False, weights_root: str | Path | None = None,
                 batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.random_init = random_init
        clip_path = weight_path(clip_weights, "clip-vit-l14-openai", "open_clip_model.safetensors", random_init,
                                weights_root)
        head_path = weight_path(head_weights, "laion-aesthetic-linear", "sa_0_4_vit_l_14_linear.pth", random_init,
                                weights_root)
        self.clip = build_clip(CLIP_L14, clip_path, tiny=tiny).to(self.device)
        embed = self.clip.visual.output_dim
        self.head = build_head(head_path, width=embed).to(self.device)
        if self.head.in_features != embed:
            raise WeightsFormatError(
                f"{head_path}: the aesthetic head reads {self.head.in_features}-d features but the CLIP "
                f"({clip_path or 'random init'}) gives {embed}-d ones; use the head trained on that CLIP"
            )
        self.batch_size = batch_size
        self.variant = "LAION linear head on CLIP ViT-L/14" + (" (tiny)" if tiny else "")

    @torch.no_grad()
    def score_video(self, frames: np.ndarray, *, fps: float = 8.0, prompt: str | None = None) -> VideoScore:
        frames = self.check(frames)
        per_frame = []
        for i in range(0, len(frames), self.batch_size):
            x = clip_preprocess(frames[i:i + self.batch_size]).to(self.device)
            per_frame.append(head_scores(self.head, self.clip.encode_image(x)))
        values = torch.cat(per_frame).cpu()
        return VideoScore(float(values.mean()), {"per_frame": values.tolist()})
