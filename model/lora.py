"""LayerFlow's dual LoRA: a motion LoRA scaled per sample and a content LoRA, on the attention projections.

The official forward of a wrapped linear is `y = base(x) + motion(x) * scale[:, None, None] + content(x)`, each
LoRA being `up(down(x)) * lora_alpha / rank`, with a motion scale PER SAMPLE in the batch (1 for static image
clips, 0 for real videos, 0 at inference). peft's LoRA layers scale an adapter by one number for the whole
batch (`set_adapters(..., weights)` / `scale_layer`) and have no per-sample multiplier, so this layer is our own;
it keeps peft's conventions: `down` is initialised like `nn.Linear` (kaiming-uniform, a = sqrt 5, the same as
peft's default and the official code), `up` is zero so a fresh LoRA is a no-op.

`DualLoRALinear` is an `nn.Linear` (same `weight`/`bias` names, so the base state dict stays diffusers'),
with the two LoRAs as children named `motion_lora` and `content_lora`: every LoRA parameter name contains
`.motion_lora.` or `.content_lora.`. The per-sample scale is set on the layers for one forward by
`motion_scale_applied`; the transformer enters it inside the (checkpointed) block call, so a gradient
checkpointing recompute sees the same scale.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LoraKind = Literal["motion", "content", "all"]
KINDS: tuple[str, ...] = ("motion", "content")


class LoRAError(ValueError):
    """A LoRA request that does not fit the model; the message says what and how to fix it."""


class LoRA(nn.Module):
    """One low-rank update `up(down(x)) * alpha / rank`."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.rank = rank
        self.scaling = alpha / rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x)) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update as a dense [out, in] matrix, in float32."""
        return (self.up.weight.float() @ self.down.weight.float()) * self.scaling


class DualLoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, motion_rank: int,
                 content_rank: int, lora_alpha: float = 1.0, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.motion_lora = (LoRA(in_features, out_features, motion_rank, lora_alpha, device, dtype) if motion_rank
                            else None)
        self.content_lora = (LoRA(in_features, out_features, content_rank, lora_alpha, device, dtype) if content_rank
                             else None)
        self.motion_scale: torch.Tensor | None = None  # [B], set per forward by motion_scale_applied
        self.merged_content = False
        self.merged_motion_scale: float | None = None
        self.lora_enabled = True  # off: the layer is its base Linear (merged deltas stay in the weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, motion_rank: int, content_rank: int,
                    lora_alpha: float = 1.0) -> DualLoRALinear:
        """Wrap `linear`, sharing its weight and bias parameters (no copy)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, motion_rank=motion_rank,
                    content_rank=content_rank, lora_alpha=lora_alpha, device=linear.weight.device,
                    dtype=linear.weight.dtype)
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if not self.lora_enabled:
            return y
        if self.motion_lora is not None and self.merged_motion_scale is None and self.motion_scale is not None:
            scale = self.motion_scale.to(y.dtype).reshape(-1, *([1] * (y.ndim - 1)))
            y = y + self.motion_lora(x) * scale
        if self.content_lora is not None and not self.merged_content:
            y = y + self.content_lora(x)
        return y

    def lora(self, kind: str) -> LoRA | None:
        return self.motion_lora if kind == "motion" else self.content_lora

    @torch.no_grad()
    def merge(self, kind: str, scale: float = 1.0) -> None:
        """Fold one LoRA into the base weight (motion at a uniform scalar `scale`)."""
        lora = self.lora(kind)
        if lora is None or (self.merged_content if kind == "content" else self.merged_motion_scale is not None):
            return
        factor = 1.0 if kind == "content" else float(scale)
        self.weight.copy_((self.weight.float() + factor * lora.delta_weight()).to(self.weight.dtype))
        if kind == "content":
            self.merged_content = True
        else:
            self.merged_motion_scale = factor

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo `merge` (exact up to the weight dtype's rounding)."""
        delta = torch.zeros_like(self.weight, dtype=torch.float32)
        if self.merged_content:
            delta += self.content_lora.delta_weight()
        if self.merged_motion_scale is not None:
            delta += self.merged_motion_scale * self.motion_lora.delta_weight()
        self.weight.copy_((self.weight.float() - delta).to(self.weight.dtype))
        self.merged_content = False
        self.merged_motion_scale = None

    def extra_repr(self) -> str:
        ranks = {k: (self.lora(k).rank if self.lora(k) is not None else 0) for k in KINDS}
        return f"{super().extra_repr()}, motion_rank={ranks['motion']}, content_rank={ranks['content']}"


def attention_linears(attn: nn.Module) -> dict[str, nn.Linear]:
    """The projections the official code wraps: fused q/k/v (diffusers' to_q/to_k/to_v) and the output."""
    return {"to_q": attn.to_q, "to_k": attn.to_k, "to_v": attn.to_v, "to_out.0": attn.to_out[0]}


def apply_dual_lora(blocks: nn.ModuleList, indices: Iterable[int], *, motion_rank: int, content_rank: int,
                    lora_alpha: float = 1.0) -> None:
    """Replace the attention projections of `blocks[i]` (diffusers CogVideoXBlock) by DualLoRALinear."""
    for i in indices:
        attn = blocks[i].attn1
        for name, linear in attention_linears(attn).items():
            if isinstance(linear, DualLoRALinear):
                continue
            wrapped = DualLoRALinear.from_linear(linear, motion_rank=motion_rank, content_rank=content_rank,
                                                 lora_alpha=lora_alpha)
            if name == "to_out.0":
                attn.to_out[0] = wrapped
            else:
                setattr(attn, name, wrapped)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, DualLoRALinear]]:
    for name, module in model.named_modules():
        if isinstance(module, DualLoRALinear):
            yield name, module


def is_lora_param(name: str, kind: LoraKind = "all") -> bool:
    kinds = KINDS if kind == "all" else (kind,)
    return any(f".{k}_lora." in f".{name}" for k in kinds)


def _check_kind(kind: str) -> None:
    if kind not in (*KINDS, "all"):
        raise LoRAError(f"unknown LoRA kind {kind!r}; use 'motion', 'content' or 'all'")


def lora_parameters(model: nn.Module, kind: LoraKind = "all") -> Iterator[tuple[str, nn.Parameter]]:
    _check_kind(kind)
    for name, param in model.named_parameters():
        if is_lora_param(name, kind):
            yield name, param


@contextmanager
def motion_scale_applied(layers: Iterable[DualLoRALinear], scale: torch.Tensor | None) -> Iterator[None]:
    """Give `layers` a per-sample motion scale [B] (None: motion LoRA off) for the duration of the block."""
    layers = list(layers)
    previous = [layer.motion_scale for layer in layers]
    for layer in layers:
        if layer.merged_motion_scale is not None:
            _check_merged_scale(layer.merged_motion_scale, scale)
        layer.motion_scale = scale
    try:
        yield
    finally:
        for layer, prev in zip(layers, previous):
            layer.motion_scale = prev


def _check_merged_scale(merged: float, scale: torch.Tensor | None) -> None:
    requested = torch.zeros(1) if scale is None else scale.detach().float().cpu()
    if not bool(torch.all(requested == merged)):
        raise LoRAError(
            f"the motion LoRA is merged at scale {merged}, but this forward asks for per-sample scales "
            f"{requested.tolist()}; call unmerge_lora() first or pass motion_scale={merged} for every sample"
        )


def merge_lora(model: nn.Module, *, content: bool = True, motion_scale: float | None = None) -> None:
    """Fold LoRAs into the base weights for inference: content always, motion only at one uniform scale."""
    for _, layer in lora_layers(model):
        if content:
            layer.merge("content")
        if motion_scale is not None:
            layer.merge("motion", motion_scale)


def unmerge_lora(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


def lora_merged(model: nn.Module) -> bool:
    """Whether any LoRA of `model` is folded into its base weights."""
    return any(layer.merged_content or layer.merged_motion_scale is not None for _, layer in lora_layers(model))
