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
from collections.abc import Callable, Mapping, Sequence
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
    LayoutError,
    SequenceLayout,
    Task,
    TaskSpec,
    prompt_slots,
    task_spec,
)
from model.lora import lora_merged, merge_lora, unmerge_lora
from model.schedule import DEFAULT_STEPS, GuidanceSchedule, ScheduleError, make_scheduler, sampler_name, scheduler_class
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
Conditions = Condition | Sequence[Condition]  # one for every sample, or one per sample
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
    ) -> LayerFlowPipeline:
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
        (root / PIPELINE_FILE).write_text(json.dumps({"pipeline": type(self).__name__,
                                                      "sampler": sampler_name(self.scheduler)}))
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
        captions: Captions | Sequence[Captions] | None = None,
        task: TaskSpec | Task | str = Task.GENERATE,
        layers: Mapping[str, Conditions] | None = None,
        num_frames: int = 16, height: int = 480, width: int = 720,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = True,
        guidance_schedule: GuidanceSchedule | str = GuidanceSchedule.DYNAMIC,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        condition_latents: torch.Tensor | None = None,
        step_noise: Callable[[int], torch.Tensor] | None = None,
        callback_on_step_end: Callable[[LayerFlowPipeline, int, torch.Tensor, dict], dict] | None = None,
        output_type: str = "clip",
        fps: float = 8.0,
    ) -> LayerFlowPipelineOutput:
        """Sample layered clips. `num_frames` is per layer (16 in the official models).

        `task`: a `TaskSpec` (`model.layout.task_spec(task, K, given)`: K foregrounds, and for task "given" the
        layers given) or one of the paper's tasks by name (K = 1). Prompts: `captions`, one `Captions` for every
        sample or one per sample (`more_fg`: foregrounds 1 .. K-1, front first), or at K = 1 `fg_prompt`,
        `bg_prompt`, `blend_prompt` (a string or one per sample). `layers`: the task's given layers by name, each a
        uint8 array [T, H, W, 3] (alpha [T, H, W]) or a LayeredClip, or one per sample.

        `prompt_embeds` ([B, P * 226, d]) skips the text encoder. Replaying a run exactly: `latents` ([B, T_noisy,
        C, h, w]) are the initial noisy latents, drawn from `generator` when None; `condition_latents` ([B, T_clean,
        C, h, w], the clean latents in sequence order, in the transformer's scaled latent space) replace the VAE
        encoding of the conditions, which may then be left out (the clips then hold them decoded); `step_noise(i)`
        returns the SDE noise of step i (official sampler only; every step but the last), drawn from `generator`
        when None. `callback_on_step_end(pipe, i, t, {"latents": ...})` runs after every step, as in diffusers; a
        "latents" entry in the dict it returns replaces the latents.
        """
        spec = _task_spec(task)
        captions = _captions(fg_prompt, bg_prompt, blend_prompt, captions, spec)
        given = {name: value for name, value in (layers or {}).items() if value is not None}
        layout = SequenceLayout(spec, num_frames, self.vae_scale_factor_temporal)
        self._check_call(spec, captions, height, width, output_type, step_noise)
        guidance = _Guidance(guidance_scale, GuidanceSchedule.parse(guidance_schedule) if use_dynamic_cfg
                             else GuidanceSchedule.CONSTANT, num_inference_steps)
        batch = _batch_size(captions, given, prompt_embeds, latents, condition_latents)
        captions = _broadcast(captions, batch, "prompts")
        conditions = self._conditions(spec, given, batch, num_frames, height, width,
                                      required=condition_latents is None)
        text = self._text_embeddings(captions, spec, prompt_embeds, batch, guidance)
        latent_size = (batch, self.vae.config.latent_channels, height // self.vae_scale_factor_spatial,
                       width // self.vae_scale_factor_spatial)  # [B, T, C, h, w] without T
        clean = self._clean_latents(layout, conditions, condition_latents, latent_size, generator, text.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        noisy = self._initial_latents(layout, latents, latent_size, generator, text.dtype)
        noisy = self._denoise(layout, text, clean, noisy, guidance, generator, step_noise, callback_on_step_end)
        full = layout.join_latents(clean, noisy)
        self.maybe_free_model_hooks()
        if output_type == "latent":
            return LayerFlowPipelineOutput(clips=[], latents=full)
        return LayerFlowPipelineOutput(clips=self._clips(full, layout, conditions, captions, fps), latents=full)

    # -- the steps of a call -------------------------------------------------------------------------------
    def _text_embeddings(self, captions: list[Captions], spec: TaskSpec, prompt_embeds: torch.Tensor | None,
                         batch: int, guidance: _Guidance) -> torch.Tensor:
        """The transformer's text: the prompts' T5 embeddings (or `prompt_embeds`), after all-zero unconditional
        ones under guidance."""
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(captions, spec)
        prompt_embeds = prompt_embeds.to(device=self._execution_device, dtype=self.transformer.dtype)
        self._check_embeds(prompt_embeds, spec, batch)
        if not guidance.enabled:
            return prompt_embeds
        return torch.cat([unconditional_embeddings(prompt_embeds), prompt_embeds])

    def _clean_latents(self, layout: SequenceLayout, conditions: list[dict[str, np.ndarray]],
                       condition_latents: torch.Tensor | None, latent_size: tuple[int, ...],
                       generator: torch.Generator | list | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The conditions' clean latents [B, T_clean, C, h, w]: `condition_latents` as given, else one joint VAE pass
        over the conditions with stand-ins for the generated layers (`SequenceLayout.pack_conditions`); None for a
        task given nothing."""
        spec = layout.spec
        if condition_latents is not None:
            if not spec.conditions:
                raise PipelineInputError(f"task {spec.task.value} has no conditions; drop `condition_latents=`")
            shape = (latent_size[0], len(layout.clean_indices), *latent_size[1:])
            _check_latents(condition_latents, shape, "condition_latents")
            return condition_latents.to(device=self._execution_device, dtype=dtype)
        if not spec.conditions:
            return None
        video = torch.stack([layout.pack_conditions(c) for c in conditions])
        return layout.split_latents(self.encode_video(video, generator).to(dtype))[0]

    def _initial_latents(self, layout: SequenceLayout, latents: torch.Tensor | None, latent_size: tuple[int, ...],
                         generator: torch.Generator | list | None, dtype: torch.dtype) -> torch.Tensor:
        """The noisy latents the sampler starts from: `latents` as given, else drawn from `generator`."""
        shape = (latent_size[0], len(layout.noisy_indices), *latent_size[1:])
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        else:
            _check_latents(latents, shape, "latents")
            latents = latents.to(device=self._execution_device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def _denoise(self, layout: SequenceLayout, text: torch.Tensor, clean: torch.Tensor | None,
                 latents: torch.Tensor, guidance: _Guidance, generator: torch.Generator | list | None,
                 step_noise: Callable[[int], torch.Tensor] | None, callback: Callable | None) -> torch.Tensor:
        """The sampling loop over the noisy latents. The clean latents sit at their own places in the sequence
        (bg-conditioned: the middle), as in training, and share the noisy part's timestep."""
        cond = None if clean is None else guidance.batch(clean)
        step = self._sampler_step(generator, step_noise)
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                model_input = guidance.batch(latents)
                pred = self.transformer(
                    hidden_states=model_input,
                    encoder_hidden_states=text,
                    timestep=t.expand(model_input.shape[0]),
                    cond_latents=cond,
                    cond_indices=layout.clean_indices or None,
                    spec=layout.spec,
                ).float()
                latents = step(guidance.combine(pred, t, i), i, t, latents).to(text.dtype)
                if callback is not None:
                    latents = callback(self, i, t, {"latents": latents}).get("latents", latents)
                progress.update()
        return latents

    def _sampler_step(self, generator: torch.Generator | list | None,
                      step_noise: Callable[[int], torch.Tensor] | None) -> Callable[..., torch.Tensor]:
        """`step(pred, i, t, latents)`: the scheduler's update at step i (timestep t) to the next latents."""
        scheduler, timesteps = self.scheduler, self.scheduler.timesteps
        sampler = sampler_name(scheduler)
        if sampler == "official":
            def step(pred, i, t, latents):
                noise = None if step_noise is None else functools.partial(step_noise, i)
                return scheduler.step(pred, t, latents, generator=generator, noise=noise, return_dict=False)[0]
        elif sampler == "dpm":
            previous = [None]  # DPM-Solver++ 2M reads the previous step's x0 prediction

            def step(pred, i, t, latents):
                latents, previous[0] = scheduler.step(pred, previous[0], t, timesteps[i - 1] if i > 0 else None,
                                                      latents, eta=0.0, generator=generator, return_dict=False)
                return latents
        else:
            def step(pred, i, t, latents):
                return scheduler.step(pred, t, latents, eta=0.0, generator=generator, return_dict=False)[0]
        return step

    def _clips(self, full: torch.Tensor, layout: SequenceLayout, conditions: list[dict[str, np.ndarray]],
               captions: list[Captions], fps: float) -> list[LayeredClip]:
        """One LayeredClip per sample from the full latent sequence; the conditions come back exactly as given."""
        video = self.decode_latents(full).cpu()
        count = layout.spec.num_foregrounds
        return [LayeredClip.from_named_layers({**layout.unpack(video[b]), **conditions[b]}, captions=caption,
                                              key=sample_key(f"layerflow_{layout.task.value}", b), fps=fps,
                                              origin="generated", frame_range=(0, layout.frames_per_layer),
                                              depth_order=tuple(range(count)) if count > 1 else ())
                for b, caption in enumerate(captions)]

    # -- input checks --------------------------------------------------------------------------------------
    def _check_call(self, spec: TaskSpec, captions: list[Captions], height: int, width: int, output_type: str,
                    step_noise: Callable | None) -> None:
        if output_type not in ("clip", "latent"):
            raise PipelineInputError(f"output_type must be 'clip' or 'latent', got {output_type!r}")
        counts = sorted({c.num_foregrounds for c in captions})
        if counts != [spec.num_foregrounds]:
            raise PipelineInputError(
                f"the prompts are for {' and '.join(map(str, counts))} foreground(s), the task for "
                f"{spec.num_foregrounds}; give each foreground a prompt (Captions.more_fg: foregrounds 1 .. K-1) and "
                "the task with its K (model.layout.task_spec(task, K))")
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
        sampler = sampler_name(self.scheduler)
        if step_noise is not None and sampler != "official":
            how = "draws its own from `generator`" if sampler == "dpm" else "adds none"
            raise PipelineInputError(f"step_noise needs the official sampler; {type(self.scheduler).__name__} {how}")

    def _check_embeds(self, embeds: torch.Tensor, spec: TaskSpec, batch: int) -> None:
        slots = self.transformer.num_text_prompts(spec)
        per_prompt = self.transformer.layerflow_config.text_tokens_per_prompt
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
            arg = f'layers["{layer}"]'
            if layer not in spec.conditions:
                if value is not None:
                    needs = ", ".join(spec.conditions) or "no layer"
                    raise PipelineInputError(f"task {spec.task.value} is given {needs}; drop {arg}")
                continue
            if value is None:
                if required:
                    raise PipelineInputError(f"task {spec.task.value} needs {arg} (a uint8 video or a "
                                             "LayeredClip, or condition_latents=)")
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            for b, item in enumerate(_broadcast(list(items), batch, arg)):
                out[b][layer] = _condition_array(layer, arg, item, frames, height, width)
        return out


@dataclass(frozen=True)
class _Guidance:
    """Classifier-free guidance: the unconditional and the text branch run as one batch, combined at the step's
    scale (`model.schedule.guidance_scale`); off at a scale of 1 or less."""

    scale: float
    schedule: GuidanceSchedule
    steps: int

    @property
    def enabled(self) -> bool:
        return self.scale > 1.0

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x]) if self.enabled else x

    def combine(self, pred: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        if not self.enabled:
            return pred
        pred_uncond, pred_text = pred.chunk(2)
        return pred_uncond + cfg_scale(self.scale, int(t), i, self.steps, self.schedule) * (pred_text - pred_uncond)


def _check_latents(x: torch.Tensor, shape: tuple[int, ...], arg: str) -> None:
    if tuple(x.shape) != shape:
        raise PipelineInputError(f"`{arg}` must have shape {list(shape)} (batch, latent frames, channels, height "
                                 f"and width over the VAE's factor), got {list(x.shape)}")


def _task_spec(task: TaskSpec | Task | str) -> TaskSpec:
    """The caller's task spec; a task's name stands for the paper's task (K = 1)."""
    if isinstance(task, TaskSpec):
        return task
    try:
        if Task.parse(task) is Task.GIVEN:
            raise PipelineInputError("task 'given' names its layers: pass task=model.layout.task_spec('given', K, "
                                     "layers)")
        return task_spec(task)
    except LayoutError as exc:
        raise PipelineInputError(str(exc)) from exc


def _captions(fg, bg, blend, captions: Captions | Sequence[Captions] | None, spec: TaskSpec) -> list[Captions]:
    """One Captions per sample: `captions` as given, else the K = 1 prompts (each a string or one per sample); with
    no prompt at all, empty ones for the task's K (e.g. beside prompt_embeds)."""
    if captions is not None:
        if fg or bg or blend:
            raise PipelineInputError("give the prompts once: captions= or fg_prompt/bg_prompt/blend_prompt, not both")
        return [captions] if isinstance(captions, Captions) else list(captions)
    if not (fg or bg or blend):
        return [Captions(more_fg=("",) * (spec.num_foregrounds - 1))]
    lists = [[p] if isinstance(p, str) else list(p) for p in (fg, bg, blend)]
    n = max(len(x) for x in lists)
    return [Captions(fg=f, bg=b, blend=c) for f, b, c in zip(*(_broadcast(x, n, "prompts") for x in lists))]


def _batch_size(captions: list[Captions], given: dict[str, Any], *tensors: torch.Tensor | None) -> int:
    """The longest of the per-sample prompts, conditions and tensors (the others are broadcast to it)."""
    return max([len(captions)] + [len(v) for v in given.values() if isinstance(v, (list, tuple))]
               + [x.shape[0] for x in tensors if x is not None and x.ndim])


def _sequence_order(spec: TaskSpec):
    def order(layer: str) -> int:
        if layer not in spec.layers:
            raise PipelineInputError(f"unknown layer {layer!r} in `layers`; a {spec.num_foregrounds}-foreground "
                                     f"clip has {', '.join(spec.layers)} (K foregrounds: "
                                     "task=model.layout.task_spec(task, K))")
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
        raise PipelineInputError(f"{arg} must be uint8 (0..255), got {arr.dtype}")
    if is_alpha(layer) and arr.ndim == 4:
        if arr.shape[-1] not in (1, 3) or not (arr == arr[..., :1]).all():
            raise PipelineInputError(f"{arg} must be grey: [T, H, W], got shape {arr.shape} with differing channels")
        arr = arr[..., 0]
    want = (frames, height, width) if is_alpha(layer) else (frames, height, width, 3)
    if arr.shape != want:
        raise PipelineInputError(
            f"{arg} has shape {arr.shape}, expected {want} (num_frames x height x width); "
            "resize the condition or pass matching num_frames/height/width"
        )
    return arr


def build_tiny_pipeline(seed: int = 0, *, num_prompts: int = 3, sampler: str = "dpm",
                        preset: str = "tiny") -> LayerFlowPipeline:
    """A tiny preset (`model.config.TINY_PRESETS`): real classes, random weights from `seed`, built in-process (tests,
    the tiny world's random base).

    `num_prompts` is 3 for generation and the conditional tasks, 2 for decomposition (as the released
    checkpoints differ).
    """
    from model.config import get_preset
    from model.text import build_tiny_tokenizer
    from model.tiny import build_tiny_text_encoder, build_tiny_vae
    from model.transformer import LayerFlowTransformer

    config = get_preset(preset, num_prompts=num_prompts)
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


def load_pipeline(model_dir: str | Path | None, task: TaskSpec | Task | str = Task.GENERATE, *, seed: int = 0,
                  torch_dtype: torch.dtype | None = None, sampler: str | None = None) -> LayerFlowPipeline:
    """A local model folder's pipeline; without one, the tiny preset's random pipeline (weights from `seed`) with
    the prompt slots of `task`'s checkpoint (a spec, or a paper task's name: the official decomposition model reads
    2, the others and the unified model, which every other subset of given layers and K > 1 need, 3)."""
    if model_dir is not None:
        return LayerFlowPipeline.from_pretrained(model_dir, torch_dtype=torch_dtype, sampler=sampler)
    spec = _task_spec(task)
    prompts = len(spec.prompt_layers) if spec.num_foregrounds == 1 else len(CAPTIONED_LAYERS)
    pipe = build_tiny_pipeline(seed, num_prompts=prompts, sampler=sampler or "dpm")
    if torch_dtype not in (None, torch.float32):  # built in float32
        pipe.to(dtype=torch_dtype)
    return pipe
