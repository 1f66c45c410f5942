"""Reading weight files safely: safetensors, or torch.load(weights_only=True); never pickled code."""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from data_engine.weights import MissingWeightsError
from evaluation.errors import WeightsFormatError

# The ViTs we load (OpenAI CLIP, ViCLIP, DINO) all use 64-wide attention heads. A state dict holds no head
# count, so loaders take heads = width / 64, as open_clip's build_model_from_openai_state_dict does.
HEAD_WIDTH = 64


def count_blocks(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of blocks `prefix<N>.` in a state dict (N = 0, 1, ...)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := pattern.match(k))})


def heads_of(width: int, source: str | Path) -> int:
    if width % HEAD_WIDTH:
        raise WeightsFormatError(f"{source}: width {width} is not a multiple of the {HEAD_WIDTH}-wide attention heads")
    return width // HEAD_WIDTH


def load_state_dict(path: str | Path, *, nested_key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .pth / .pt / .bin file; `nested_key` picks a sub-dict (e.g. ViCLIP's 'model')."""
    p = Path(path)
    if not p.is_file():
        raise MissingWeightsError(f"{p}: weight file not found; pass the right path or set LAYERFLOW_WEIGHTS")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError or zipfile errors for unsafe files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsFormatError(
                f"{p}: cannot be read as plain tensors with weights_only=True ({first}); "
                f"convert it to .safetensors (TorchScript archives are not accepted)"
            ) from exc
    if nested_key is not None and nested_key in sd and isinstance(sd[nested_key], dict):
        sd = sd[nested_key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsFormatError(f"{p}: expected a flat mapping of tensor names to tensors")
    return sd


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path, what: str) -> None:
    """Strict load whose failure is one line naming the file, the network and a few offending keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape "
                         f"(e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)})")
        raise WeightsFormatError(f"{source}: does not hold {what} weights: {'; '.join(parts)}")
    module.load_state_dict(state_dict, strict=True)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random init that is reproducible and leaves the caller's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
