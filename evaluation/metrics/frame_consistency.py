"""Frame consistency with VBench's formula; backbone CLIP ViT-B/32 (background_consistency, the default) or
DINO ViT-B/16 (subject_consistency). Frame i > 0 scores (max(0, cos(f[i-1], f[i])) + max(0, cos(f[0], f[i]))) / 2.

A float32 cosine of two (nearly) identical features can come out a few ulps above 1, so each cosine is also
capped at 1: a score stays in [0, 1] (VBench only clamps below; the cap changes nothing else).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.errors import EvaluationError
from evaluation.frames import clip_preprocess, dino_preprocess
from evaluation.metrics.base import Metric, VideoScore, weight_path
from evaluation.models.clip import CLIP_B32, build_clip
from evaluation.models.dino import build_dino

Backbone = Literal["clip", "dino"]
VARIANTS = {
    "clip": "VBench background_consistency (CLIP ViT-B/32)",
    "dino": "VBench subject_consistency (DINO ViT-B/16)",
}


def consistency_from_features(features: torch.Tensor) -> dict[str, list[float]]:
    """Per-pair VBench similarities from [T, D] features (normalised here, as VBench does)."""
    f = F.normalize(features.float(), dim=-1, p=2)
    cos_prev = F.cosine_similarity(f[:-1], f[1:], dim=-1).tolist()
    cos_first = F.cosine_similarity(f[:1].expand_as(f[1:]), f[1:], dim=-1).tolist()
    sims = [(min(1.0, max(0.0, p)) + min(1.0, max(0.0, q))) / 2 for p, q in zip(cos_prev, cos_first)]
    return {"pair": sims, "cos_prev": cos_prev, "cos_first": cos_first}


class FrameConsistency(Metric):
    name = "frame_consistency"
    min_frames = 2

    def __init__(self, backbone: Backbone = "clip", weights: str | Path | None = None, *,
                 random_init: bool = False, tiny: bool = False, weights_root: str | Path | None = None,
                 batch_size: int = 16, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        if backbone not in VARIANTS:
            raise EvaluationError(f"frame consistency backbone must be one of {sorted(VARIANTS)}, got {backbone!r}")
        self.backbone, self.random_init, self.batch_size = backbone, random_init, batch_size
        if backbone == "clip":
            path = weight_path(weights, "clip-vit-b32-openai", "open_clip_model.safetensors", random_init, weights_root)
            self.model = build_clip(CLIP_B32, path, tiny=tiny).to(self.device)
            self._encode, self._prep = self.model.encode_image, clip_preprocess
        else:
            path = weight_path(weights, "dino-vitb16", "model.safetensors", random_init, weights_root)
            self.model = build_dino(path, tiny=tiny).to(self.device)
            self._encode, self._prep = self.model, dino_preprocess
        self.variant = VARIANTS[backbone] + (" (tiny)" if tiny else "")

    @torch.no_grad()
    def features(self, frames: np.ndarray) -> torch.Tensor:
        chunks = [self._encode(self._prep(frames[i:i + self.batch_size]).to(self.device))
                  for i in range(0, len(frames), self.batch_size)]
        return torch.cat(chunks).cpu()

    def score_video(self, frames: np.ndarray, *, fps: float = 8.0, prompt: str | None = None) -> VideoScore:
        sims = consistency_from_features(self.features(self.check(frames)))
        total = float(sum(sims["pair"]))
        return VideoScore(total / len(sims["pair"]), {**sims, "sum": total, "pairs": len(sims["pair"])})

    def aggregate(self, scores: Sequence[VideoScore]) -> float:
        """VBench: the sum of all pair similarities over the number of pairs, across all videos."""
        pairs = sum(s.details["pairs"] for s in scores)
        return float(sum(s.details["sum"] for s in scores) / pairs) if pairs else float("nan")
