"""Typed configuration of a training run: the stage, the data stream, the model and the optimiser.

LightningCLI builds these dataclasses from YAML (`infra/configs/train/`), so a misspelt key is an error, not a
silently ignored option.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from model.layout import PAPER_TASKS, LayoutError, Task


class TrainConfigError(ValueError):
    """A configuration that cannot train; the message names the option and the valid choices."""


@dataclass(frozen=True)
class TrainingStage:
    """What a stage trains, at which learning rate, on which data: stage 0 pretrains the base, then the paper's
    three stages."""

    stage: int
    trainable: Literal["all", "blocks", "motion_lora", "content_lora"]
    lr: float
    # Stage 2 learns "no motion" from static videos: every sample becomes one frame repeated over time.
    static_videos: bool
    # Stage 0 trains a plain text-to-video model: the blend sub-clip alone, with the blend's prompt.
    text_to_video: bool = False


STAGES: dict[int, TrainingStage] = {
    0: TrainingStage(0, "all", 1e-4, static_videos=False, text_to_video=True),
    1: TrainingStage(1, "blocks", 1e-4, static_videos=False),
    2: TrainingStage(2, "motion_lora", 1e-3, static_videos=True),
    3: TrainingStage(3, "content_lora", 5e-3, static_videos=False),
}


def stage_spec(stage: int) -> TrainingStage:
    try:
        return STAGES[int(stage)]
    except (KeyError, TypeError, ValueError):
        raise TrainConfigError(f"unknown stage {stage!r}; choose one of {', '.join(map(str, STAGES))}") from None


@dataclass
class DataConfig:
    """The sample stream: which shards, how samples are mixed, framed, cropped and turned into tasks."""

    shards: str = ""
    frames_per_layer: int = 16
    height: int = 480
    width: int = 720
    batch_size: int = 1
    num_workers: int = 2
    shuffle_buffer: int = 64
    # Sampling weight per `origin` (engine, copy_paste, image, official_import, synthetic); None: every origin
    # in the manifest, weighted by its sample count. Origins left out of an explicit mix are not read.
    mix: dict[str, float] | None = None
    # Sampling weight per task; a micro-batch shares one task (the condition length differs per task).
    tasks: dict[str, float] = field(
        default_factory=lambda: {t.value: 1.0 for t in PAPER_TASKS}
    )
    prompt_dropout: float = 0.1
    # None: the stage decides (stage 2 trains on static videos).
    static_videos: bool | None = None
    crop: Literal["random", "center"] = "random"
    seed: int = 0
    # The latent cache of `python -m trainer.precompute`; None: `<shards>/latent_cache` when it exists.
    cache: str | None = None
    # False: decode pixels and encode them on the fly even when a cache exists.
    use_cache: bool = True

    def validate(self) -> None:
        if not self.shards:
            raise TrainConfigError("data.shards is empty; point it at a shard directory (make dataset writes one)")
        if self.batch_size < 1 or self.num_workers < 0:
            raise TrainConfigError(f"data.batch_size must be >= 1 and data.num_workers >= 0, got "
                                   f"{self.batch_size} and {self.num_workers}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise TrainConfigError(f"data.prompt_dropout must be in [0, 1), got {self.prompt_dropout}")
        if self.height % 8 or self.width % 8:
            raise TrainConfigError(f"data.height and data.width must be multiples of 8 (VAE x patch), got "
                                   f"{self.height}x{self.width}")
        task_weights(self.tasks)
        if self.mix is not None and (not self.mix or min(self.mix.values()) < 0 or sum(self.mix.values()) <= 0):
            raise TrainConfigError(f"data.mix needs non-negative weights with a positive sum, got {self.mix}")


def task_weights(tasks: dict[str, float]) -> dict[Task, float]:
    try:
        weights = {Task.parse(name): float(w) for name, w in tasks.items()}
    except LayoutError as exc:
        raise TrainConfigError(f"data.tasks: {exc}") from None
    if not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
        raise TrainConfigError(f"data.tasks needs non-negative weights with a positive sum, got {tasks}")
    return {t: w for t, w in weights.items() if w > 0}


@dataclass
class ModelConfig:
    """Which model to build and where its weights come from."""

    preset: str = "cogvideox-2b"
    # A diffusers-layout folder (transformer/, vae/, text_encoder/, tokenizer/); None only for the tiny preset.
    pretrained: str | None = None
    # Trainable weights of an earlier stage (its exported `trainable.safetensors`), loaded on top.
    init_weights: str | None = None
    gradient_checkpointing: bool = True
    # Seed of the random initialisation of the tiny preset.
    seed: int = 0
    # Dual-LoRA shape; None keeps the preset's (official: motion 8, content 256, alpha 1, blocks "mod6").
    # Applies when the LoRAs are created (tiny preset, stock CogVideoX-2B); a LayerFlow folder has its own.
    motion_rank: int | None = None
    content_rank: int | None = None
    lora_alpha: float | None = None
    lora_blocks: str | list[int] | None = None
    # Stage 1's trainable blocks: "paper" fine-tunes a pretrained base's 1/6 of the blocks (index % 6 == 5) and
    # the layer embedder; "all" trains every non-LoRA weight of the transformer, for a base that was never
    # pretrained (the tiny world's, where stage 1 stands in for CogVideoX's pretraining too).
    stage1_blocks: Literal["paper", "all"] = "paper"

    def lora_overrides(self) -> dict[str, Any]:
        """The LoRA fields set here, as `model.config.TransformerConfig` overrides."""
        fields = {"motion_rank": self.motion_rank, "content_rank": self.content_rank,
                  "lora_alpha": self.lora_alpha, "lora_blocks": self.lora_blocks}
        return {k: v for k, v in fields.items() if v is not None}


@dataclass
class OptimConfig:
    """AdamW as in the released config; lr None takes the stage's learning rate."""

    lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    warmup_steps: int = 0
    # After the warm-up: "constant" (the released configs), or "cosine" down to `min_lr_ratio` x lr at
    # trainer.max_steps.
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0


@dataclass
class LossConfig:
    """How the per-element errors of the generated latents are weighted (the released recipe: every layer alike)."""

    # A weight per kind of layer: "fg" (every foreground), "alpha" (every matte), "bg", "blend"; 1 where unset.
    layer_weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        unknown = sorted(set(self.layer_weights) - {"fg", "alpha", "bg", "blend"})
        if unknown or any(w < 0 for w in self.layer_weights.values()):
            raise TrainConfigError(f"model.loss.layer_weights takes non-negative weights for fg, alpha, bg, blend; "
                                   f"got {self.layer_weights}")
