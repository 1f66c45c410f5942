"""Text alignment: VBench overall_consistency (ViCLIP video embedding of 8 middle frames vs the prompt, plain
cosine), or, without ViCLIP weights, CLIP ViT-L/14 cosine averaged over the same 8 frames ("clip-fallback").
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.errors import EvaluationError
from evaluation.frames import clip_preprocess, middle_frame_indices
from evaluation.metrics.base import Metric, VideoScore, weight_path
from evaluation.models.clip import CLIP_L14, build_clip, clip_tokenizer
from evaluation.models.viclip import VICLIP_FRAMES, build_viclip

Backend = Literal["viclip", "clip"]
VARIANTS = {
    "viclip": "viclip (VBench overall_consistency)",
    "clip": "clip-fallback (CLIP ViT-L/14 frame-averaged cosine, not ViCLIP)",
}


class TextAlignment(Metric):
    name = "text_alignment"
    needs_prompt = True

    def __init__(self, backend: Backend = "viclip", weights: str | Path | None = None, *,
                 random_init: bool = False, tiny: bool = False, weights_root: str | Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        if backend not in VARIANTS:
            raise EvaluationError(f"text alignment backend must be one of {sorted(VARIANTS)}, got {backend!r}")
        self.backend, self.random_init = backend, random_init
        if backend == "viclip":
            path = weight_path(weights, "viclip-internvid-10m-flt", "ViClip-InternVid-10M-FLT.pth", random_init,
                               weights_root)
            self.model = build_viclip(path, tiny=tiny).to(self.device)
        else:
            path = weight_path(weights, "clip-vit-l14-openai", "open_clip_model.safetensors", random_init, weights_root)
            self.model = build_clip(CLIP_L14, path, tiny=tiny).to(self.device)
        # ViCLIP reads 32 tokens, OpenAI CLIP 77: the loaded text tower's position table says which.
        self.tokenizer = clip_tokenizer(self.model.context_length)
        self.variant = VARIANTS[backend] + (" (tiny)" if tiny else "")
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text_cache:
            tokens = self.tokenizer([prompt]).to(self.device)
            self._text_cache[prompt] = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return self._text_cache[prompt]

    @torch.no_grad()
    def score_video(self, frames: np.ndarray, *, fps: float = 8.0, prompt: str | None = None) -> VideoScore:
        frames = self.check(frames)
        if not prompt or not prompt.strip():
            raise EvaluationError(f"{self.name}: empty prompt; every scored layer needs its caption")
        idx = middle_frame_indices(VICLIP_FRAMES, len(frames))
        # VBench reads these frames as uint8 tensors, so the resize rounds and clamps here.
        x = clip_preprocess(frames[idx], resize_uint8=True).to(self.device)
        text = self.text_features(prompt)
        if self.backend == "viclip":
            video = F.normalize(self.model.encode_video(x[None]).float(), dim=-1)
            return VideoScore(float((video @ text.T).item()), {"frames": idx})
        per_frame = (F.normalize(self.model.encode_image(x).float(), dim=-1) @ text.T).squeeze(-1)
        return VideoScore(float(per_frame.mean()), {"frames": idx, "per_frame": per_frame.cpu().tolist()})
