"""RAFT through torchvision (raft-things; the C_T_V1 weights use torchvision's `raft_large` key layout).

A weight file fixes the widths: `raft_config` reads them from the tensor shapes and builds the network with
the builder `raft_large` itself calls, so the released file and a narrow file in the same layout go through
the same code. The blocks and norms (residual blocks, instance / batch norm, two separable GRUs, learned
upsampling mask) are raft_large's.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from evaluation.errors import WeightsFormatError
from evaluation.models.checkpoint import load_state_dict, load_strict, seeded

CORR_LEVELS = 4  # both torchvision RAFTs use a 4-level correlation pyramid
ENCODER_LAYERS = ("convnormrelu.0", "layer1.0.convnormrelu1.0", "layer2.0.convnormrelu1.0",
                  "layer3.0.convnormrelu1.0", "conv")


def raft_config(sd: dict[str, torch.Tensor], source: str | Path = "state dict") -> dict:
    """The width arguments of torchvision's `_raft` (as `raft_large` passes them) read from a state dict."""
    def shape(key: str) -> torch.Size:
        if key not in sd:
            raise WeightsFormatError(f"{source}: does not hold torchvision raft_large-layout weights (no {key})")
        return sd[key].shape

    def out(layer: str) -> int:
        return shape(layer + ".weight")[0]

    motion = "update_block.motion_encoder."
    corr_channels = shape(motion + "convcorr1.0.weight")[1]
    radius = round(((corr_channels / CORR_LEVELS) ** 0.5 - 1) / 2)
    if CORR_LEVELS * (2 * radius + 1) ** 2 != corr_channels:
        raise WeightsFormatError(f"{source}: {corr_channels} correlation channels are not {CORR_LEVELS} levels of a "
                                 f"(2r + 1)^2 window")
    return {
        "feature_encoder_layers": tuple(out(f"feature_encoder.{k}") for k in ENCODER_LAYERS),
        "context_encoder_layers": tuple(out(f"context_encoder.{k}") for k in ENCODER_LAYERS),
        "corr_block_radius": radius,
        "motion_encoder_corr_layers": (out(motion + "convcorr1.0"), out(motion + "convcorr2.0")),
        "motion_encoder_flow_layers": (out(motion + "convflow1.0"), out(motion + "convflow2.0")),
        "motion_encoder_out_channels": out(motion + "conv.0") + 2,  # the motion encoder appends the 2-channel flow
        "recurrent_block_hidden_state_size": out("update_block.recurrent_block.convgru1.convz"),
        "flow_head_hidden_size": out("update_block.flow_head.conv1"),
    }


def raft_from_config(config: dict) -> nn.Module:
    """torchvision's RAFT with raft_large's blocks, norms and kernels and the widths in `config`."""
    from torchvision.models.optical_flow.raft import BatchNorm2d, InstanceNorm2d, ResidualBlock, _raft

    return _raft(
        feature_encoder_block=ResidualBlock, feature_encoder_norm_layer=InstanceNorm2d,
        context_encoder_block=ResidualBlock, context_encoder_norm_layer=BatchNorm2d,
        corr_block_num_levels=CORR_LEVELS,
        recurrent_block_kernel_size=((1, 5), (5, 1)), recurrent_block_padding=((0, 2), (2, 0)),
        use_mask_predictor=True, **config,
    )


def build_raft(weights: str | Path | None = None, *, tiny: bool = False, seed: int = 0) -> nn.Module:
    """RAFT in eval mode: strict from `weights` (raft_large layout, widths read from the file), or random
    raft_large; `tiny` random init is torchvision's raft_small, 5x faster on CPU."""
    from torchvision.models.optical_flow import raft_large, raft_small

    sd = load_state_dict(weights) if weights is not None else None
    with seeded(seed):
        if sd is not None:
            model = raft_from_config(raft_config(sd, weights))
        else:
            model = (raft_small if tiny else raft_large)(weights=None, progress=False)
    if sd is not None:
        load_strict(model, sd, weights, "torchvision raft_large-layout RAFT")
    return model.eval().requires_grad_(False)
