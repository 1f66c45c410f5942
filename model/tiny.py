"""The `tiny` preset's VAE and text encoder: the real diffusers / transformers classes at a tiny size.

Random weights from a seed, built in-process (nothing is downloaded); the transformer's tiny size lives in
`model.config`. Same code path as the real model, seconds on a CPU: for tests and the demo only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import AutoencoderKLCogVideoX
from transformers import T5Config, T5EncoderModel


@dataclass(frozen=True)
class TinyVAEConfig:
    # Three blocks: the first two halve time (4x, like the real VAE) and the first two halve space (4x).
    block_out_channels: tuple[int, ...] = (8, 8, 8)
    layers_per_block: int = 1
    norm_num_groups: int = 2
    temporal_compression_ratio: int = 4
    sample_height: int = 32
    sample_width: int = 48


@dataclass(frozen=True)
class TinyT5Config:
    d_kv: int = 8
    d_ff: int = 64
    num_layers: int = 2
    num_heads: int = 4
    relative_attention_num_buckets: int = 8
    relative_attention_max_distance: int = 32


def build_tiny_vae(latent_channels: int, seed: int = 0,
                   config: TinyVAEConfig = TinyVAEConfig()) -> AutoencoderKLCogVideoX:
    n = len(config.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLCogVideoX(
            down_block_types=("CogVideoXDownBlock3D",) * n,
            up_block_types=("CogVideoXUpBlock3D",) * n,
            latent_channels=latent_channels,
            **asdict(config),
        )
    return vae.eval()


def build_tiny_text_encoder(
    vocab_size: int, d_model: int, seed: int = 0, config: TinyT5Config = TinyT5Config()
) -> T5EncoderModel:
    """A T5 v1.1-style encoder (gated GELU, untied, like t5-v1_1-xxl) whose output width is `d_model`."""
    t5_config = T5Config(vocab_size=vocab_size, d_model=d_model, feed_forward_proj="gated-gelu",
                         tie_word_embeddings=False, dropout_rate=0.0, **asdict(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(t5_config)
    return model.eval()
