"""What every metric shares: the score record, the batch loop, aggregation and weight lookup."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from data_engine.weights import resolve
from evaluation.errors import EvaluationError
from evaluation.frames import check_video


@dataclass
class VideoScore:
    value: float
    details: dict[str, Any] = field(default_factory=dict)


def weight_path(given: str | Path | None, registry_name: str, filename: str, random_init: bool,
                root: str | Path | None = None) -> Path | None:
    """An explicit path wins; random init needs none; otherwise the registry (one-line error if absent)."""
    if given is not None:
        return Path(given)
    if random_init:
        return None
    return resolve(registry_name, filename, root)


class Metric(abc.ABC):
    name: ClassVar[str]
    needs_prompt: ClassVar[bool] = False
    min_frames: ClassVar[int] = 1
    variant: str
    random_init: bool

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @abc.abstractmethod
    def score_video(self, frames: np.ndarray, *, fps: float = 8.0, prompt: str | None = None) -> VideoScore:
        ...

    def score(self, videos: Sequence[np.ndarray], *, fps: float | Sequence[float] = 8.0,
              prompts: Sequence[str] | None = None) -> list[VideoScore]:
        fps_list = [float(fps)] * len(videos) if np.isscalar(fps) else [float(f) for f in fps]
        if len(fps_list) != len(videos):
            raise EvaluationError(f"{self.name}: got {len(videos)} videos but {len(fps_list)} fps values")
        if self.needs_prompt and (prompts is None or len(prompts) != len(videos)):
            raise EvaluationError(f"{self.name}: needs one prompt per video ({len(videos)} videos)")
        return [
            self.score_video(v, fps=f, prompt=prompts[i] if prompts is not None else None)
            for i, (v, f) in enumerate(zip(videos, fps_list))
        ]

    def check(self, frames: np.ndarray, name: str | None = None) -> np.ndarray:
        return check_video(frames, name or self.name, self.min_frames)

    def aggregate(self, scores: Sequence[VideoScore]) -> float:
        """Mean over videos (VBench's aggregate for aesthetic, text alignment and dynamic degree)."""
        return float(np.mean([s.value for s in scores])) if scores else float("nan")
