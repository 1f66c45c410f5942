"""VBench dynamic_degree: RAFT flow between adjacent frames sampled at ~8 fps; a pair's score is the mean of
its top 5% flow magnitudes; a video is dynamic when at least round(4 * N / 16) pairs exceed 6 * min(H, W) / 256.
The metric is the fraction of dynamic videos.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.errors import EvaluationError
from evaluation.frames import fps_stride, to_tchw
from evaluation.metrics.base import Metric, VideoScore, weight_path
from evaluation.models.raft import build_raft

NUM_FLOW_UPDATES = 20
TOP_FRACTION = 0.05
# RAFT's 4-level correlation pyramid needs feature maps of at least 16 x 16 at 1/8 resolution.
MIN_SIDE = 128


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """RAFT's InputPadder ('sintel' mode): replicate-pad H and W to a multiple, split evenly (extra at the end)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="replicate")


def top_flow_mean(flow: np.ndarray | torch.Tensor, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest int(H * W * fraction) flow magnitudes of a [2, H, W] flow field."""
    flow = flow.detach().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow)
    rad = np.sqrt(np.square(flow[0]) + np.square(flow[1])).ravel()
    k = int(rad.size * fraction)
    if k < 1:
        raise EvaluationError(f"frames of {flow.shape[1]}x{flow.shape[2]} are too small for a top-{fraction:.0%} "
                              "flow score")
    return float(np.mean(-np.sort(-rad)[:k]))


def thresholds(height: int, width: int, num_frames: int) -> tuple[float, int]:
    """(magnitude threshold, pairs needed) for a video of num_frames sampled frames."""
    return 6.0 * min(height, width) / 256.0, round(4 * num_frames / 16.0)


def is_dynamic(pair_scores: Sequence[float], threshold: float, count_needed: int) -> bool:
    """VBench's check: stops at the first pair where the count of pairs above threshold reaches count_needed,
    so with count_needed == 0 any video with one pair is dynamic."""
    return len(pair_scores) > 0 and sum(s > threshold for s in pair_scores) >= count_needed


FlowModel = Callable[..., list[torch.Tensor]]


class DynamicDegree(Metric):
    name = "dynamic_degree"
    min_frames = 2

    def __init__(self, weights: str | Path | None = None, *, random_init: bool = False, tiny: bool = False,
                 model: FlowModel | None = None, weights_root: str | Path | None = None,
                 pairs_per_batch: int = 4, device: str | torch.device = "cpu") -> None:
        """`model`: a prebuilt flow network with torchvision RAFT's call (img1, img2, num_flow_updates)."""
        super().__init__(device)
        self.random_init, self.pairs_per_batch = random_init, pairs_per_batch
        small = False
        if model is None:
            path = weight_path(weights, "raft-large", "raft_large_C_T_V1-22a6c225.pth", random_init, weights_root)
            model = build_raft(path, tiny=tiny).to(self.device)
            small = tiny and path is None  # a weights file always gives the raft_large layout
        self.model = model
        self.variant = f"RAFT (torchvision {'raft_small' if small else 'raft_large'}), 20 updates, ~8 fps"

    @torch.no_grad()
    def pair_scores(self, frames: np.ndarray) -> list[float]:
        """Top-5% flow score of each adjacent pair; pairs run in batches (RAFT in eval mode is per-sample)."""
        x = pad_to_multiple(to_tchw(frames).to(self.device)) / 255.0 * 2 - 1
        scores: list[float] = []
        for i in range(0, len(x) - 1, self.pairs_per_batch):
            j = min(i + self.pairs_per_batch, len(x) - 1)
            flows = self.model(x[i:j], x[i + 1:j + 1], num_flow_updates=NUM_FLOW_UPDATES)[-1]
            scores.extend(top_flow_mean(f) for f in flows)
        return scores

    def score_video(self, frames: np.ndarray, *, fps: float = 8.0, prompt: str | None = None) -> VideoScore:
        sampled = self.check(frames)[:: fps_stride(fps)]
        if len(sampled) < 2:
            raise EvaluationError(f"{self.name}: {len(frames)} frames at {fps:g} fps leave {len(sampled)} at ~8 fps; "
                                  "need 2")
        if min(sampled.shape[1:3]) < MIN_SIDE:
            raise EvaluationError(
                f"{self.name}: frames are {sampled.shape[1]}x{sampled.shape[2]}; RAFT needs at least "
                f"{MIN_SIDE}x{MIN_SIDE}, so score a larger render"
            )
        thres, needed = thresholds(sampled.shape[1], sampled.shape[2], len(sampled))
        scores = self.pair_scores(sampled)
        moving = is_dynamic(scores, thres, needed)
        return VideoScore(float(moving), {"pair_scores": scores, "threshold": thres, "count_needed": needed,
                                          "pairs_above": int(sum(s > thres for s in scores)),
                                          "sampled_frames": len(sampled)})
