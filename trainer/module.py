"""The LightningModule: LayerFlow's training loss and the three stages' trainable sets.

Loss (as the official CogVideoX training computes it): the noisy part of the latent sequence is diffused on the
zero-terminal-SNR schedule with SNR shift 3.0, the transformer predicts v, the prediction is turned into x0 and
compared with the clean latents under the weight 1 / (1 - alpha_bar). Condition latents enter clean and are not
in the loss. Noise, timesteps and the VAE's posterior samples are drawn per sample from (seed, step, global
sample index), so a run is reproducible, resumes exactly, and gives the same numbers on one or many processes.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import nn

from data_engine.schema import is_alpha, layer_names
from model.layout import LayoutError, SequenceLayout, Task, TaskSpec, prompt_slots, task_spec
from model.lora import is_lora_param
from model.schedule import alpha_bar, make_scheduler, training_loss_weight
from model.text import encode_prompts
from trainer.config import LossConfig, ModelConfig, OptimConfig, TrainConfigError, stage_spec
from trainer.seeding import sample_generator

_BLOCK = re.compile(r"(?:^|\.)transformer_blocks\.(\d+)\.")
TRAINABLE_BLOCK_EVERY = 6  # blocks with index % 6 == 5: "1/6 of the blocks" of the paper
TASKS = tuple(Task)


def is_trainable(name: str, kind: str, blocks: str = "paper") -> bool:
    """Whether parameter `name` of the transformer is trained in a stage of `kind` (see `trainer.config.STAGES`);
    `blocks` is stage 1's set (`ModelConfig.stage1_blocks`): the paper's 1/6 of the blocks, or all of them."""
    if kind == "motion_lora":
        return is_lora_param(name, "motion")
    if kind == "content_lora":
        return is_lora_param(name, "content")
    if is_lora_param(name):
        return False
    if kind == "all":
        return True
    if "layer_embed" in name or blocks == "all":
        return True
    block = _BLOCK.search(name)
    return block is not None and int(block.group(1)) % TRAINABLE_BLOCK_EVERY == TRAINABLE_BLOCK_EVERY - 1


def select_trainable(transformer: nn.Module, kind: str, blocks: str = "paper") -> list[str]:
    """Freeze everything except the stage's parameters; returns their names."""
    names = []
    for name, p in transformer.named_parameters():
        p.requires_grad_(is_trainable(name, kind, blocks))
        if p.requires_grad:
            names.append(name)
    if not names:
        raise TrainConfigError(f"the transformer has no parameters for a {kind} stage; is the model built with LoRAs?")
    return names


def layer_losses(errors: torch.Tensor, layout: SequenceLayout) -> dict[str, torch.Tensor]:
    """Per-sample loss [B] of each generated layer of `layout`: the mean of `LayerFlowModule.weighted_errors` over
    the layer's latents. Weighted by their latent counts (fg also holds a duplicated frame's), they average to the
    per-sample loss."""
    position = {index: i for i, index in enumerate(layout.noisy_indices)}
    return {layer: errors[:, [position[i] for i in layout.latent_indices(layer)]].flatten(1).mean(1)
            for layer in layout.spec.generated}


class WarmupLR:
    """Linear warm-up to the base learning rate, then constant or a cosine decay to `min_ratio` at `total` steps
    (a plain object, so LambdaLR's state dict stores it)."""

    def __init__(self, steps: int, total: int = 0, min_ratio: float = 0.0) -> None:
        self.steps, self.total, self.min_ratio = steps, total, min_ratio

    def __call__(self, step: int) -> float:
        if self.steps > 0 and step < self.steps:
            return (step + 1) / self.steps
        if self.total <= self.steps:
            return 1.0
        progress = min(1.0, (step - self.steps) / (self.total - self.steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def layer_kind(layer: str) -> str:
    """fg, alpha, bg or blend: the kind of a layer name (fg_k is a foreground, alpha_k a matte)."""
    if layer in ("bg", "blend"):
        return layer
    return "alpha" if is_alpha(layer) else "fg"


class LayerFlowModule(L.LightningModule):
    """Stage 1: trainable blocks + layer embedder; stage 2: Motion LoRA; stage 3: Content LoRA (motion frozen)."""

    def __init__(
        self,
        stage: int = 1,
        network: ModelConfig | None = None,
        optim: OptimConfig | None = None,
        seed: int = 0,
        loss: LossConfig | None = None,
    ) -> None:
        super().__init__()
        self.spec = stage_spec(stage)
        self.model_cfg = network or ModelConfig()
        self.optim_cfg = optim or OptimConfig()
        self.loss_cfg = loss or LossConfig()
        self.loss_cfg.validate()
        self.seed = seed
        self.save_hyperparameters(
            {"stage": stage, "network": asdict(self.model_cfg), "optim": asdict(self.optim_cfg), "seed": seed,
             "loss": asdict(self.loss_cfg)}
        )
        # Checkpoints hold only the trainable weights; the frozen rest comes from `model.pretrained`.
        self.strict_loading = False
        self.scheduler = make_scheduler("ddim")
        self.transformer: nn.Module | None = None
        self.vae: nn.Module | None = None
        self.text_encoder: nn.Module | None = None
        self.tokenizer = None
        self.trainable_names: list[str] = []
        # Samples seen per origin (all ranks) since the run began, resumes included: the mix a run actually saw.
        self.mix_seen: dict[str, int] = {}

    # -- building ------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build (or load) the transformer, VAE, text encoder; called by Lightning after the data is checked."""
        if self.transformer is not None:
            return
        from trainer.cache import encoder_parts
        from trainer.components import build_components

        self.use_components(build_components(self.model_cfg))
        cache = getattr(self._trainer and self._trainer.datamodule, "cache", None)
        if cache is not None:
            cache.check(encoder_parts(self.vae, self.text_encoder, self.text_tokens))

    def use_components(self, parts) -> None:
        """Attach built models (`trainer.components.Components`) and select the stage's trainable set."""
        from trainer.components import load_trainable

        self.tokenizer = parts.tokenizer
        self.transformer, self.vae, self.text_encoder = parts.transformer, parts.vae, parts.text_encoder
        self.transformer.train()
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval()
        if self.model_cfg.init_weights:
            load_trainable(self.transformer, self.model_cfg.init_weights)
        self.trainable_names = select_trainable(self.transformer, self.spec.trainable, self.model_cfg.stage1_blocks)
        if self.model_cfg.gradient_checkpointing and hasattr(self.transformer, "enable_gradient_checkpointing"):
            self.transformer.enable_gradient_checkpointing()

    @property
    def text_tokens(self) -> int:
        """T5 tokens per prompt: the transformer's text length (226 for CogVideoX-2B)."""
        return self.transformer.layerflow_config.text_tokens_per_prompt

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The stage's weights, named as in the transformer (what checkpoints and exports store)."""
        params = dict(self.transformer.named_parameters())
        return {name: params[name].detach() for name in self.trainable_names}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"transformer.{n}" for n in self.trainable_names}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["mix_seen"] = dict(self.mix_seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mix_seen = dict(checkpoint.get("mix_seen", {}))

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.vae, self.text_encoder):
            if frozen is not None:
                frozen.eval()
        return self

    def on_train_start(self) -> None:
        """Lightning's check for modules left in eval mode, on the trainable transformer only: the frozen VAE and T5
        are in eval mode on purpose (`train` above), so Lightning's whole-module count is silenced (trainer.quiet)."""
        stray = [name for name, module in self.transformer.named_modules() if not module.training]
        if stray:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"{len(stray)} transformer module(s) in eval mode at the start of training (e.g. "
                           f"'{stray[0] or 'transformer'}'): their dropout and normalisation would not train")

    # -- loss ------------------------------------------------------------------------------------------------
    def prompt_slots(self, spec: TaskSpec) -> tuple[list[int], torch.Tensor]:
        """`model.layout.prompt_slots` for this transformer, with the in-use mask as a tensor."""
        try:
            slots, used = prompt_slots(spec, self.transformer.layerflow_config.num_prompts)
        except LayoutError as exc:
            raise TrainConfigError(f"{exc}; or drop the task from data.tasks") from exc
        return slots, torch.tensor(used)

    def encode_batch(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents [B, T', C, h, w], text [B, P * text_tokens, d]) from pixels and prompts, or as given pre-encoded
        (latents + all three prompts' embeddings). A conditional task's condition latents are those of its
        `cond_video` / `cond_latents` (the conditions with the pipeline's stand-ins for the generated layers), not
        of the joint pass over the true layers, which would show the model what it is to generate."""
        first = self._first_index(batch)
        layout = self.batch_layout(batch)
        task, spec = layout.task, layout.spec
        slots, used = self.prompt_slots(spec)
        tokens = self.text_tokens
        if "latents" in batch:
            latents = batch["latents"].to(self.device)
            cond = batch.get("cond_latents")
            embeds = batch["prompt_embeds"].to(self.device).unflatten(1, (len(spec.captioned), tokens))
            text = embeds[:, slots].flatten(1, 2)
        else:
            with torch.no_grad():
                latents = self._encode_video(batch["video"], step, first, "vae")
                cond = batch.get("cond_video")
                if cond is not None:
                    cond = self._encode_video(cond, step, first, "vae_cond")[:, layout.clean_indices]
                prompts = [[sample[i] for i in slots] for sample in batch["prompts"]]
                text = encode_prompts(self.tokenizer, self.text_encoder, prompts, max_length=tokens,
                                      device=self.device)
        if spec.conditions:
            if cond is None:
                raise TrainConfigError(f"a {task.value} batch carries no condition latents (cond_latents / "
                                       "cond_video); rebuild the latent cache with `layerflow precompute`")
            latents = latents.clone()
            latents[:, layout.clean_indices] = cond.to(latents)
        keep = batch["prompt_keep"].to(self.device)[:, slots] & used.to(self.device)
        # A dropped prompt is all-zero embeddings: the unconditional input the sampler's CFG uses.
        mask = keep.repeat_interleave(tokens, dim=1)[..., None].to(text.dtype)
        return latents.float(), text * mask

    def batch_layout(self, batch: dict[str, Any]) -> SequenceLayout:
        """Where each layer of this batch's task (its K foregrounds, its given layers) sits, at its frames per
        layer and the VAE's time compression."""
        temporal = int(getattr(self.vae.config, "temporal_compression_ratio", 4))
        spec = task_spec(batch["task"], int(batch.get("num_foregrounds", 1)), tuple(batch.get("given", ())) or None)
        return SequenceLayout(spec, int(batch["frames_per_layer"]), temporal)

    def _encode_video(self, video: torch.Tensor, step: int, first: int, tag: str) -> torch.Tensor:
        """[B, T, 3, H, W] pixels -> scaled latents [B, T', C, h, w], a posterior sample drawn per sample."""
        x = video.to(self.device, self.vae.dtype).permute(0, 2, 1, 3, 4)
        posterior = self.vae.encode(x).latent_dist
        eps = torch.stack([
            torch.randn(posterior.mean.shape[1:], generator=sample_generator(self.seed, step, first + i, tag))
            for i in range(x.shape[0])
        ]).to(posterior.mean)
        return ((posterior.mean + posterior.std * eps) * self.vae.config.scaling_factor).permute(0, 2, 1, 3, 4)

    def compute_loss(self, batch: dict[str, Any], step: int, **draw: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss [B]; `draw` (`weighted_errors`' timesteps / noise) fixes the diffusion draw (evaluation
        at a fixed point)."""
        return self.weighted_errors(batch, step, **draw).flatten(1).mean(1)

    def weighted_errors(
        self,
        batch: dict[str, Any],
        step: int,
        *,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss before its mean: weight * (x0_pred - x0)^2 per element of the generated latents, [B, T, C, h, w]
        in the layout's `noisy_indices` order (`layer_losses` splits it by layer)."""
        latents, text = self.encode_batch(batch, step)
        layout = self.batch_layout(batch)
        clean, x0 = layout.split_latents(latents)
        if self.spec.text_to_video:
            clean, x0, text = self.blend_alone(latents, text, layout)
        b = x0.shape[0]
        first = self._first_index(batch)
        if timesteps is None:
            timesteps = torch.stack([
                torch.randint(0, self.scheduler.config.num_train_timesteps, (),
                              generator=sample_generator(self.seed, step, first + i, "t"))
                for i in range(b)
            ])
        if noise is None:
            noise = torch.stack([
                torch.randn(x0.shape[1:], generator=sample_generator(self.seed, step, first + i, "noise"))
                for i in range(b)
            ])
        timesteps, noise = timesteps.to(self.device), noise.to(x0)
        ab = alpha_bar(self.scheduler, timesteps).view(b, 1, 1, 1, 1)
        noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        v_pred = self.transformer(
            hidden_states=noisy.to(text.dtype),
            encoder_hidden_states=text,
            timestep=timesteps,
            cond_latents=clean if clean.shape[1] else None,
            cond_indices=layout.clean_indices if clean.shape[1] else None,
            motion_scale=batch["motion_scale"].to(self.device),
            spec=layout.spec,
        ).float()
        x0_pred = ab.sqrt() * noisy - (1 - ab).sqrt() * v_pred
        weight = training_loss_weight(ab)
        if self.loss_cfg.layer_weights and not self.spec.text_to_video:
            weight = weight * self.layer_weights(layout).to(weight)
        return weight * (x0_pred - x0) ** 2

    def layer_weights(self, layout: SequenceLayout) -> torch.Tensor:
        """[T, 1, 1, 1]: `model.loss.layer_weights` of the layer each generated latent belongs to."""
        owner = {i: layer for layer in layout.spec.generated for i in layout.latent_indices(layer)}
        weights = [self.loss_cfg.layer_weights.get(layer_kind(owner[i]), 1.0) for i in layout.noisy_indices]
        return torch.tensor(weights).view(-1, 1, 1, 1)

    def blend_alone(self, latents: torch.Tensor, text: torch.Tensor,
                    layout: SequenceLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 0's text-to-video sample from a generation-layout one: no conditions, the blend's latents alone
        (at the sequence's first positions, as a base model sees a clip), and the blend's prompt with every other
        prompt slot empty (all-zero, the dropped-prompt input)."""
        slots, _ = self.prompt_slots(layout.spec)
        blend = [layout.spec.captioned[i] == "blend" for i in slots]
        mask = torch.tensor(blend, device=text.device).repeat_interleave(self.text_tokens)[None, :, None]
        return latents[:, :0], latents[:, layout.latent_indices("blend")], text * mask.to(text.dtype)

    def _first_index(self, batch: dict[str, Any]) -> int:
        # The global index of this rank's first sample in the global batch: per-sample draws then match a
        # single process holding the whole global batch.
        return self.global_rank * len(batch["motion_scale"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The loss, and under "losses" the step's total, per-task and per-layer losses as logged (means over all
        ranks' samples), which `trainer.callbacks.LossCurvesCallback` records: Lightning's own record of a metric
        keeps its last value at the steps that do not log it."""
        layout = self.batch_layout(batch)
        errors = self.weighted_errors(batch, self.global_step)
        per_sample = errors.flatten(1).mean(1)
        loss = per_sample.mean()
        b = per_sample.shape[0]
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=b)
        # Ranks may hold different tasks and layers: reduce (sum, count) of each over all ranks, then log each mean.
        # A rank's number of foregrounds may differ too: every rank makes room for the largest.
        count = layout.spec.num_foregrounds
        if self.trainer.world_size > 1:
            count = int(self.trainer.strategy.reduce(torch.tensor(count, device=self.device), reduce_op="max"))
        names = [f"train/loss_{t.value}" for t in TASKS] + [f"train/loss_layer_{n}" for n in layer_names(count)]
        layers = {"blend": per_sample} if self.spec.text_to_video else layer_losses(errors, layout)
        parts = {f"train/loss_{layout.task.value}": per_sample,
                 **{f"train/loss_layer_{n}": v for n, v in layers.items()}}
        sums = torch.zeros(2, len(names), device=self.device)
        for name, values in parts.items():
            sums[0, names.index(name)] = values.detach().sum()
            sums[1, names.index(name)] = b
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self.trainer.world_size > 1 else sums
        task_sums = sums[:, :len(TASKS)].sum(1)
        losses = {"train/loss": task_sums[0] / task_sums[1]}
        for i, n in enumerate(sums[1].tolist()):
            if n > 0:
                losses[names[i]] = sums[0, i] / n
                self.log(names[i], losses[names[i]], rank_zero_only=True, batch_size=b)
        if "origins" in batch:
            self.count_origins(batch["origins"], b)
        return {"loss": loss, "losses": losses}

    def count_origins(self, origins: list[str], batch: int) -> None:
        """Add this step's samples per origin (summed over ranks) to `mix_seen` and log each origin's share so far
        as `train/mix_<origin>`: the proportions the run actually saw, next to the configured `data.mix`."""
        groups = getattr(getattr(self._trainer, "datamodule", None), "groups", None)
        names = sorted({g.origin for g in groups} if groups else set(origins))
        counts = torch.tensor([float(origins.count(n)) for n in names], device=self.device)
        if self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        for name, count in zip(names, counts.tolist()):
            self.mix_seen[name] = self.mix_seen.get(name, 0) + int(count)
        total = sum(self.mix_seen.values())
        for name in names:
            self.log(f"train/mix_{name}", self.mix_seen.get(name, 0) / total, rank_zero_only=True, batch_size=batch)

    def on_train_end(self) -> None:
        total = sum(self.mix_seen.values())
        if total and self.trainer.is_global_zero:
            seen = ", ".join(f"{n} {c / total:.1%} ({c})" for n, c in sorted(self.mix_seen.items()))
            print(f"samples seen per origin: {seen}; {total} in all", flush=True)

    # -- optimisation ----------------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        params = dict(self.transformer.named_parameters())
        return [params[n] for n in self.trainable_names]

    def configure_optimizers(self):
        cfg = self.optim_cfg
        lr = cfg.lr if cfg.lr is not None else self.spec.lr
        optimizer = torch.optim.AdamW(
            self.trainable_parameters(), lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, eps=cfg.eps
        )
        total = self.trainer.max_steps if cfg.schedule == "cosine" else 0
        if cfg.schedule == "cosine" and total <= 0:
            raise TrainConfigError("model.optim.schedule=cosine decays over trainer.max_steps; set it")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLR(cfg.warmup_steps, total, cfg.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
