"""Convert the official LayerFlow (SAT) DiT checkpoints to `LayerFlowTransformer`, and check the port.

    layerflow convert sat2ours CKPT OUT_DIR [--name NAME] [--latent-size 60x90] [--base COGVIDEOX_2B_DIR]
    layerflow convert verify-fixture DIR [--tol ABS]
    layerflow convert verify-sampler DIR [--tol ABS] [--noise recorded|seed]

(`python -m model.convert` takes the same arguments.)

Every size is read from the state dict (and from a fixture.json config when one is given): hidden size,
heads (from the q/k LayerNorm width), layers, ranks, text width, time-embedding width, the position table's
length (-> prompts x 226 text slots + latent frames x patches) and which blocks carry LoRA. The official
variant ({rgba, rgb} x {generation, decomposition, fg-conditioned, bg-conditioned}) is detected from what
distinguishes their configs: latent frames (16 RGBA, 17 RGBA conditional, 13 RGB), text length (452 =
decomposition), layer-index embedder vs trained position table; the fg/bg-conditioned pairs differ only in
data, so their names tell them apart.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed
from safetensors import SafetensorError
from safetensors.torch import load_file

from model.config import TEXT_TOKENS_PER_PROMPT, TransformerConfig
from model.numerics import float32_tolerance
from model.sampler_fixture import Noise, SamplerFixtureError, SamplerRun, load_run, parity_checks, read_fixture, replay
from model.transformer import LayerFlowTransformer

CHECKPOINT_PREFIX = "model.diffusion_model."
# Latent size of every released checkpoint (480x720 frames); used when nothing else says otherwise.
DEFAULT_LATENT_SIZE = (60, 90)
QKV = ("to_q", "to_k", "to_v")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says what is wrong and how to fix it."""


# ---- reading ----------------------------------------------------------------------------------------------
def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The DiT weights of an official checkpoint under their bare SAT names (prefix stripped).

    Accepts a .safetensors file, a torch file (.pt/.ckpt/.bin, always loaded with weights_only=True), or a
    SAT/DeepSpeed folder (`latest` + `<iter>/mp_rank_00_model_states.pt`).
    """
    path = Path(path)
    if path.is_dir():
        path = _sat_checkpoint_file(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConversionError(f"{path} is not a valid safetensors file ({exc})") from None
    else:
        raw = _load_torch_checkpoint(path)
    for key in ("module", "state_dict", "model"):
        if isinstance(raw, dict) and key in raw and isinstance(raw[key], dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ConversionError(f"{path} holds no state dict of tensors (found {type(raw).__name__})")
    if any(k.startswith(CHECKPOINT_PREFIX) for k in raw):
        raw = {k[len(CHECKPOINT_PREFIX):]: v for k, v in raw.items() if k.startswith(CHECKPOINT_PREFIX)}
    if "mixins.patch_embed.proj.weight" not in raw:
        raise ConversionError(
            f"{path} is not an official LayerFlow/CogVideoX SAT DiT checkpoint "
            "(no 'mixins.patch_embed.proj.weight', bare or under 'model.diffusion_model.')"
        )
    return raw


def sat_safe_globals() -> list[Any]:
    """The non-container Python objects a SAT/DeepSpeed checkpoint pickles, allowed for `weights_only` loading.

    `save_ds_checkpoint` stores `np.random.get_state()`: a uint32 array, rebuilt through NumPy's
    `_reconstruct`, named `numpy._core.multiarray` by NumPy 2 and `numpy.core.multiarray` by NumPy 1. Everything
    else in that file (DeepSpeed's shapes, config, counters, Python's RNG state) is tensors, torch.Size,
    containers and plain values, which `weights_only` reads without help.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.26
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, "numpy._core.multiarray._reconstruct"), (_reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_torch_checkpoint(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(sat_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ConversionError(
            f"{path} cannot be loaded safely: it holds {_refused_object(exc)}, which an official SAT/DeepSpeed "
            "checkpoint does not; in an environment you trust, save its state dict with safetensors.torch.save_file "
            "and convert that file"
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ConversionError(f"{path} is not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None


def _refused_object(exc: pickle.UnpicklingError) -> str:
    """The object torch's weights-only unpickler refused, out of its many-line message."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(r"but got (<class '[^']+'>)", text)
    return found.group(1) if found else "a Python object besides tensors"


def _sat_checkpoint_file(folder: Path) -> Path:
    latest = folder / "latest"
    if latest.is_file():
        candidate = folder / latest.read_text().strip() / "mp_rank_00_model_states.pt"
        if candidate.is_file():
            return candidate
    found = sorted(folder.glob("*/mp_rank_00_model_states.pt")) or sorted(folder.glob("*.safetensors")) \
        or sorted(folder.glob("*.pt"))
    if not found:
        raise ConversionError(f"no checkpoint in {folder} (expected latest + <iter>/mp_rank_00_model_states.pt)")
    return found[-1]


# ---- what the checkpoint is -------------------------------------------------------------------------------
@dataclass
class Variant:
    colour: str  # "rgba" or "rgb"
    task: str | None  # generate / decompose / fg_conditioned / bg_conditioned; None when undecidable
    candidates: list[str]
    evidence: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        hub = {"generate": "multi-layer-generation", "decompose": "multi-layer-decomposition",
               "fg_conditioned": "foreground-conditioned-generation",
               "bg_conditioned": "background-conditioned-generation"}
        return (f"{hub[self.task]}-{self.colour}" if self.task
                else f"unresolved({'|'.join(self.candidates)})-{self.colour}")


_NAME_HINTS = (
    ("fg_conditioned", r"fg2bg|foreground[-_]conditioned"),
    ("bg_conditioned", r"bg2fg|background[-_]conditioned"),
    ("decompose", r"(^|[^a-z])seg([^a-z]|$)|decompos"),
    ("generate", r"(^|[^a-z])gen([^a-z]|$)|multi[-_]layer[-_]generation"),
)


def task_from_name(name: str | None) -> str | None:
    if not name:
        return None
    lowered = name.lower()
    for task, pattern in _NAME_HINTS:
        if re.search(pattern, lowered):
            return task
    return None


def _layer_count(sd: dict[str, torch.Tensor]) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    if not ids or ids != set(range(max(ids) + 1)):
        raise ConversionError(f"transformer.layers.* are missing or not contiguous (found {sorted(ids)[:8]}...)")
    return len(ids)


def _lora_layers(sd: dict[str, torch.Tensor], num_layers: int) -> list[int]:
    return [i for i in range(num_layers) if f"transformer.layers.{i}.attention.dense.matrix_A.0" in sd]


def infer_config(sd: dict[str, torch.Tensor], official_config: dict[str, Any] | None = None,
                 name: str | None = None, latent_size: tuple[int, int] | None = None,
                 layernorm_eps: dict[str, float] | None = None) -> tuple[TransformerConfig, Variant]:
    """Read every size from the state dict; `official_config` (a SAT network config) only settles geometry."""
    params = (official_config or {}).get("params", official_config or {})
    pos_params = params.get("modules", {}).get("pos_embed_config", {}).get("params", {})
    try:
        proj = sd["mixins.patch_embed.proj.weight"]
        hidden, in_channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
        text_dim = sd["mixins.patch_embed.text_proj.weight"].shape[1]
        time_embed_dim = sd["time_embed.0.weight"].shape[0]
        head_dim = sd["mixins.adaln_layer.query_layernorm_list.0.weight"].shape[0]
        out_channels = sd["mixins.final_layer.linear.weight"].shape[0] // (patch * patch)
        table = sd["mixins.pos_embed.pos_embedding"]
    except KeyError as exc:
        raise ConversionError(f"checkpoint lacks {exc.args[0]!r}; "
                              "it is not a complete official DiT state dict") from None
    num_layers = _layer_count(sd)
    lora = _lora_layers(sd, num_layers)
    motion_rank = sd[f"transformer.layers.{lora[0]}.attention.dense.matrix_A.0"].shape[0] if lora else 0
    content_rank = sd[f"transformer.layers.{lora[0]}.attention.dense.matrix_C.0"].shape[0] \
        if lora and f"transformer.layers.{lora[0]}.attention.dense.matrix_C.0" in sd else 0

    if latent_size is None and "latent_height" in params:
        latent_size = (int(params["latent_height"]), int(params["latent_width"]))
    height, width = latent_size or DEFAULT_LATENT_SIZE
    per_frame = (height // patch) * (width // patch)
    text_len = int(pos_params["text_length"]) if "text_length" in pos_params else None
    if text_len is None:
        text_len = next((n * TEXT_TOKENS_PER_PROMPT for n in (3, 2, 1)
                         if (table.shape[1] - n * TEXT_TOKENS_PER_PROMPT) % per_frame == 0), None)
    if text_len is None or (table.shape[1] - text_len) % per_frame or text_len % TEXT_TOKENS_PER_PROMPT:
        raise ConversionError(
            f"the position table ({table.shape[1]} slots) does not split into 226-token prompts plus frames of "
            f"{height}x{width} latents; pass --latent-size HxW (or the config) of the checkpoint"
        )
    frames = (table.shape[1] - text_len) // per_frame
    has_txt_embedder = "mixins.pos_embed.txt_embedder.0.weight" in sd

    cfg = TransformerConfig(
        num_layers=num_layers, num_attention_heads=hidden // head_dim, attention_head_dim=head_dim,
        in_channels=in_channels, out_channels=out_channels, patch_size=patch, text_embed_dim=text_dim,
        time_embed_dim=time_embed_dim, sample_height=height, sample_width=width, sample_frames=frames,
        temporal_compression_ratio=int(params.get("time_compressed_rate", 4)),
        num_prompts=text_len // TEXT_TOKENS_PER_PROMPT, layer_embedding=has_txt_embedder,
        motion_rank=motion_rank, content_rank=content_rank,
        lora_alpha=float(params.get("modules", {}).get("lora_config", {}).get("params", {}).get("lora_alpha", 1.0)),
        lora_blocks=tuple(lora) if lora else "none",
        spatial_interpolation_scale=float(pos_params.get("height_interpolation", 1.875)),
    )
    eps = layernorm_eps or {}
    cfg = cfg.replace(
        norm_eps=float(eps.get("transformer.layers.*.input_layernorm", cfg.norm_eps)),
        final_norm_eps=float(eps.get("mixins.final_layer.norm_final", cfg.final_norm_eps)),
    )
    learned = _is_learned_table(table, cfg, pos_params)
    cfg = cfg.replace(learned_pos_embedding=learned)
    return cfg, detect_variant(cfg, name)


def _is_learned_table(table: torch.Tensor, cfg: TransformerConfig, pos_params: dict[str, Any]) -> bool:
    if "learnable_pos_embed" in pos_params:
        return bool(pos_params["learnable_pos_embed"])
    # A frozen table is exactly the sin-cos one with zero text slots; a trained one has moved away from it.
    reference = CogVideoXPatchEmbed(
        patch_size=cfg.patch_size, in_channels=1, embed_dim=cfg.hidden_size, text_embed_dim=1,
        sample_width=cfg.sample_width, sample_height=cfg.sample_height, sample_frames=cfg.sample_frames_pixel,
        temporal_compression_ratio=cfg.temporal_compression_ratio, max_text_seq_length=cfg.max_text_seq_length,
        spatial_interpolation_scale=cfg.spatial_interpolation_scale,
        temporal_interpolation_scale=cfg.temporal_interpolation_scale, use_learned_positional_embeddings=False,
    ).pos_embedding
    if reference.shape != table.shape:
        return True
    return not torch.allclose(table.float(), reference.float(), atol=1e-4)


def detect_variant(cfg: TransformerConfig, name: str | None = None) -> Variant:
    evidence = [f"{cfg.sample_frames} latent frames", f"{cfg.num_prompts} prompts",
                "layer-index embedder" if cfg.layer_embedding else
                ("trained position table" if cfg.learned_pos_embedding else "fixed sin-cos table")]
    colour = "rgb" if cfg.sample_frames % 4 == 1 and cfg.sample_frames <= 13 else "rgba"
    if cfg.num_prompts == 2:
        candidates = ["decompose"]
    elif colour == "rgba":
        candidates = ["fg_conditioned", "bg_conditioned"] if cfg.sample_frames % 4 == 1 else ["generate"]
    else:
        candidates = ["fg_conditioned", "bg_conditioned"] if cfg.learned_pos_embedding else ["generate"]
    hinted = task_from_name(name)
    if hinted is not None:
        evidence.append(f"name {Path(name).name!r} says {hinted}")
        if hinted not in candidates:
            raise ConversionError(
                f"the name {name!r} says {hinted}, but the weights look like {' or '.join(candidates)} "
                f"({', '.join(evidence[:3])}); check that the file is the one you meant"
            )
        candidates = [hinted]
    return Variant(colour, candidates[0] if len(candidates) == 1 else None, candidates, evidence)


# ---- renaming ---------------------------------------------------------------------------------------------
def convert_state_dict(sd: dict[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """Official SAT names -> LayerFlowTransformer names; every official key must be used exactly once."""
    src = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        try:
            return src.pop(key)
        except KeyError:
            raise ConversionError(f"checkpoint lacks {key!r}") from None

    def move(old: str, new: str) -> None:
        for suffix in (".weight", ".bias"):
            out[new + suffix] = take(old + suffix)

    move("mixins.patch_embed.proj", "patch_embed.proj")
    move("mixins.patch_embed.text_proj", "patch_embed.text_proj")
    move("time_embed.0", "time_embedding.linear_1")
    move("time_embed.2", "time_embedding.linear_2")
    table = take("mixins.pos_embed.pos_embedding")
    if cfg.learned_pos_embedding:
        out["pos_embedding"] = table
    if cfg.layer_embedding:
        move("mixins.pos_embed.txt_embedder.0", "layer_embedder.0")
        move("mixins.pos_embed.txt_embedder.1", "layer_embedder.1")
    move("transformer.final_layernorm", "norm_final")
    move("mixins.final_layer.norm_final", "norm_out.norm")
    move("mixins.final_layer.adaLN_modulation.1", "norm_out.linear")
    move("mixins.final_layer.linear", "proj_out")

    lora_blocks = set(cfg.lora_block_indices())
    for i in range(cfg.num_layers):
        old, new = f"transformer.layers.{i}", f"transformer_blocks.{i}"
        move(f"{old}.input_layernorm", f"{new}.norm1.norm")
        move(f"{old}.post_attention_layernorm", f"{new}.norm2.norm")
        move(f"{old}.mlp.dense_h_to_4h", f"{new}.ff.net.0.proj")
        move(f"{old}.mlp.dense_4h_to_h", f"{new}.ff.net.2")
        move(f"mixins.adaln_layer.query_layernorm_list.{i}", f"{new}.attn1.norm_q")
        move(f"mixins.adaln_layer.key_layernorm_list.{i}", f"{new}.attn1.norm_k")
        # Official 12 chunks: video (shift, scale, gate) msa, mlp, then text msa, mlp. diffusers' norm1 takes
        # (shift, scale, gate, enc_shift, enc_scale, enc_gate) of the attention, norm2 the same of the MLP.
        for suffix in (".weight", ".bias"):
            c = take(f"mixins.adaln_layer.adaLN_modulations.{i}.1{suffix}").chunk(12, dim=0)
            out[f"{new}.norm1.linear{suffix}"] = torch.cat([c[0], c[1], c[2], c[6], c[7], c[8]])
            out[f"{new}.norm2.linear{suffix}"] = torch.cat([c[3], c[4], c[5], c[9], c[10], c[11]])
        qkv = f"{old}.attention.query_key_value"
        dense = f"{old}.attention.dense"
        base_qkv = qkv + (".original" if f"{qkv}.original.weight" in src else "")
        base_dense = dense + (".original" if f"{dense}.original.weight" in src else "")
        for suffix in (".weight", ".bias"):
            for name, part in zip(QKV, take(base_qkv + suffix).chunk(3, dim=0)):
                out[f"{new}.attn1.{name}{suffix}"] = part
        move(base_dense, f"{new}.attn1.to_out.0")
        for official, ours in (("A", "motion_lora.down"), ("B", "motion_lora.up"),
                               ("C", "content_lora.down"), ("D", "content_lora.up")):
            qkv_parts = [k for k in (f"{qkv}.matrix_{official}.{j}" for j in range(3)) if k in src]
            dense_part = f"{dense}.matrix_{official}.0"
            if i not in lora_blocks:
                for key in (*qkv_parts, dense_part):
                    src.pop(key, None)  # pruned: all-zero updates
                continue
            rank = cfg.motion_rank if official in "AB" else cfg.content_rank
            if not rank:
                continue
            for j, name in enumerate(QKV):
                out[f"{new}.attn1.{name}.{ours}.weight"] = take(f"{qkv}.matrix_{official}.{j}")
            out[f"{new}.attn1.to_out.0.{ours}.weight"] = take(dense_part)
    if src:
        raise ConversionError(f"{len(src)} checkpoint tensor(s) have no place in the model, e.g. {sorted(src)[:3]}")
    return out


def zero_lora_layers(sd: dict[str, torch.Tensor], layers: list[int]) -> list[int]:
    """Layers whose LoRA up-matrices (matrix_B and matrix_D) are all zero: their LoRA changes nothing."""
    def all_zero(i: int) -> bool:
        keys = [k for k in sd if k.startswith(f"transformer.layers.{i}.attention.") and re.search(r"matrix_[BD]\.", k)]
        return all(not torch.any(sd[k]) for k in keys)
    return [i for i in layers if all_zero(i)]


def build_model(sd: dict[str, torch.Tensor], cfg: TransformerConfig) -> LayerFlowTransformer:
    model = LayerFlowTransformer.from_config(cfg)
    converted = convert_state_dict(sd, cfg)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ConversionError(f"converted weights do not fit the model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    return model.eval()


def convert_checkpoint(path: str | Path, *, name: str | None = None, latent_size: tuple[int, int] | None = None,
                       official_config: dict[str, Any] | None = None,
                       prune_zero_lora: bool = True) -> tuple[LayerFlowTransformer, Variant]:
    sd = load_official_state_dict(path)
    cfg, variant = infer_config(sd, official_config, name or str(path), latent_size)
    if prune_zero_lora and cfg.has_lora:
        dead = zero_lora_layers(sd, list(cfg.lora_block_indices()))
        if dead:
            keep = tuple(i for i in cfg.lora_block_indices() if i not in dead)
            cfg = cfg.replace(lora_blocks=keep or "none")
            variant.evidence.append(f"LoRA of layers {dead} is all-zero and dropped")
    return build_model(sd, cfg), variant


# ---- official forward conventions ---------------------------------------------------------------------------
def official_cond_indices(task_idx: int | None, n_noisy: int, n_cond: int) -> list[int] | None:
    """Where the official DiT puts clean latents: task 1 in front, task 2 before the last n_cond noisy
    latents (bg between fg/alpha and blend), task 3 (and no task) at the end."""
    if task_idx == 1:
        return None
    start = n_noisy - n_cond if task_idx == 2 else n_noisy
    return list(range(start, start + n_cond))


def official_inputs(inputs: dict[str, torch.Tensor], task_idx: int | None) -> dict[str, Any]:
    """Fixture / SAT call arguments -> LayerFlowTransformer.forward arguments."""
    x = inputs["x"]
    batch = x.shape[0]
    context = inputs["context"]
    if context.shape[0] != batch:  # "(b p) n d": prompts of one sample are consecutive rows
        context = context.reshape(batch, -1, context.shape[-1])
    args: dict[str, Any] = {"hidden_states": x, "encoder_hidden_states": context, "timestep": inputs["timesteps"],
                            "motion_scale": inputs.get("scale", torch.ones(batch))}
    cond = inputs.get("cond_input")
    if cond is not None:
        args["cond_latents"] = cond
        args["cond_indices"] = official_cond_indices(task_idx, x.shape[1], cond.shape[1])
    return args


def official_scale(value: Any, batch: int) -> torch.Tensor | float | None:
    """The SAT `scale` kwarg: a python int is broadcast; 0 is what inference passes (motion LoRA off)."""
    if isinstance(value, (int, float)):
        return None if value == 0 else float(value)
    return torch.tensor(value, dtype=torch.float32).reshape(batch)


# ---- fixture verification ---------------------------------------------------------------------------------
# A float32 port that runs the official maths in another order differs from it by rounding alone, and rounding
# scales with the magnitude of the values: MKL's AVX-512 kernels, which sum in another order than AVX2 ones,
# put the fixture's outputs (magnitude ~4-7) 1.1e-5 away, ~20 roundings; 64 leaves a margin of 3. A wrong weight
# or formula misses by orders of magnitude more.
PARITY_ULPS = 64


def parity_tolerance(reference: torch.Tensor, ulps: float = PARITY_ULPS) -> float:
    """Allowed max |ours - reference|: `ulps` float32 roundings of the reference's largest magnitude (>= 1)."""
    return float32_tolerance(reference, ulps)


def verify_fixture(folder: str | Path, tol: float | None = None, out: TextIO | None = None) -> bool:
    """Print max |ours - official| for every output, variant and intermediate in `folder`; True if all pass.

    `tol`: one absolute tolerance for every check; None: `parity_tolerance` of each reference.
    """
    out = out or sys.stdout
    folder = Path(folder)
    meta_path = folder / "fixture.json"
    if not meta_path.is_file():
        raise ConversionError(f"{folder} has no fixture.json; "
                              "a fixture folder holds fixture.json and <name>_*.safetensors")
    meta = json.loads(meta_path.read_text())
    runs = sorted(p.name[: -len("_state_dict.safetensors")] for p in folder.glob("*_state_dict.safetensors"))
    if not runs:
        raise ConversionError(f"{folder} has no <name>_state_dict.safetensors")
    ok = True
    for run in runs:
        sd = load_official_state_dict(folder / f"{run}_state_dict.safetensors")
        inputs = load_file(str(folder / f"{run}_inputs.safetensors"))
        outputs = load_file(str(folder / f"{run}_outputs.safetensors"))
        official_config = meta.get(f"{run}_config") or meta.get("config")
        extra = meta.get("non_tensor_inputs", {}).get(run, {})
        cfg, variant = infer_config(sd, official_config, run, layernorm_eps=meta.get("layernorm_eps"))
        print(f"[{run}] variant {variant.name} ({'; '.join(variant.evidence)})", file=out)
        model = build_model(sd, cfg)
        args = official_inputs(inputs, extra.get("task_idx"))
        checks: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            prefix = "" if run == "gen" or len(runs) == 1 else f"{run}."
            checks.append((f"{prefix}output" if prefix else "output", model(**args), outputs["output"]))
            checks += _intermediates(model, args, outputs, prefix)
            for key in sorted(k for k in outputs if k.startswith("variant.")):
                spec = meta.get("variants", {}).get(key[len("variant."):], {})
                checks.append((f"{prefix}{key}", _run_variant(model, sd, cfg, args, spec), outputs[key]))
        ok &= report_parity(checks, tol, out)
    rule = f"{tol:g}" if tol is not None else f"{PARITY_ULPS} float32 roundings of each reference's magnitude"
    print(f"fixture {'PASSED' if ok else 'FAILED'} (tolerance {rule})", file=out)
    return ok


def report_parity(checks: list[tuple[str, torch.Tensor, torch.Tensor]], tol: float | None, out: TextIO) -> bool:
    """One line per (label, ours, reference): max |diff|, the allowed difference, ok or FAIL; True if all pass."""
    ok = True
    for label, ours, ref in checks:
        if ours.shape != ref.shape:
            print(f"  {label:<40} shape {list(ours.shape)} != {list(ref.shape)}  FAIL", file=out)
            ok = False
            continue
        diff = (ours.float() - ref.float()).abs().max().item()
        allowed = tol if tol is not None else parity_tolerance(ref)
        ok &= diff <= allowed
        print(f"  {label:<40} max|diff| = {diff:.3e} <= {allowed:.1e}  {'ok' if diff <= allowed else 'FAIL'}", file=out)
    return ok


def _intermediates(model: LayerFlowTransformer, args: dict[str, Any], outputs: dict[str, torch.Tensor],
                   prefix: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    checks = []
    if "intermediate.time_emb" in outputs:
        t = torch.as_tensor(args["timestep"])
        emb = model.time_embedding(model.time_proj(t).to(torch.float32))
        checks.append((f"{prefix}intermediate.time_emb", emb, outputs["intermediate.time_emb"]))
    if "intermediate.pos_plus_txt_embedding" in outputs:
        table = model.pos_embedding if model.layerflow_config.learned_pos_embedding else model.patch_embed.pos_embedding
        table = table.clone()
        if model.layer_embedder is not None:
            text_len = model.layerflow_config.max_text_seq_length
            table[:, :text_len] += model.layer_embeddings()
        ref = outputs["intermediate.pos_plus_txt_embedding"]
        checks.append((f"{prefix}intermediate.pos_plus_txt_embedding", table[:, : ref.shape[1]], ref))
    return checks


def _run_variant(model: LayerFlowTransformer, sd: dict[str, torch.Tensor], cfg: TransformerConfig,
                 args: dict[str, Any], spec: dict[str, Any]) -> torch.Tensor:
    args = dict(args)
    overrides = spec.get("overrides", {})
    if "scale" in overrides:
        args["motion_scale"] = official_scale(overrides["scale"], args["hidden_states"].shape[0])
    zeroed = spec.get("zeroed_keys", [])
    if zeroed:
        unknown = [k for k in zeroed if k not in sd]
        if unknown:
            raise ConversionError(f"variant zeroes keys the state dict does not have: {unknown[:3]}")
        model = build_model({k: torch.zeros_like(v) if k in zeroed else v for k, v in sd.items()}, cfg)
    return model(**args)


# ---- sampler fixture verification (model.sampler_fixture) -------------------------------------------------
def sampler_run(folder: str | Path, name: str) -> SamplerRun:
    """Run `name` of a sat_sampler-layout fixture, its network converted from the run's official state dict."""
    meta = read_fixture(folder)
    run = meta["runs"][name]
    sd = load_official_state_dict(Path(folder) / run["state_dict"])
    cfg, _ = infer_config(sd, run["network_config"], run["task"], layernorm_eps=meta.get("layernorm_eps"))
    return load_run(folder, name, build_model(sd, cfg))


def verify_sampler(folder: str | Path, tol: float | None = None, noise: Noise = "recorded",
                   out: TextIO | None = None) -> bool:
    """Print max |ours - official| after every step of every run in `folder`; True if all are within `tol`
    (None: `parity_tolerance` of each reference)."""
    out = out or sys.stdout
    ok = True
    for name in read_fixture(folder)["runs"]:
        run = sampler_run(folder, name)
        print(f"[{name}] task {run.task.value}, {run.num_steps} steps, batch {run.batch}, {noise} noise", file=out)
        ok &= report_parity(parity_checks(run, replay(run, noise)), tol, out)
    rule = f"{tol:g}" if tol is not None else f"{PARITY_ULPS} float32 roundings of each reference's magnitude"
    print(f"sampler fixture {'PASSED' if ok else 'FAILED'} (tolerance {rule})", file=out)
    return ok


# ---- CLI --------------------------------------------------------------------------------------------------
def _latent_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"latent size must look like 60x90, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def sat2ours(ckpt: Path, out_dir: Path, *, name: str | None, latent_size: tuple[int, int] | None,
             config_path: Path | None, prune_zero_lora: bool, dtype: str | None, base: Path | None = None) -> Variant:
    """Convert `ckpt` into `out_dir` (a transformer folder); with `base`, a whole `LayerFlowPipeline` folder."""
    official_config = None
    if config_path is not None:
        data = json.loads(config_path.read_text())
        official_config = data.get("config", data)
    model, variant = convert_checkpoint(ckpt, name=name, latent_size=latent_size, official_config=official_config,
                                        prune_zero_lora=prune_zero_lora)
    if base is not None:
        check_base(base, model.layerflow_config)
    if dtype:
        model = model.to(getattr(torch, dtype))
    transformer_dir = out_dir / "transformer" if base is not None else out_dir
    model.save_pretrained(str(transformer_dir), safe_serialization=True)
    report = {"source": str(ckpt), "variant": variant.name, **asdict(variant),
              "layerflow_config": model.layerflow_config.to_dict()}
    (transformer_dir / "conversion.json").write_text(json.dumps(report, indent=1))
    if base is not None:
        assemble_pipeline(out_dir, base)
    return variant


# ---- a pipeline folder from a converted transformer and the CogVideoX-2B release ----------------------------
# What the official checkpoints leave to CogVideoX-2B (THUDM/CogVideoX-2b, diffusers layout): they fine-tune only
# the DiT, and the official code loads this VAE, T5 and tokenizer.
BASE_PARTS = ("vae", "text_encoder", "tokenizer")


def check_base(base: Path, cfg: TransformerConfig) -> None:
    """`base` holds the parts a LayerFlow pipeline takes from CogVideoX-2B, at the sizes the checkpoint reads."""
    missing = [p for p in ("vae/config.json", "text_encoder/config.json", "tokenizer") if not (base / p).exists()]
    if missing:
        raise ConversionError(f"--base {base} lacks {', '.join(missing)}; give the local CogVideoX-2B diffusers folder "
                              "(hub THUDM/CogVideoX-2b)")
    t5_width = json.loads((base / "text_encoder" / "config.json").read_text()).get("d_model")
    channels = json.loads((base / "vae" / "config.json").read_text()).get("latent_channels")
    if (t5_width, channels) != (cfg.text_embed_dim, cfg.in_channels):
        raise ConversionError(f"--base {base} has T5 width {t5_width} and {channels} latent channels, the checkpoint "
                              f"reads {cfg.text_embed_dim} and {cfg.in_channels}; give the CogVideoX-2B folder")


def assemble_pipeline(out_dir: Path, base: Path) -> None:
    """Beside `out_dir/transformer`: the base's VAE, T5 and tokenizer, and the official sampler
    (`model.official_sampler`), which `LayerFlowPipeline.from_pretrained` then selects."""
    from model.schedule import make_scheduler

    for part in BASE_PARTS:
        shutil.copytree(base / part, out_dir / part, copy_function=_link_or_copy, dirs_exist_ok=True)
    make_scheduler("official").save_pretrained(out_dir / "scheduler")


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link (the T5 alone is 9.5 GB), or a copy where the file system cannot link."""
    # A rerun replaces its earlier link: copying onto it would write into the base's own file.
    Path(dst).unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


EXAMPLES = """examples:
  layerflow convert sat2ours $LAYERFLOW_WEIGHTS/layerflow/multi-layer-generation-rgba \\
      $LAYERFLOW_WEIGHTS/layerflow-generation --base $LAYERFLOW_WEIGHTS/cogvideox-2b   # a whole pipeline folder
  layerflow convert sat2ours CKPT OUT_DIR --name foreground-conditioned-generation-rgba   # the DiT alone
  layerflow convert verify-fixture ../shared/reference/sat_tiny                          # parity: official network
  layerflow convert verify-sampler ../shared/reference/sat_sampler                       # parity: official sampling
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layerflow convert", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify-fixture", help="run our model on a sat_tiny-layout fixture and compare")
    v.add_argument("folder", type=Path)
    v.add_argument("--tol", type=float, help="absolute tolerance (default: 64 float32 roundings of each "
                   "reference's largest magnitude)")
    s = sub.add_parser("verify-sampler", help="sample a sat_sampler-layout fixture's runs with our pipeline and "
                       "compare the latents after every step")
    s.add_argument("folder", type=Path)
    s.add_argument("--tol", type=float, help="absolute tolerance (default: 64 float32 roundings of each "
                   "reference's largest magnitude)")
    s.add_argument("--noise", choices=("recorded", "seed"), default="recorded",
                   help="recorded: the fixture's initial latents and per-step noise; seed: drawn from a generator "
                   "seeded as the official run's global RNG")
    c = sub.add_parser("sat2ours", help="convert an official checkpoint to a LayerFlowTransformer folder")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("out_dir", type=Path)
    c.add_argument("--name", help="checkpoint name (e.g. the hub folder) when the path does not say the task")
    c.add_argument("--latent-size", type=_latent_size, help="latent HxW the position table was built for (60x90)")
    c.add_argument("--config", type=Path, help="JSON with the official network config (as in fixture.json)")
    c.add_argument("--keep-zero-lora", action="store_true", help="keep LoRAs whose up-matrices are all zero")
    c.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    c.add_argument("--base", type=Path, help="local CogVideoX-2B diffusers folder: write a whole pipeline folder "
                   "(transformer/ converted; vae/, text_encoder/, tokenizer/ linked from it; "
                   "scheduler/ the official sampler)")
    args = parser.parse_args(argv)
    try:
        if args.command == "verify-fixture":
            return 0 if verify_fixture(args.folder, args.tol) else 1
        if args.command == "verify-sampler":
            return 0 if verify_sampler(args.folder, args.tol, args.noise) else 1
        variant = sat2ours(args.checkpoint, args.out_dir, name=args.name, latent_size=args.latent_size,
                           config_path=args.config, prune_zero_lora=not args.keep_zero_lora,
                           dtype=args.dtype, base=args.base)
        print(f"converted {args.checkpoint} ({variant.name}; {'; '.join(variant.evidence)}) -> {args.out_dir}")
        return 0
    except (ConversionError, SamplerFixtureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
