"""The latent cache: VAE latents and T5 embeddings of every sample, written by `python -m trainer.precompute`.

A cache folder mirrors a shard directory, one tar per data shard (same name), one entry per sample key:
    <key>.cache.safetensors   latents [T', C, h, w] (plain layout), latents_dup (duplicated first frame),
                              cond_<task> [Tc, C, h, w] per conditional task: its condition latents as the
                              pipeline encodes them (`SequenceLayout.pack_conditions`),
                              prompt_embeds [3 * tokens per prompt, d] (fg, bg, blend prompts, index-prefixed)
    <key>.json                key, origin, kind, captions
and `cache.json`, written last: the config hash and what it hashes (the VAE's and T5's identity, frames, size,
static framing). A run whose settings hash differently refuses the cache: its latents would be wrong.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.config import DataConfig, TrainConfigError

CACHE_META = "cache.json"
CACHE_FORMAT = "layerflow-latent-cache-v2"  # v2: cond_<task> latents
DEFAULT_CACHE_DIR = "latent_cache"
TENSORS_MEMBER = "cache.safetensors"


class StaleCacheError(TrainConfigError):
    """A latent cache computed with other encoders or framing than the run's."""


def model_fingerprint(model: nn.Module) -> str:
    """Identity of a frozen encoder: its class, config and a sample of every weight (cheap even for T5-XXL)."""
    h = hashlib.blake2b(digest_size=8)
    config = getattr(model, "config", {})
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    # Private keys are bookkeeping (diffusers' `_use_default_values` lists a set, in per-process order).
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    h.update(type(model).__name__.encode())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        head = tensor.detach().flatten()[:64].float().cpu().numpy()
        h.update(f"{name}{tuple(tensor.shape)}".encode() + head.tobytes())
    return h.hexdigest()


def data_parts(cfg: DataConfig, static_videos: bool) -> dict[str, Any]:
    """What of the data settings the cached latents depend on."""
    return {"frames_per_layer": cfg.frames_per_layer, "height": cfg.height, "width": cfg.width,
            "static_videos": static_videos}


def encoder_parts(vae: nn.Module, text_encoder: nn.Module, text_tokens: int) -> dict[str, Any]:
    """What of the encoders the cached tensors depend on; `text_tokens`: T5 tokens per prompt."""
    return {"vae": model_fingerprint(vae), "text_encoder": model_fingerprint(text_encoder),
            "text_tokens_per_prompt": text_tokens}


def config_hash(parts: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=8).hexdigest()


def resolve_cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache) if cfg.cache else Path(cfg.shards) / DEFAULT_CACHE_DIR


@dataclass(frozen=True)
class LatentCache:
    root: Path
    parts: dict[str, Any]
    config_hash: str

    @classmethod
    def open(cls, cfg: DataConfig) -> LatentCache | None:
        """The configured cache; None when the default location holds none (train from pixels)."""
        root = resolve_cache_dir(cfg)
        meta_path = root / CACHE_META
        if not meta_path.is_file():
            if cfg.cache:
                raise FileNotFoundError(f"data.cache={root} holds no {CACHE_META}; run python -m trainer.precompute "
                                        "with the same config first, or drop data.cache")
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise StaleCacheError(f"{root}: cache format {meta.get('format')!r}, expected {CACHE_FORMAT!r}; "
                                  "rerun python -m trainer.precompute")
        return cls(root, meta["parts"], meta["config_hash"])

    def check(self, expected: dict[str, Any]) -> None:
        """Refuse the cache if any of `expected` (a subset of the hashed parts) differs from what it was made with."""
        differ = [k for k, v in expected.items() if self.parts.get(k) != v]
        if differ:
            wanted = {**self.parts, **expected}
            raise StaleCacheError(
                f"stale latent cache {self.root} (config hash {self.config_hash}, this run {config_hash(wanted)}): "
                + ", ".join(f"{k} was {self.parts.get(k)!r}, now {expected[k]!r}" for k in differ)
                + "; rerun python -m trainer.precompute with this config or delete the cache")

    def urls(self, data_urls: list[str]) -> list[str]:
        """The cache shards standing in for `data_urls`; all must exist."""
        urls = [self.root / Path(u).name for u in data_urls]
        missing = [u.name for u in urls if not u.is_file()]
        if missing:
            raise StaleCacheError(f"latent cache {self.root} lacks {len(missing)} shard(s) of the data "
                                  f"(e.g. {missing[0]}); rerun python -m trainer.precompute")
        return [str(u) for u in urls]


def cond_latents_name(task) -> str:
    """The cache member of a conditional task's condition latents."""
    from model.layout import Task

    return f"cond_{Task.parse(task).value}"


def encode_examples(examples: list[tuple[dict[str, np.ndarray], dict[str, str], torch.Generator]],
                    frames_per_layer: int, vae: nn.Module, text_encoder: nn.Module, tokenizer, text_tokens: int,
                    num_foregrounds: int = 1) -> list[dict[str, torch.Tensor]]:
    """The cache tensors of framed samples with K = `num_foregrounds`, each (layers, captions, generator): a VAE
    posterior sample (x scaling factor) of each packing of the paper's tasks, and T5 of its K + 2 prompts.

    The samples go through the VAE and T5 together (one call per packing: at batch 1 the VAE's conv3d takes its
    slow path on a CPU), and each sample's posterior noise comes from its own generator, so a sample's tensors do
    not depend on the others it is encoded with."""
    from data_engine.schema import captioned_layer_names
    from model.layout import CONDITIONAL_TASKS, SequenceLayout, Task
    from model.text import encode_prompts, indexed_prompts

    def encode(videos: list[torch.Tensor]) -> list[torch.Tensor]:
        x = torch.stack([video.permute(1, 0, 2, 3) for video in videos]).to(vae.dtype)
        posterior = vae.encode(x).latent_dist
        eps = torch.stack([torch.randn(posterior.mean.shape[1:], generator=generator)
                           for *_, generator in examples]).to(posterior.mean)
        latents = (posterior.mean + posterior.std * eps) * vae.config.scaling_factor
        return [sample.permute(1, 0, 2, 3).float() for sample in latents]

    out: list[dict[str, torch.Tensor]] = [{} for _ in examples]
    with torch.no_grad():
        for name, task in (("latents", Task.GENERATE), ("latents_dup", Task.FG_CONDITIONED)):
            layout = SequenceLayout.for_task(task, frames_per_layer, num_foregrounds=num_foregrounds)
            for tensors, latents in zip(out, encode([layout.pack(layers) for layers, *_ in examples])):
                tensors[name] = latents.contiguous()
        for task in CONDITIONAL_TASKS:
            layout = SequenceLayout.for_task(task, frames_per_layer, num_foregrounds=num_foregrounds)
            for tensors, latents in zip(out, encode([layout.pack_conditions(layers) for layers, *_ in examples])):
                tensors[cond_latents_name(task)] = latents[layout.clean_indices].contiguous()
        names = captioned_layer_names(num_foregrounds)
        prompts = [indexed_prompts(captions, names) for _, captions, _ in examples]
        text = encode_prompts(tokenizer, text_encoder, prompts, max_length=text_tokens)
        for tensors, embeds in zip(out, text):
            tensors["prompt_embeds"] = embeds.float().contiguous()
    return out
