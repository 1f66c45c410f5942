"""The layer-aware CogVideoX transformer: diffusers' `CogVideoXTransformer3DModel` plus LayerFlow's additions.

Reused from diffusers as they are: patch embedding (conv patches, T5 projection, fixed 3D sin-cos table),
timestep projection and MLP, the expert-adaLN `CogVideoXBlock`s, the final norms and output projection.
Added, following the official implementation:

- several prompts of 226 T5 tokens each, concatenated along the sequence (3 for generation: fg, bg, blend;
  2 for decomposition: fg, bg);
- the layer-index embedder `Linear(1, D) -> LayerNorm(D)` of the prompt index i, repeated over that prompt's
  tokens and added to the projected text tokens (video tokens get nothing);
- optionally a trained absolute position table in place of the sin-cos one (RGB / decomposition checkpoints);
- clean condition latents joined to the noisy ones inside the forward (sharing their timestep) and removed
  from the output;
- the dual LoRA of `model.lora` on the attention projections of the selected blocks, with a per-sample motion
  scale given to each forward.

The model is a diffusers `ModelMixin`, so `save_pretrained` / `from_pretrained(local_dir)` write and read a
config.json (our `TransformerConfig` under the key "layerflow") and safetensors weights.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.config import TEXT_TOKENS_PER_PROMPT, TransformerConfig
from model.layout import LayoutError, TaskSpec, prompt_slots
from model.lora import DualLoRALinear, apply_dual_lora, lora_layers, motion_scale_applied


class TransformerInputError(ValueError):
    """Inputs whose shapes do not fit the transformer; the message says what was expected."""


SDPA_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


# Stock CogVideoX-2B settings this port relies on; a diffusers checkpoint that differs is refused.
_DIFFUSERS_FIXED = {
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "ofs_embed_dim": None,
    "dropout": 0.0,
    "attention_bias": True,
    "patch_size_t": None,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_elementwise_affine": True,
    "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False,
    "patch_bias": True,
}


def _diffusers_kwargs(cfg: TransformerConfig) -> dict[str, Any]:
    return {
        "num_attention_heads": cfg.num_attention_heads,
        "attention_head_dim": cfg.attention_head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "time_embed_dim": cfg.time_embed_dim,
        "text_embed_dim": cfg.text_embed_dim,
        "num_layers": cfg.num_layers,
        "sample_width": cfg.sample_width,
        "sample_height": cfg.sample_height,
        "sample_frames": cfg.sample_frames_pixel,
        "patch_size": cfg.patch_size,
        "temporal_compression_ratio": cfg.temporal_compression_ratio,
        "max_text_seq_length": cfg.max_text_seq_length,
        "norm_eps": cfg.norm_eps,
        "spatial_interpolation_scale": cfg.spatial_interpolation_scale,
        "temporal_interpolation_scale": cfg.temporal_interpolation_scale,
        **_DIFFUSERS_FIXED,
    }


class LayerFlowTransformer(CogVideoXTransformer3DModel):
    # Regional compilation (diffusers' `compile_repeated_blocks`): the 30 blocks share one compiled graph (two
    # with the LoRA blocks), so compiling takes seconds per graph instead of minutes for the whole model.
    _repeated_blocks = ["CogVideoXBlock"]

    @register_to_config
    def __init__(self, layerflow: dict[str, Any] | None = None) -> None:
        cfg = TransformerConfig.from_dict(layerflow or {})
        # The undecorated base __init__: the config then holds only the "layerflow" entry, which is what
        # from_pretrained passes back to this __init__.
        CogVideoXTransformer3DModel.__init__.__wrapped__(self, **_diffusers_kwargs(cfg))
        self.layerflow_config = cfg
        self.norm_out.norm.eps = cfg.final_norm_eps
        hidden = cfg.hidden_size

        self.layer_embedder = nn.Sequential(nn.Linear(1, hidden), nn.LayerNorm(hidden)) if cfg.layer_embedding else None
        self.layer_embedding_enabled = cfg.layer_embedding
        self.sdpa_backends: list[SDPBackend] | None = None

        if cfg.learned_pos_embedding:
            # Initialised as the official reinit does (sin-cos video part, zero text part), then trained. diffusers
            # computes the sin-cos table in float64; a parameter takes the model's dtype like every other one.
            table = self.patch_embed.pos_embedding.detach().to(self.patch_embed.proj.weight.dtype)
            del self.patch_embed.pos_embedding
            self.patch_embed.use_positional_embeddings = False
            self.pos_embedding = nn.Parameter(table)

        if cfg.has_lora:
            apply_dual_lora(self.transformer_blocks, cfg.lora_block_indices(), motion_rank=cfg.motion_rank,
                            content_rank=cfg.content_rank, lora_alpha=cfg.lora_alpha)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: TransformerConfig | dict[str, Any] | None = None, **kwargs: Any):
        """Build from a `TransformerConfig` (random init), or from a diffusers config dict (from_pretrained)."""
        if isinstance(config, TransformerConfig):
            return cls(layerflow=config.to_dict())
        return super().from_config(config, **kwargs)

    @classmethod
    def from_diffusers(cls, source: str | Path | CogVideoXTransformer3DModel, *, num_prompts: int = 3,
                       sample_frames: int = 16, **overrides: Any) -> LayerFlowTransformer:
        """Start from a diffusers-format CogVideoX-2B transformer (a local directory or a loaded model).

        The base weights are copied unchanged; LoRA `up` matrices start at zero, and the layer embedder's
        LayerNorm affine starts at zero so the embedding is exactly zero at first (the model starts as the base
        model) while its weight and bias still receive gradients. Nothing is downloaded.
        """
        base = _load_diffusers(source) if not isinstance(source, CogVideoXTransformer3DModel) else source
        conf = dict(base.config)
        wrong = {k: conf.get(k) for k, v in _DIFFUSERS_FIXED.items() if conf.get(k, v) != v}
        if wrong:
            raise TransformerInputError(
                f"this diffusers transformer differs from CogVideoX-2B in {wrong}; LayerFlow builds on the 2B model"
            )
        cfg = TransformerConfig(
            num_layers=conf["num_layers"], num_attention_heads=conf["num_attention_heads"],
            attention_head_dim=conf["attention_head_dim"], in_channels=conf["in_channels"],
            out_channels=conf["out_channels"] or conf["in_channels"], patch_size=conf["patch_size"],
            text_embed_dim=conf["text_embed_dim"], time_embed_dim=conf["time_embed_dim"],
            sample_height=conf["sample_height"], sample_width=conf["sample_width"], sample_frames=sample_frames,
            temporal_compression_ratio=conf["temporal_compression_ratio"], num_prompts=num_prompts,
            text_tokens_per_prompt=conf.get("max_text_seq_length", TEXT_TOKENS_PER_PROMPT),
            norm_eps=conf["norm_eps"], spatial_interpolation_scale=conf["spatial_interpolation_scale"],
            temporal_interpolation_scale=conf["temporal_interpolation_scale"],
        ).replace(**overrides)
        model = cls.from_config(cfg).to(dtype=base.dtype)
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        added = [k for k in missing if not (k.startswith(("layer_embedder.", "pos_embedding")) or ".motion_lora." in k
                                            or ".content_lora." in k)]
        if added or unexpected:
            raise TransformerInputError(
                f"diffusers weights do not fit: missing {added[:3]}, unexpected {unexpected[:3]} (is it CogVideoX-2B?)"
            )
        if model.layer_embedder is not None:
            nn.init.zeros_(model.layer_embedder[1].weight)
            nn.init.zeros_(model.layer_embedder[1].bias)
        return model

    # ---- switches -----------------------------------------------------------------------------------------
    def set_layer_embedding(self, enabled: bool) -> None:
        if enabled and self.layer_embedder is None:
            raise TransformerInputError("this model was built without a layer embedder (layer_embedding=False)")
        self.layer_embedding_enabled = bool(enabled)

    def set_lora_enabled(self, enabled: bool) -> None:
        for _, layer in lora_layers(self):
            layer.lora_enabled = bool(enabled)

    def set_layer_features(self, enabled: bool) -> None:
        """Switch layer embedding and all LoRAs together; off, the model computes stock CogVideoX."""
        if self.layer_embedder is not None:
            self.set_layer_embedding(enabled)
        self.set_lora_enabled(enabled)

    def set_attention_backends(self, names: Sequence[str] | None) -> None:
        """Restrict attention to these SDPA kernels, tried in the given order (e.g. ["cudnn", "flash"]); None
        leaves the choice to PyTorch. Attention is two thirds of a full-size step's FLOPs, so the kernel
        decides the step time: on an H100, cuDNN (PyTorch 2.11's own pick there) ran a 50-step generation in
        52 s and flash in 61 s. Gradient-checkpointing recomputation runs outside this choice."""
        if names is None:
            self.sdpa_backends = None
            return
        unknown = [n for n in names if n not in SDPA_BACKENDS]
        if unknown or not names:
            raise TransformerInputError(
                f"attention backends must be a non-empty list of {', '.join(SDPA_BACKENDS)}, got {list(names)}"
            )
        self.sdpa_backends = [SDPA_BACKENDS[n] for n in names]

    def _attention_context(self) -> contextlib.AbstractContextManager:
        if self.sdpa_backends is None:
            return contextlib.nullcontext()
        return sdpa_kernel(self.sdpa_backends, set_priority=True)

    # ---- forward ------------------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        cond_latents: torch.Tensor | None = None,
        motion_scale: torch.Tensor | float | None = None,
        *,
        cond_indices: Sequence[int] | None = None,
        spec: TaskSpec | None = None,
    ) -> torch.Tensor:
        """v-prediction output [B, T, C, H, W] for the noisy latents `hidden_states` [B, T, C, H, W].

        encoder_hidden_states: [B, P*226, text_dim], the P prompts' T5 embeddings concatenated in order: the prompt
        slots of `spec` (`model.layout.prompt_slots`: K + 2 for K foregrounds on a unified model), or without a
        spec the config's `num_prompts` (the paper's K = 1 layout).
        timestep: [B] raw 0..999. cond_latents: [B, Tc, C, H, W] clean latents; by default they go in front
        of the noisy ones; `cond_indices` (Tc positions in the joined sequence) puts them elsewhere, e.g. the
        bg latents in the middle for the official bg-conditioned model. The output holds the noisy frames only.
        motion_scale: [B] per-sample motion-LoRA multiplier; None means 0 (motion LoRA off).
        """
        cfg = self.layerflow_config
        x, noisy = self._join_condition(hidden_states, cond_latents, cond_indices)
        batch, frames, _, height, width = x.shape
        num_prompts = self.num_text_prompts(spec)
        self._check_text(encoder_hidden_states, batch, num_prompts)
        timestep = _per_sample(timestep, batch, "timestep", x.device)
        scale = None if motion_scale is None else _per_sample(motion_scale, batch, "motion_scale", x.device).float()

        emb = self.time_embedding(self.time_proj(timestep).to(dtype=x.dtype))
        tokens = self._embed(encoder_hidden_states, x)
        text_len = encoder_hidden_states.shape[1]
        if cfg.learned_pos_embedding:
            if tokens.shape[1] > self.pos_embedding.shape[1]:
                raise TransformerInputError(
                    f"{frames} latent frames of {height}x{width} exceed the trained position table "
                    f"({cfg.sample_frames} frames of {cfg.sample_height}x{cfg.sample_width})"
                )
            tokens = tokens + self.pos_embedding[:, : tokens.shape[1]].to(tokens.dtype)
        if self.layer_embedder is not None and self.layer_embedding_enabled:
            text = tokens[:, :text_len] + self.layer_embeddings(spec).to(tokens.dtype)
            tokens = torch.cat([text, tokens[:, text_len:]], dim=1)
        tokens = self.embedding_dropout(tokens)
        encoder_states, states = tokens[:, :text_len], tokens[:, text_len:]

        with self._attention_context():
            for block in self.transformer_blocks:
                run = functools.partial(self._run_block, block)
                if torch.is_grad_enabled() and self.gradient_checkpointing:
                    states, encoder_states = self._gradient_checkpointing_func(run, states, encoder_states, emb, scale)
                else:
                    states, encoder_states = run(states, encoder_states, emb, scale)

        states = self.norm_final(states)
        states = self.norm_out(states, temb=emb)
        states = self.proj_out(states)
        p = cfg.patch_size
        out = states.reshape(batch, frames, height // p, width // p, -1, p, p)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        return out if noisy is None else out[:, noisy]

    def _embed(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """diffusers' patch embedding of [text, video]; it sizes the text part of its position table (zeros) by
        the config's prompts, so the prompts of foregrounds beyond the first are projected here and joined after
        the others (text carries no position)."""
        width = self.layerflow_config.max_text_seq_length
        tokens = self.patch_embed(text[:, :width], video)
        if text.shape[1] == width:
            return tokens
        extra = self.patch_embed.text_proj(text[:, width:])
        return torch.cat([tokens[:, :width], extra, tokens[:, width:]], dim=1)

    @staticmethod
    def _run_block(block: nn.Module, states: torch.Tensor, encoder_states: torch.Tensor, emb: torch.Tensor,
                   scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # The scale is entered here, inside what gradient checkpointing recomputes, not around the whole model.
        layers = [m for m in block.modules() if isinstance(m, DualLoRALinear)]
        with motion_scale_applied(layers, scale):
            return block(hidden_states=states, encoder_hidden_states=encoder_states, temb=emb)

    def num_text_prompts(self, spec: TaskSpec | None = None) -> int:
        """The prompts this model reads for `spec` (its prompt slots), or without one the config's. A prompt beyond
        the config's (a foreground past the first) is told apart by its layer index only, so it needs the layer
        embedder."""
        cfg = self.layerflow_config
        if spec is None:
            return cfg.num_prompts
        try:
            count = len(prompt_slots(spec, cfg.num_prompts)[0])
        except LayoutError as exc:
            raise TransformerInputError(str(exc)) from None
        if count > cfg.num_prompts and self.layer_embedder is None:
            raise TransformerInputError(f"{spec.num_foregrounds} foregrounds need a layer embedder to tell their "
                                        "prompts apart; this model was built without one")
        return count

    def layer_embeddings(self, spec: TaskSpec | None = None) -> torch.Tensor:
        """[P*226, D]: the layer-index embedding of prompt i on each of its 226 text slots (P: `spec`'s prompts, K + 2
        for K foregrounds, or the config's)."""
        weight = self.layer_embedder[0].weight
        index = torch.arange(self.num_text_prompts(spec), device=weight.device, dtype=weight.dtype)[:, None]
        return self.layer_embedder(index).repeat_interleave(self.layerflow_config.text_tokens_per_prompt, dim=0)

    def _check_text(self, text: torch.Tensor, batch: int, num_prompts: int) -> None:
        cfg = self.layerflow_config
        want = [batch, num_prompts * cfg.text_tokens_per_prompt, cfg.text_embed_dim]
        if text.ndim != 3 or list(text.shape) != want:
            raise TransformerInputError(
                f"encoder_hidden_states must be {want} ({num_prompts} prompts x {cfg.text_tokens_per_prompt} T5 "
                f"tokens, concatenated; pass spec= for K foregrounds), got {list(text.shape)}"
            )

    def _join_condition(self, noisy: torch.Tensor, cond: torch.Tensor | None,
                        cond_indices: Sequence[int] | None) -> tuple[torch.Tensor, list[int] | slice | None]:
        cfg = self.layerflow_config
        if noisy.ndim != 5 or noisy.shape[2] != cfg.in_channels:
            raise TransformerInputError(
                f"hidden_states must be [B, T, {cfg.in_channels}, H, W] latents, got {list(noisy.shape)}"
            )
        if cond is None:
            if cond_indices is not None:
                raise TransformerInputError("cond_indices given without cond_latents")
            return noisy, None
        if cond.ndim != 5 or cond.shape[0] != noisy.shape[0] or cond.shape[2:] != noisy.shape[2:]:
            raise TransformerInputError(
                f"cond_latents must be [B, Tc, C, H, W] with B, C, H, W of hidden_states {list(noisy.shape)}, "
                f"got {list(cond.shape)}"
            )
        n_cond, total = cond.shape[1], cond.shape[1] + noisy.shape[1]
        cond = cond.to(noisy.dtype)
        positions = list(range(n_cond)) if cond_indices is None else [int(i) for i in cond_indices]
        if len(positions) != n_cond or len(set(positions)) != n_cond or not all(0 <= i < total for i in positions):
            raise TransformerInputError(
                f"cond_indices must be {n_cond} distinct positions in 0..{total - 1}, got {list(cond_indices or [])}"
            )
        if positions == list(range(n_cond)):
            return torch.cat([cond, noisy], dim=1), slice(n_cond, None)
        taken = set(positions)
        noisy_positions = [i for i in range(total) if i not in taken]
        order = sorted(range(total), key=lambda j: (positions + noisy_positions)[j])
        joined = torch.cat([cond, noisy], dim=1)[:, order]
        return joined, noisy_positions


def _per_sample(value: torch.Tensor | float | int, batch: int, name: str, device: torch.device) -> torch.Tensor:
    value = torch.as_tensor(value, device=device)
    if value.ndim == 0:
        value = value.expand(batch)
    if value.ndim != 1 or value.shape[0] != batch:
        raise TransformerInputError(f"{name} must be a scalar or have shape [{batch}], got {list(value.shape)}")
    return value


def _load_diffusers(path: str | Path) -> CogVideoXTransformer3DModel:
    path = Path(path)
    subfolder = "transformer" if (path / "transformer" / "config.json").is_file() else None
    if not ((path / "config.json").is_file() or subfolder):
        raise TransformerInputError(
            f"{path} is not a diffusers transformer folder (no config.json there or in transformer/); "
            "download CogVideoX-2B locally and pass its folder"
        )
    return CogVideoXTransformer3DModel.from_pretrained(str(path), subfolder=subfolder, local_files_only=True)
