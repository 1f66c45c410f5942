"""LayerFlowPipeline: text (and optional layer conditions) -> layered clips (fg over grey, alpha, bg, blend).

A diffusers pipeline over the layer-aware CogVideoX transformer. It follows the official sampling:
- the sub-clips are one time-concatenated video; all of its frames go through the VAE in one joint pass
  (the VAE is causal in time, so encoding sub-clips apart would give other latents);
- condition latents stay clean in their own place in the sequence and share the noisy part's timestep; the
  sampler updates only the noisy latents;
- classifier-free guidance with all-zero text embeddings as the unconditional branch and, by default, the
  official dynamic scale (see `model.schedule.guidance_scale`).
Condition layers are copied into the output as given, so they come back bit-identical.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from data_engine.schema import CAPTIONED_LAYERS, Captions, LayeredClip, is_alpha, sample_key
from model.layout import (
    CONDITION_ARGS,
    TASKS,
    LayoutError,
    SequenceLayout,
    Task,
    TaskSpec,
    prompt_slots,
    task_spec,
)
from model.lora import lora_merged, merge_lora, unmerge_lora
from model.schedule import (DEFAULT_STEPS, GuidanceSchedule, ScheduleError, make_scheduler, sampler_name,
                            scheduler_class)
from model.schedule import guidance_scale as cfg_scale
from model.text import encode_prompts, indexed_prompts, unconditional_embeddings

PIPELINE_FILE = "layerflow_pipeline.json"


class PipelineInputError(ValueError):
    """Pipeline arguments that cannot work; the message names the argument and how to fix it."""


@dataclass
class LayerFlowPipelineOutput(BaseOutput):
    """`clips`: one LayeredClip per sample (empty for output_type="latent"); `latents`: the final full latent
    sequence [B, T_latent, C, h, w] in the transformer's (scaled) latent space."""

    clips: list[LayeredClip]
    latents: torch.Tensor | None = None


Condition = np.ndarray | LayeredClip
MODEL_FOLDERS = ("vae", "text_encoder", "tokenizer", "transformer")


class ModelFolderError(PipelineInputError):
    """A model folder that lacks parts; `missing` names their folders."""

    def __init__(self, root: Path, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"{root}: missing {', '.join(d + '/' for d in missing)}; a LayerFlow model folder holds vae/, "
            "text_encoder/, tokenizer/, transformer/ and optionally scheduler/ (see README: weights)"
        )


def load_model_folder(root: Path, torch_dtype: torch.dtype = torch.float32,
                      load_transformer: Callable[[Path], nn.Module] | None = None) -> dict[str, Any]:
    """The tokenizer, text_encoder, vae and transformer of a local diffusers-layout folder (safetensors only),
    every weight in `torch_dtype`. `load_transformer(folder)` builds the transformer when a LayerFlow one as
    stored will not do (the trainer converts stock CogVideoX); it runs first, so the random initialisation of
    what it adds sees the same generator state however the other parts load."""
    from transformers import T5EncoderModel, T5Tokenizer

    from model.transformer import LayerFlowTransformer

    missing = [d for d in MODEL_FOLDERS if not (root / d).is_dir()]
    if missing:
        raise ModelFolderError(root, missing)
    if load_transformer is None:
        transformer = LayerFlowTransformer.from_pretrained(root / "transformer", use_safetensors=True,
                                                           torch_dtype=torch_dtype)
    else:
        transformer = load_transformer(root / "transformer")
    # The dtype is explicit for every part: transformers loads a model in its stored dtype (the CogVideoX-2B
    # release's T5 is float16) where diffusers loads float32.
    return {
        "transformer": transformer,
        "vae": AutoencoderKLCogVideoX.from_pretrained(root / "vae", use_safetensors=True, torch_dtype=torch_dtype),
        "text_encoder": T5EncoderModel.from_pretrained(root / "text_encoder", use_safetensors=True, dtype=torch_dtype),
        "tokenizer": T5Tokenizer.from_pretrained(root / "tokenizer"),
    }


class LayerFlowPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(self, tokenizer, text_encoder, vae: AutoencoderKLCogVideoX, transformer, scheduler) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        self.vae_scale_factor_spatial = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale_factor_temporal = int(self.vae.config.temporal_compression_ratio)

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        torch_dtype: torch.dtype | None = None,
        sampler: str | None = None,
    ) -> "LayerFlowPipeline":
        """Load from a local folder: vae/, text_encoder/, tokenizer/, transformer/, scheduler/ (safetensors only;
        `python -m model.convert sat2ours CKPT OUT --base COGVIDEOX_2B_DIR` writes one from an official checkpoint,
        whose scheduler/ selects the official sampler). `sampler` ("official", "dpm", "ddim") overrides scheduler/;
        without either, "dpm"."""
        root = Path(path)
        parts = load_model_folder(root, torch_dtype or torch.float32)
        scheduler_dir = root / "scheduler"
        if sampler is None and scheduler_dir.is_dir():
            cls_name = json.loads((scheduler_dir / "scheduler_config.json").read_text()).get("_class_name", "")
            try:
                scheduler = scheduler_class(cls_name).from_pretrained(scheduler_dir)
            except ScheduleError as exc:
                raise PipelineInputError(f"{scheduler_dir}: {exc}") from None
        else:
            scheduler = make_scheduler(sampler or "dpm")
        return cls(**parts, scheduler=scheduler)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the folder layout `from_pretrained` reads (safetensors weights)."""
        if lora_merged(self.transformer):
            # The base weights would carry the LoRAs and the LoRA weights too: a reload would apply them twice.
            raise PipelineInputError("cannot save a pipeline whose LoRAs are fused into the base weights; "
                                     "call unfuse_lora() first")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(root / "vae", safe_serialization=True)
        self.text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(root / "tokenizer")
        self.transformer.save_pretrained(root / "transformer")
        self.scheduler.save_pretrained(root / "scheduler")
        (root / PIPELINE_FILE).write_text(json.dumps({"pipeline": type(self).__name__, "sampler": sampler_name(self.scheduler)}))
        return root

    # -- LoRA fusing --------------------------------------------------------------------------------------
    def fuse_lora(self) -> None:
        """Fold the Content LoRA into the base weights, and the Motion LoRA at scale 0 (off, as sampling runs it):
        each wrapped projection is then one matmul instead of three, with the same output up to float32
        rounding. Sampling only; training needs the LoRAs apart."""
        merge_lora(self.transformer, motion_scale=0.0)

    def unfuse_lora(self) -> None:
        """Undo `fuse_lora` (the base weights come back up to their dtype's rounding)."""
        unmerge_lora(self.transformer)

    # -- VAE options ---------------------------------------------------------------------------------------
    def enable_vae_tiling(self) -> None:
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def enable_vae_slicing(self) -> None:
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    # -- building blocks -----------------------------------------------------------------------------------
    def encode_prompt(self, captions: Sequence[Captions], task: Task | str | TaskSpec) -> torch.Tensor:
        """[B, P * 226, d] T5 embeddings for the transformer's P prompt slots (fg, bg, blend, then fg_1 ... for
        K foregrounds; the official decomposition model: fg, bg). A slot the task does not use is zeros."""
        spec = task if isinstance(task, TaskSpec) else task_spec(task)
        slots, used = prompt_slots(spec, self.transformer.layerflow_config.num_prompts)
        layers = tuple(spec.captioned[i] for i in slots)
        prompts = [indexed_prompts(c.as_dict(), layers) for c in captions]
        tokens = self.transformer.layerflow_config.text_tokens_per_prompt
        embeds = encode_prompts(self.tokenizer, self.text_encoder, prompts, max_length=tokens,
                                device=self._execution_device, dtype=self.transformer.dtype)
        keep = torch.tensor(used, device=embeds.device).repeat_interleave(tokens)
        return embeds * keep[None, :, None].to(embeds.dtype)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, generator: torch.Generator | list | None = None) -> torch.Tensor:
        """[B, T, 3, H, W] in [-1, 1] -> scaled latents [B, T_latent, C, h, w], all frames in one VAE pass."""
        x = video.permute(0, 2, 1, 3, 4).to(device=self._execution_device, dtype=self.vae.dtype)
        posterior = self.vae.encode(x).latent_dist
        latents = posterior.sample(generator=generator) * self.vae.config.scaling_factor
        return latents.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, T_latent, C, h, w] -> video [B, T, 3, H, W] in [-1, 1], in one VAE pass."""
        z = latents.permute(0, 2, 1, 3, 4).to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(z).sample.permute(0, 2, 1, 3, 4).float().clamp(-1.0, 1.0)

    # -- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        fg_prompt: str | Sequence[str] = "",
        bg_prompt: str | Sequence[str] = "",
        blend_prompt: str | Sequence[str] = "",
        *,
        fg_prompts: Sequence[str] | Sequence[Sequence[str]] | None = None,
        task: Task | str = Task.GENERATE,
        layers: dict[str, Condition | Sequence[Condition]] | None = None,
        foreground: Condition | Sequence[Condition] | None = None,
        alpha: Condition | Sequence[Condition] | None = None,
        background: Condition | Sequence[Condition] | None = None,
        blend: Condition | Sequence[Condition] | None = None,
        num_frames: int = 16,
        height: int = 480,
        width: int = 720,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = True,
        guidance_schedule: GuidanceSchedule | str = GuidanceSchedule.DYNAMIC,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        condition_latents: torch.Tensor | None = None,
        step_noise: Callable[[int], torch.Tensor] | None = None,
        callback_on_step_end: Callable[["LayerFlowPipeline", int, torch.Tensor, dict], dict] | None = None,
        output_type: str = "clip",
        fps: float = 8.0,
    ) -> LayerFlowPipelineOutput:
        """Sample layered clips. `num_frames` is per layer (16 in the official models).

        Conditions (per task: fg_conditioned needs `foreground` + `alpha`, bg_conditioned `background`,
        decompose `blend`) are uint8 arrays [T, H, W, 3] (alpha [T, H, W]) or LayeredClips, or one per sample.
        `prompt_embeds` ([B, P * 226, d]) skips the text encoder.

        K foregrounds: `fg_prompts` holds their K prompts, front first (one list for every sample, or a list per
        sample) in place of `fg_prompt`; `layers` gives the layers of foregrounds 1 .. K-1 by name ({"fg_1": ...,
        "alpha_1": ...}), and with task "given" any subset of the layers ({"bg": ..., "fg": ..., "alpha": ...}),
        the model generating the rest.

        Replaying a run exactly: `latents` ([B, T_noisy, C, h, w]) are the initial noisy latents, drawn from
        `generator` when None; `condition_latents` ([B, T_clean, C, h, w], the clean latents in sequence order, in
        the transformer's scaled latent space) replace the VAE encoding of the conditions, which may then be left
        out (the clips then hold them decoded); `step_noise(i)` returns the SDE noise of step i (called for every
        step but the last, which adds none), drawn from `generator` when None (official sampler only: diffusers'
        DPM scheduler draws its own, DDIM adds none).
        `callback_on_step_end(pipe, i, t, {"latents": ...})` runs after every step, as in diffusers; a "latents"
        entry in the dict it returns replaces the latents.
        """
        captions = _captions(fg_prompt, bg_prompt, blend_prompt, fg_prompts)
        count = captions[0].num_foregrounds
        given = {"fg": foreground, "alpha": alpha, "bg": background, "blend": blend, **(layers or {})}
        try:
            names = tuple(name for name, value in given.items() if value is not None)
            spec = task_spec(task, count, names if Task.parse(task) is Task.GIVEN else None)
        except LayoutError as exc:
            raise PipelineInputError(str(exc)) from exc
        layout = SequenceLayout(spec, num_frames, self.vae_scale_factor_temporal)
        if output_type not in ("clip", "latent"):
            raise PipelineInputError(f"output_type must be 'clip' or 'latent', got {output_type!r}")
        self._check_model(spec, height, width)
        schedule = GuidanceSchedule.parse(guidance_schedule) if use_dynamic_cfg else GuidanceSchedule.CONSTANT
        tensors = [x for x in (prompt_embeds, latents, condition_latents) if x is not None]
        batch = max([len(captions)] + [len(v) for v in given.values() if isinstance(v, (list, tuple))]
                    + [x.shape[0] for x in tensors if x.ndim])
        captions = _broadcast(captions, batch, "prompts")
        conditions = self._conditions(spec, given, batch, num_frames, height, width,
                                      required=condition_latents is None)
        sampler = sampler_name(self.scheduler)
        if step_noise is not None and sampler != "official":
            how = "draws its own from `generator`" if sampler == "dpm" else "adds none"
            raise PipelineInputError(f"step_noise needs the official sampler; {type(self.scheduler).__name__} {how}")
        device = self._execution_device

        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(captions, spec)
        prompt_embeds = prompt_embeds.to(device=device, dtype=self.transformer.dtype)
        self._check_embeds(prompt_embeds, spec, batch)
        do_cfg = guidance_scale > 1.0
        text = torch.cat([unconditional_embeddings(prompt_embeds), prompt_embeds]) if do_cfg else prompt_embeds

        latent_size = (self.vae.config.latent_channels, height // self.vae_scale_factor_spatial,
                       width // self.vae_scale_factor_spatial)
        clean = None
        if condition_latents is not None:
            if not spec.conditions:
                raise PipelineInputError(f"task {spec.task.value} has no conditions; drop `condition_latents=`")
            _check_latents(condition_latents, (batch, len(layout.clean_indices), *latent_size), "condition_latents")
            clean = condition_latents.to(device=device, dtype=prompt_embeds.dtype)
        elif spec.conditions:
            video = torch.stack([layout.pack_conditions(c) for c in conditions])
            clean, _ = layout.split_latents(self.encode_video(video, generator).to(prompt_embeds.dtype))

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (batch, len(layout.noisy_indices), *latent_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        else:
            _check_latents(latents, shape, "latents")
            latents = latents.to(device=device, dtype=prompt_embeds.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        old_pred_original_sample = None
        # Clean latents sit at their own places in the sequence (bg-conditioned: the middle), as in training.
        cond_input = None if clean is None else (torch.cat([clean, clean]) if do_cfg else clean)
        cond_indices = layout.clean_indices or None
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, latents]) if do_cfg else latents
                pred = self.transformer(
                    hidden_states=model_input,
                    encoder_hidden_states=text,
                    timestep=t.expand(model_input.shape[0]),
                    cond_latents=cond_input,
                    cond_indices=cond_indices,
                ).float()
                if do_cfg:
                    pred_uncond, pred_text = pred.chunk(2)
                    scale = cfg_scale(guidance_scale, int(t), i, num_inference_steps, schedule)
                    pred = pred_uncond + scale * (pred_text - pred_uncond)
                if sampler == "official":
                    noise = None if step_noise is None else functools.partial(step_noise, i)
                    latents = self.scheduler.step(pred, t, latents, generator=generator, noise=noise,
                                                  return_dict=False)[0]
                elif sampler == "dpm":
                    latents, old_pred_original_sample = self.scheduler.step(
                        pred,
                        old_pred_original_sample,
                        t,
                        timesteps[i - 1] if i > 0 else None,
                        latents,
                        eta=0.0,
                        generator=generator,
                        return_dict=False,
                    )
                else:
                    latents = self.scheduler.step(pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
                latents = latents.to(prompt_embeds.dtype)
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
                progress.update()

        full = layout.join_latents(clean, latents)
        self.maybe_free_model_hooks()
        if output_type == "latent":
            return LayerFlowPipelineOutput(clips=[], latents=full)
        video = self.decode_latents(full).cpu()
        clips = []
        for b in range(batch):
            layers = layout.unpack(video[b])
            layers.update(conditions[b])  # conditions come back exactly as given
            clips.append(
                LayeredClip.from_named_layers(
                    layers,
                    key=sample_key(f"layerflow_{spec.task.value}", b),
                    captions=captions[b],
                    fps=fps,
                    origin="generated",
                    frame_range=(0, num_frames),
                    depth_order=tuple(range(count)) if count > 1 else (),
                )
            )
        return LayerFlowPipelineOutput(clips=clips, latents=full)

    # -- input checks --------------------------------------------------------------------------------------
    def _check_model(self, spec: TaskSpec, height: int, width: int) -> None:
        config = self.transformer.layerflow_config
        try:
            prompt_slots(spec, config.num_prompts)
        except LayoutError as exc:
            raise PipelineInputError(str(exc)) from exc
        multiple = self.vae_scale_factor_spatial * config.patch_size
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise PipelineInputError(
                f"height and width must be positive multiples of {multiple} (VAE x patch size), got {height}x{width}"
            )

    def _check_embeds(self, embeds: torch.Tensor, spec: TaskSpec, batch: int) -> None:
        config = self.transformer.layerflow_config
        slots, per_prompt = len(prompt_slots(spec, config.num_prompts)[0]), config.text_tokens_per_prompt
        tokens = slots * per_prompt
        if embeds.ndim != 3 or embeds.shape[0] != batch or embeds.shape[1] != tokens:
            raise PipelineInputError(
                f"prompt_embeds for task {spec.task.value} must be [{batch}, {tokens}, d] "
                f"({slots} prompts x {per_prompt} tokens), got {tuple(embeds.shape)}"
            )

    def _conditions(
        self, spec: TaskSpec, given: dict[str, Any], batch: int, frames: int, height: int, width: int,
        required: bool = True,
    ) -> list[dict[str, np.ndarray]]:
        out: list[dict[str, np.ndarray]] = [{} for _ in range(batch)]
        for layer in sorted(set(given) | set(spec.conditions), key=_sequence_order(spec)):
            value = given.get(layer)
            arg = _condition_arg(layer)
            if layer not in spec.conditions:
                if value is not None:
                    needs = ", ".join(map(_condition_arg, spec.conditions)) or "no condition"
                    raise PipelineInputError(f"task {spec.task.value} takes {needs}; drop `{arg}=`")
                continue
            if value is None:
                if required:
                    raise PipelineInputError(f"task {spec.task.value} needs `{arg}=` (a uint8 video or a "
                                             "LayeredClip, or condition_latents=)")
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            for b, item in enumerate(_broadcast(list(items), batch, arg)):
                out[b][layer] = _condition_array(layer, arg, item, frames, height, width)
        return out


def _check_latents(x: torch.Tensor, shape: tuple[int, ...], arg: str) -> None:
    if tuple(x.shape) != shape:
        raise PipelineInputError(f"`{arg}` must have shape {list(shape)} (batch, latent frames, channels, height "
                                 f"and width over the VAE's factor), got {list(x.shape)}")


def _captions(fg, bg, blend, fg_prompts=None) -> list[Captions]:
    """One Captions per sample; `fg_prompts` (K prompts, or a list of K prompts per sample) replaces `fg`."""
    foregrounds: list[list[str]] = [[]]
    if fg_prompts is not None:
        if fg:
            raise PipelineInputError("give the foregrounds' prompts once: fg_prompt or fg_prompts, not both")
        items = list(fg_prompts)
        foregrounds = [list(p) for p in items] if items and not isinstance(items[0], str) else [items]
        if not foregrounds[0] or len({len(p) for p in foregrounds}) != 1:
            raise PipelineInputError("fg_prompts: every sample needs the same number (K >= 1) of foreground prompts")
        fg = [p[0] for p in foregrounds]
    lists = [[p] if isinstance(p, str) else list(p) for p in (fg, bg, blend)]
    n = max(len(x) for x in [*lists, foregrounds])
    fg_l, bg_l, bl_l = (_broadcast(x, n, "prompts") for x in lists)
    more = [p[1:] for p in _broadcast(foregrounds, n, "fg_prompts")] if fg_prompts is not None else [[]] * n
    return [Captions(fg=f, bg=b, blend=c, more_fg=tuple(m)) for f, b, c, m in zip(fg_l, bg_l, bl_l, more)]


def _condition_arg(layer: str) -> str:
    """The keyword a condition layer is passed by: foreground, alpha, background, blend, or layers["fg_1"]."""
    return CONDITION_ARGS.get(layer, f'layers["{layer}"]')


def _sequence_order(spec: TaskSpec):
    def order(layer: str) -> int:
        if layer not in spec.layers:
            raise PipelineInputError(f"unknown layer {layer!r} in `layers`; a {spec.num_foregrounds}-foreground "
                                     f"clip has {', '.join(spec.layers)}")
        return spec.layers.index(layer)
    return order


def _broadcast(items: list, n: int, what: str) -> list:
    if len(items) == n:
        return items
    if len(items) == 1:
        return items * n
    raise PipelineInputError(f"{what}: got {len(items)} items for a batch of {n}; give 1 or {n}")


def _condition_array(layer: str, arg: str, item: Condition, frames: int, height: int, width: int) -> np.ndarray:
    arr = item.layer(layer) if isinstance(item, LayeredClip) else np.asarray(item)
    if arr.dtype != np.uint8:
        raise PipelineInputError(f"`{arg}` must be uint8 (0..255), got {arr.dtype}")
    if is_alpha(layer) and arr.ndim == 4:
        if arr.shape[-1] not in (1, 3) or not (arr == arr[..., :1]).all():
            raise PipelineInputError(f"`{arg}` must be grey: [T, H, W], got shape {arr.shape} with differing channels")
        arr = arr[..., 0]
    want = (frames, height, width) if is_alpha(layer) else (frames, height, width, 3)
    if arr.shape != want:
        raise PipelineInputError(
            f"`{arg}` has shape {arr.shape}, expected {want} (num_frames x height x width); "
            "resize the condition or pass matching num_frames/height/width"
        )
    return arr


def build_tiny_pipeline(seed: int = 0, *, num_prompts: int = 3, sampler: str = "dpm") -> LayerFlowPipeline:
    """The `tiny` preset: real classes, random weights from `seed`, built in-process (tests and the demo).

    `num_prompts` is 3 for generation and the conditional tasks, 2 for decomposition (as the released
    checkpoints differ).
    """
    from model.config import get_preset
    from model.text import build_tiny_tokenizer
    from model.tiny import build_tiny_text_encoder, build_tiny_vae
    from model.transformer import LayerFlowTransformer

    config = get_preset("tiny", num_prompts=num_prompts)
    tokenizer = build_tiny_tokenizer()
    text_encoder = build_tiny_text_encoder(len(tokenizer), config.text_embed_dim, seed)
    vae = build_tiny_vae(config.in_channels, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = LayerFlowTransformer.from_config(config)
    return LayerFlowPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer.eval(),
        scheduler=make_scheduler(sampler),
    )


def load_pipeline(model_dir: str | Path | None, task: Task | str = Task.GENERATE, *, seed: int = 0,
                  torch_dtype: torch.dtype | None = None, sampler: str | None = None) -> LayerFlowPipeline:
    """A local model folder's pipeline; without one, the tiny preset's random pipeline (weights from `seed`) with
    the prompt slots of `task`'s checkpoint (the official decomposition model reads 2, the others and the unified
    model, which every other subset of given layers and K > 1 need, 3)."""
    if model_dir is not None:
        return LayerFlowPipeline.from_pretrained(model_dir, torch_dtype=torch_dtype, sampler=sampler)
    task = Task.parse(task)
    prompts = len(TASKS[task].prompt_layers) if task in TASKS else len(CAPTIONED_LAYERS)
    pipe = build_tiny_pipeline(seed, num_prompts=prompts, sampler=sampler or "dpm")
    if torch_dtype not in (None, torch.float32):  # built in float32
        pipe.to(dtype=torch_dtype)
    return pipe
