"""Tag stage: name the candidate foreground subjects of a clip.

Reads `frames`; writes `tags` = [{"tag", "score"}] ranked best first, and `scores["tag"]`.

Backends, both over the RAM++ tag vocabulary (data/ram_tag_list.txt):
- `clip` (default): open_clip zero-shot scoring of `num_keyframes` uniformly spaced frames against
  "a photo of a {tag}."; a tag's score is its softmax probability averaged over the keyframes.
- `ram`: RAM++ through the `ram` package (git install); a tag's score is the fraction of keyframes on which RAM++
  predicts it (RAM++ thresholds per class itself).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.models import (
    CLIP_WEIGHTS,
    RAM_WEIGHTS,
    actor_gpu_gib,
    build_clip,
    build_ram,
    check_preset,
    device_for,
    seeded,
    tag_list,
)

BACKENDS = ("clip", "ram")
# Working set: a ViT-L/14 on 3 keyframes at 224 px and the cached text embeddings of 4585 tags
# (benchmarks/perception.py).
WORKING_GIB = 0.5


@dataclass(frozen=True)
class TagOptions:
    preset: str = "full"
    backend: str = "clip"
    num_keyframes: int = 3
    top_k: int = 5
    min_score: float = 0.0
    prompt: str = "a photo of a {tag}."
    text_batch: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.backend not in BACKENDS:
            raise ValueError(f"tag backend must be one of {BACKENDS}, got {self.backend!r}")
        if "{tag}" not in self.prompt:
            raise ValueError(f"tag prompt must contain '{{tag}}', got {self.prompt!r}")
        if self.num_keyframes < 1 or self.top_k < 1:
            raise ValueError("tag num_keyframes and top_k must be >= 1")


def keyframe_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over the clip, first and last included (fewer for short clips)."""
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(count, num_frames))})


class TagStage(Stage):
    name = "tag"
    default_resources = Resources(num_cpus=1.0, num_gpus=0.05, batch_size=4, retries=1)
    Options = TagOptions
    reads = frozenset({"frames"})
    writes = frozenset({"tags", "scores"})

    @classmethod
    def gpu_memory_gib(cls, opts: TagOptions) -> float:
        return actor_gpu_gib(opts.preset, {RAM_WEIGHTS if opts.backend == "ram" else CLIP_WEIGHTS: "float32"},
                             WORKING_GIB)

    @classmethod
    def weights(cls, opts: TagOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else (RAM_WEIGHTS if opts.backend == "ram" else CLIP_WEIGHTS,)

    def setup(self) -> None:
        import torch

        self.device = device_for(self.resources.num_gpus)
        self.tags = tag_list()
        if self.opts.backend == "ram":
            self.ram, self.transform = build_ram(self.opts.preset)
            self.ram.to(self.device)
            return
        bundle = build_clip(self.opts.preset, seed=self.opts.seed)
        self.model, self.preprocess, self.tokenizer = bundle.model.to(self.device), bundle.preprocess, bundle.tokenizer
        with torch.inference_mode(), seeded(self.opts.seed):
            chunks = []
            for i in range(0, len(self.tags), self.opts.text_batch):
                prompts = [self.opts.prompt.format(tag=t) for t in self.tags[i : i + self.opts.text_batch]]
                chunks.append(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float())
            text = torch.cat(chunks)
        # The tag embeddings are computed once per actor: 4585 prompts cost more than tagging a clip.
        self.text_features = text / text.norm(dim=-1, keepdim=True)

    def _clip_scores(self, frames: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        images = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]).to(self.device)
        with torch.inference_mode():
            feats = self.model.encode_image(images).float()
            feats = feats / feats.norm(dim=-1, keepdim=True)
            logits = self.model.logit_scale.exp().float() * feats @ self.text_features.T
            return logits.softmax(dim=-1).mean(dim=0).cpu().numpy()

    def _ram_scores(self, frames: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        index = {t: i for i, t in enumerate(self.tags)}
        votes = np.zeros(len(self.tags), np.float32)
        for frame in frames:
            image = self.transform(Image.fromarray(frame)).unsqueeze(0).to(self.device)
            with torch.inference_mode():
                predicted, _ = self.ram.generate_tag(image)
            for tag in predicted[0].split(" | "):
                if tag.strip() in index:
                    votes[index[tag.strip()]] += 1
        return votes / len(frames)

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            frames = row.get("frames")
            if frames is None or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                got = None if frames is None else f"{frames.dtype} {frames.shape}"
                out.append(self.failed(row, StageError(f"tag needs frames uint8 [T, H, W, 3], got {got}")))
                continue
            keyframes = frames[keyframe_indices(len(frames), self.opts.num_keyframes)]
            scores = self._ram_scores(keyframes) if self.opts.backend == "ram" else self._clip_scores(keyframes)
            order = np.argsort(-scores, kind="stable")[: self.opts.top_k]
            tags = [{"tag": self.tags[i], "score": float(scores[i])} for i in order if scores[i] >= self.opts.min_score]
            if not tags:
                self.drop(row, f"tag: no tag scored >= {self.opts.min_score}")
                continue
            out.append({**row, "tags": tags,
                        "scores": {**row.get("scores", {}), "tag": {"backend": self.opts.backend, "tags": tags}}})
        return out
