"""Where each layer sits in LayerFlow's single time-concatenated video, and in its latent sequence.

The four sub-clips (fg, alpha, bg, blend, `data_engine.schema.LAYERS`) are concatenated along time into one
video in [-1, 1]: alpha as a 3-channel video, fg as the object over mid-grey (`rgb * alpha` in [-1, 1]).
Conditional tasks whose model was trained with a noised-image input (fg- and bg-conditioned generation)
prepend a copy of frame 0, so 4 x 16 + 1 = 65 frames become 17 latents; generation and decomposition keep
64 frames / 16 latents. Latent `k * L + d` (L latents per layer, d = 1 with the duplicate) belongs to layer k;
the duplicate's latent 0 travels with fg. Conditions are clean latents kept in their own place in the sequence.

Condition latents come from one joint VAE pass over the whole sequence, and that VAE mixes in time: in that pass
a condition's latents also carry what the frames before it show. Given only the conditions, the pipeline fills
the layers it generates with stand-ins (`pack_conditions`); the trainer encodes its condition latents from the
same stand-ins, so a model never learns to read the true generated layers out of its condition (a decomposition
trained on the joint pass of the true layers found its matte in the blend's latents, and at inference, where
that matte is a stand-in, returned none).

The trainer and the pipeline share this module, so both see one definition of the layout.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from data_engine.schema import CAPTIONED_LAYERS, LAYERS, MID_GREY, Captions, LayeredClip

# The prompt of each captioned layer is prefixed with this index ("0, " + fg ...), whatever the task.
PROMPT_INDEX: dict[str, int] = {"fg": 0, "bg": 1, "blend": 2}
# The pipeline's keyword argument for each condition layer; the generate command's flags are the same words.
CONDITION_ARGS: dict[str, str] = {"fg": "foreground", "alpha": "alpha", "bg": "background", "blend": "blend"}


class LayoutError(ValueError):
    """Input that does not fit the sub-clip layout; the message says what is wrong and what is expected."""


class Task(str, Enum):
    GENERATE = "generate"
    FG_CONDITIONED = "fg_conditioned"
    BG_CONDITIONED = "bg_conditioned"
    DECOMPOSE = "decompose"

    @classmethod
    def parse(cls, value: "Task | str") -> "Task":
        """Our names, or the official release's (gen, fg2bg, bg2fg, seg)."""
        if isinstance(value, Task):
            return value
        key = str(value).strip().lower().replace("-", "_")
        key = _TASK_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise LayoutError(f"unknown task {value!r}; choose one of {names}") from None


_TASK_ALIASES = {"gen": "generate", "fg2bg": "fg_conditioned", "bg2fg": "bg_conditioned", "seg": "decompose"}


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    conditions: tuple[str, ...]  # layers given as clean inputs
    prompt_layers: tuple[str, ...]  # captioned layers whose prompts are encoded, in this order
    duplicate_first_frame: bool

    @property
    def generated(self) -> tuple[str, ...]:
        return tuple(layer for layer in LAYERS if layer not in self.conditions)


TASKS: dict[Task, TaskSpec] = {
    Task.GENERATE: TaskSpec(Task.GENERATE, (), CAPTIONED_LAYERS, False),
    Task.FG_CONDITIONED: TaskSpec(Task.FG_CONDITIONED, ("fg", "alpha"), CAPTIONED_LAYERS, True),
    Task.BG_CONDITIONED: TaskSpec(Task.BG_CONDITIONED, ("bg",), CAPTIONED_LAYERS, True),
    # The official decomposition model reads two prompts (fg, bg); the blend is the condition.
    Task.DECOMPOSE: TaskSpec(Task.DECOMPOSE, ("blend",), ("fg", "bg"), False),
}


# The tasks given some layers, whose condition latents the pipeline encodes with stand-ins (`pack_conditions`).
CONDITIONAL_TASKS: tuple[Task, ...] = tuple(task for task, spec in TASKS.items() if spec.conditions)


def task_spec(task: Task | str) -> TaskSpec:
    return TASKS[Task.parse(task)]


def is_static(kind: str, static_videos: bool) -> bool:
    """Whether a training sample is a still video (one frame repeated): every image sample, and every sample of a
    stage that trains on static videos (stage 2)."""
    return static_videos or kind == "image"


def motion_scale(static: bool) -> float:
    """The Motion LoRA's scale for a sample: 1 on a still video, 0 on a real one; sampling passes none (0). So the
    Motion LoRA absorbs what makes image data still, and the Content LoRA trained beside it carries over to
    videos with it off (the paper's dual LoRA)."""
    return 1.0 if static else 0.0


def prompt_slots(task: Task | str, num_prompts: int) -> tuple[list[int], list[bool]]:
    """Which captioned layers (indices into fg, bg, blend) fill a `num_prompts`-slot model's text, and which of
    those slots the task uses. A 3-slot (unified) model always reads all three; a prompt the task does not use
    (decomposition's blend) is fed as zeros, the dropped-prompt input it was trained with. A model with as many
    slots as the task has prompts (the official 2-prompt decomposition) reads the task's prompts only.
    """
    spec = task_spec(task)
    if num_prompts == len(CAPTIONED_LAYERS):
        return list(range(num_prompts)), [layer in spec.prompt_layers for layer in CAPTIONED_LAYERS]
    if num_prompts == len(spec.prompt_layers):
        return [CAPTIONED_LAYERS.index(layer) for layer in spec.prompt_layers], [True] * num_prompts
    raise LayoutError(
        f"task {spec.task.value} uses {len(spec.prompt_layers)} prompts ({', '.join(spec.prompt_layers)}) but the "
        f"model reads {num_prompts}; load the checkpoint trained for {spec.task.value}"
    )


@dataclass(frozen=True)
class SequenceLayout:
    """Frame and latent positions of each layer for one task."""

    spec: TaskSpec
    frames_per_layer: int = 16
    temporal_compression: int = 4

    def __post_init__(self) -> None:
        if self.frames_per_layer <= 0 or self.frames_per_layer % self.temporal_compression:
            raise LayoutError(
                f"frames per layer must be a positive multiple of {self.temporal_compression} "
                f"(the VAE's time compression), got {self.frames_per_layer}"
            )

    @classmethod
    def for_task(cls, task: Task | str, frames_per_layer: int = 16, temporal_compression: int = 4) -> "SequenceLayout":
        return cls(task_spec(task), frames_per_layer, temporal_compression)

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def duplicate(self) -> int:
        return int(self.spec.duplicate_first_frame)

    @property
    def num_frames(self) -> int:
        return len(LAYERS) * self.frames_per_layer + self.duplicate

    @property
    def latents_per_layer(self) -> int:
        return self.frames_per_layer // self.temporal_compression

    @property
    def num_latents(self) -> int:
        return len(LAYERS) * self.latents_per_layer + self.duplicate

    def frame_slice(self, layer: str) -> slice:
        start = LAYERS.index(layer) * self.frames_per_layer + self.duplicate
        return slice(start, start + self.frames_per_layer)

    def latent_indices(self, layer: str) -> list[int]:
        """The latents that encode `layer`; fg includes the duplicated first frame's latent."""
        start = LAYERS.index(layer) * self.latents_per_layer + self.duplicate
        head = list(range(self.duplicate)) if layer == LAYERS[0] else []
        return head + list(range(start, start + self.latents_per_layer))

    @property
    def clean_indices(self) -> list[int]:
        return sorted(i for layer in self.spec.conditions for i in self.latent_indices(layer))

    @property
    def noisy_indices(self) -> list[int]:
        clean = set(self.clean_indices)
        return [i for i in range(self.num_latents) if i not in clean]

    def split_latents(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, C, h, w] full sequence -> (clean [B, Tc, ...], noisy [B, Tn, ...]) along dim 1."""
        self._check_latents(latents, self.num_latents, "the full latent sequence")
        clean = latents[:, self.clean_indices]
        noisy = latents[:, self.noisy_indices]
        return clean, noisy

    def join_latents(self, clean: torch.Tensor | None, noisy: torch.Tensor) -> torch.Tensor:
        """Put clean and noisy latents back in sequence order (the inverse of `split_latents`)."""
        self._check_latents(noisy, len(self.noisy_indices), "noisy latents")
        if not self.clean_indices:
            return noisy
        if clean is None:
            raise LayoutError(f"task {self.task.value} needs the clean condition latents to rebuild the sequence")
        self._check_latents(clean, len(self.clean_indices), "clean latents")
        full = noisy.new_empty((noisy.shape[0], self.num_latents, *noisy.shape[2:]))
        full[:, self.clean_indices] = clean.to(noisy.dtype)
        full[:, self.noisy_indices] = noisy
        return full

    def _check_latents(self, x: torch.Tensor, expected: int, what: str) -> None:
        if x.ndim != 5 or x.shape[1] != expected:
            raise LayoutError(
                f"{what} for task {self.task.value} must be [B, {expected}, C, h, w], got {tuple(x.shape)}"
            )

    def pack(self, layers: Mapping[str, np.ndarray] | LayeredClip) -> torch.Tensor:
        """uint8 layers -> one float32 video [T, 3, H, W] in [-1, 1], in layer order (duplicate first if any).

        fg is taken as stored (over mid-grey), which is `rgb * alpha` in [-1, 1] up to the grey's rounding.
        """
        arrays = _layer_arrays(layers)
        for name in LAYERS:
            if name not in arrays:
                raise LayoutError(f"layer {name!r} is missing; pack needs all of {', '.join(LAYERS)}")
        frames = []
        for name in LAYERS:
            arr = _check_layer(name, arrays[name], self.frames_per_layer)
            if arr.ndim == 3:
                arr = np.repeat(arr[..., None], 3, axis=-1)
            frames.append(arr)
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise LayoutError(f"layers differ in size: {sorted(shapes)}; all must be [T, H, W(, 3)] alike")
        video = np.concatenate(([frames[0][:1]] if self.duplicate else []) + frames, axis=0)
        return uint8_to_signed(torch.from_numpy(video).permute(0, 3, 1, 2))

    def pack_conditions(self, layers: Mapping[str, np.ndarray] | LayeredClip) -> torch.Tensor:
        """The video whose joint VAE pass gives this task's condition latents: `pack` of the task's condition
        layers (any others in `layers` are ignored) with a stand-in for each layer it generates, the value
        closest to what it would be: alpha transparent, fg mid-grey (its empty value), and an unknown bg or blend
        the other one's frames when given (a background looks like its blend), else mid-grey."""
        arrays = _layer_arrays(layers)
        given = {name: arrays[name] for name in self.spec.conditions if name in arrays}
        if len(given) != len(self.spec.conditions) or not given:
            raise LayoutError(f"task {self.task.value} packs its conditions {', '.join(self.spec.conditions) or '(none)'}; "
                              f"got {', '.join(sorted(arrays)) or 'none'}")
        frames, height, width = next(iter(given.values())).shape[:3]
        grey = np.full((frames, height, width, 3), MID_GREY, np.uint8)
        given.setdefault("alpha", np.zeros((frames, height, width), np.uint8))
        given.setdefault("fg", grey)
        given.setdefault("bg", given.get("blend", grey))
        given.setdefault("blend", given.get("bg", grey))
        return self.pack(given)

    def unpack(self, video: torch.Tensor) -> dict[str, np.ndarray]:
        """[T, 3, H, W] in [-1, 1] -> uint8 layers (alpha [T, H, W] as the mean of its three channels)."""
        if video.ndim != 4 or video.shape[0] != self.num_frames or video.shape[1] != 3:
            raise LayoutError(
                f"a {self.task.value} video must be [{self.num_frames}, 3, H, W], got {tuple(video.shape)}"
            )
        out: dict[str, np.ndarray] = {}
        for name in LAYERS:
            part = video[self.frame_slice(name)].float()
            if name == "alpha":
                part = part.mean(dim=1, keepdim=True)
            arr = signed_to_uint8(part).permute(0, 2, 3, 1).numpy()
            out[name] = arr[..., 0] if name == "alpha" else arr
        return out

    def unpack_clip(self, video: torch.Tensor, key: str, captions: Captions | None = None, **meta) -> LayeredClip:
        layers = self.unpack(video)
        return LayeredClip(key=key, captions=captions or Captions(), **layers, **meta)


def uint8_to_signed(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 127.5 - 1.0


def signed_to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _layer_arrays(layers: Mapping[str, np.ndarray] | LayeredClip) -> dict[str, np.ndarray]:
    if isinstance(layers, LayeredClip):
        return {name: layers.layer(name) for name in LAYERS}
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise LayoutError(f"unknown layer name(s) {sorted(unknown)}; layers are {', '.join(LAYERS)}")
    return dict(layers)


def _check_layer(name: str, arr: np.ndarray, frames: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise LayoutError(f"layer {name!r} must be uint8, got {arr.dtype}")
    colour_ok = arr.ndim == 4 and arr.shape[-1] == 3
    grey_ok = name == "alpha" and arr.ndim == 3
    if not (colour_ok or grey_ok):
        want = "[T, H, W] or [T, H, W, 3]" if name == "alpha" else "[T, H, W, 3]"
        raise LayoutError(f"layer {name!r} must be {want}, got shape {arr.shape}")
    if arr.shape[0] != frames:
        raise LayoutError(f"layer {name!r} has {arr.shape[0]} frames; this layout needs {frames} per layer")
    return arr
