"""RAFT through torchvision's `raft_large` (the raft-things network; C_T_V1 weights use its key layout)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from evaluation.models.checkpoint import load_state_dict, load_strict, seeded


def build_raft(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> nn.Module:
    """raft_large (strict from `weights`, or random); `tiny` is torchvision's raft_small, 5x faster on CPU."""
    from torchvision.models.optical_flow import raft_large, raft_small

    with seeded(seed):
        model = (raft_small if tiny else raft_large)(weights=None, progress=False)
    if weights is not None:
        load_strict(model, load_state_dict(weights), weights, "torchvision raft_small" if tiny else "torchvision raft_large")
    return model.eval().requires_grad_(False)
