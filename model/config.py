"""Typed size presets of the layer-aware CogVideoX transformer.

`cogvideox-2b` is the released model's size; `tiny` is the same architecture shrunk so a forward pass takes
milliseconds on a CPU (tests and the demo). Spatial and temporal sizes are in latent units.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# The official code hard-codes 226 T5 tokens per prompt (CogVideoX's text length).
TEXT_TOKENS_PER_PROMPT = 226

LoraBlocks = str | tuple[int, ...]


class ConfigError(ValueError):
    """A transformer configuration that cannot be built; the message names the field and the fix."""


@dataclass(frozen=True)
class TransformerConfig:
    num_layers: int = 30
    num_attention_heads: int = 30
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    text_embed_dim: int = 4096
    time_embed_dim: int = 512
    # Latent geometry the position table is built for (other sizes work; the table is then rebuilt per call).
    # sample_frames counts ALL latent frames the transformer sees, clean condition latents included.
    sample_height: int = 60
    sample_width: int = 90
    sample_frames: int = 16
    temporal_compression_ratio: int = 4
    text_tokens_per_prompt: int = TEXT_TOKENS_PER_PROMPT
    num_prompts: int = 3
    # Layer-index embedder Linear(1, D) -> LayerNorm(D) added to each prompt's text tokens (RGBA checkpoints).
    layer_embedding: bool = True
    # A trained absolute position table replaces the fixed 3D sin-cos one (RGB and decomposition checkpoints).
    learned_pos_embedding: bool = False
    motion_rank: int = 8
    content_rank: int = 256
    lora_alpha: float = 1.0
    # Which blocks carry the dual LoRA: "mod6" (index % 6 == 5, the official 1/6 rule), "all", "none",
    # or explicit block indices.
    lora_blocks: LoraBlocks = "mod6"
    norm_eps: float = 1e-5
    # The official final-layer LayerNorm uses 1e-6 (diffusers' stock model uses norm_eps there).
    final_norm_eps: float = 1e-6
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.lora_blocks, list):
            object.__setattr__(self, "lora_blocks", tuple(self.lora_blocks))
        positive = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                    "patch_size", "text_embed_dim", "time_embed_dim", "sample_height", "sample_width",
                    "sample_frames", "temporal_compression_ratio", "text_tokens_per_prompt", "num_prompts")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"TransformerConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.motion_rank < 0 or self.content_rank < 0:
            raise ConfigError("LoRA ranks must be >= 0 (0 means that LoRA is absent)")
        if self.sample_height % self.patch_size or self.sample_width % self.patch_size:
            raise ConfigError(
                f"sample_height/width ({self.sample_height}x{self.sample_width}) must be multiples of "
                f"patch_size {self.patch_size}"
            )
        self.lora_block_indices()  # validates the rule

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def max_text_seq_length(self) -> int:
        return self.num_prompts * self.text_tokens_per_prompt

    @property
    def sample_frames_pixel(self) -> int:
        """The pixel-frame count diffusers' position table is parameterised by: (latents - 1) * ratio + 1."""
        return (self.sample_frames - 1) * self.temporal_compression_ratio + 1

    @property
    def video_tokens(self) -> int:
        return self.sample_frames * (self.sample_height // self.patch_size) * (self.sample_width // self.patch_size)

    @property
    def has_lora(self) -> bool:
        return bool(self.lora_block_indices()) and (self.motion_rank > 0 or self.content_rank > 0)

    def lora_block_indices(self) -> tuple[int, ...]:
        rule = self.lora_blocks
        if isinstance(rule, str):
            if rule == "mod6":
                return tuple(i for i in range(self.num_layers) if i % 6 == 5)
            if rule == "all":
                return tuple(range(self.num_layers))
            if rule == "none":
                return ()
            raise ConfigError(f"unknown lora_blocks rule {rule!r}; "
                              "use 'mod6', 'all', 'none' or a list of block indices")
        indices = tuple(sorted({int(i) for i in rule}))
        bad = [i for i in indices if not 0 <= i < self.num_layers]
        if bad:
            raise ConfigError(f"lora_blocks {bad} out of range for {self.num_layers} layers "
                              f"(valid: 0..{self.num_layers - 1})")
        return indices

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(out["lora_blocks"], tuple):
            out["lora_blocks"] = list(out["lora_blocks"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TransformerConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TransformerConfig:
        return replace(self, **changes)


PRESETS: dict[str, TransformerConfig] = {
    "cogvideox-2b": TransformerConfig(),
    # Six blocks so the official "mod6" rule still selects one block (index 5); 8x12 latents (the tiny VAE's
    # 32x48 frames) keep a forward pass in milliseconds. 32 T5 tokens per prompt hold the synthetic world's
    # longest indexed caption at K = 2 (30 tiny-tokenizer tokens; 41 at K = 3, truncated): text is most of the
    # sequence (3 x 32 against 4 x 24 video tokens at K = 1), so its length sets the step's cost. A training
    # forward and backward at batch 8 on one thread took 204 ms at 64 tokens per prompt, 126 ms at 32.
    "tiny": TransformerConfig(
        num_layers=6,
        num_attention_heads=4,
        attention_head_dim=16,
        text_embed_dim=32,
        time_embed_dim=32,
        sample_height=8,
        sample_width=12,
        sample_frames=16,
        text_tokens_per_prompt=32,
        # The 2B's 1.875 spreads its 30 x 45 token grid over ~24 rad of the fastest sin-cos wave; on the tiny 4 x 6
        # grid it leaves positions nearly alike, and a never-pretrained model is slow to match a layer's token to
        # the blend's at the same place (decomposition's alpha IoU after 1200 steps: 0.48 at 1.875, 0.64 at 0.25).
        spatial_interpolation_scale=0.25,
        motion_rank=2,
        content_rank=4,
    ),
}


# The tiny world's model (`infra/toyworld.py`: its stage-0 base, the benchmark, the demo): `tiny` at twice the width.
# At 64 a token is exactly as wide as the 2 x 2 x 16 latent patch it carries, and the matte does not form: from random
# weights, 1500 decomposition steps at batch 8 reached held-out alpha IoU 0.18 at width 64 and 0.50 at 128 (bg in
# the object 21.2 / 22.9 dB), a step taking 2.2x as long (BENCHMARKS.md, "Recipe choices and their effect").
PRESETS["tiny-world"] = PRESETS["tiny"].replace(attention_head_dim=32)
TINY_PRESETS = ("tiny", "tiny-world")  # built in-process from a seed; every other preset loads a weights folder


def get_preset(name: str, **overrides: Any) -> TransformerConfig:
    try:
        config = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown transformer preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}") from None
    return config.replace(**overrides) if overrides else config
