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

K foregrounds (`data_engine.schema.layer_names`): fg_k, alpha_k follow the paper's four sub-clips and
prompts fg_k follow its three (prompt index k + 2), so a K = 1 sequence and prompt set is the paper's and a
layer's place never depends on K. Given any subset of the layers (`Task.GIVEN`), the model generates the rest;
the paper's four tasks are the subsets none, all foregrounds, bg and blend.

The trainer and the pipeline share this module, so both see one definition of the layout.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from data_engine.schema import (
    CAPTIONED_LAYERS,
    LAYERS,
    MID_GREY,
    LayeredClip,
    alpha_name,
    captioned_layer_names,
    fg_name,
    foreground_index,
    is_alpha,
    layer_names,
)

# The prompt of each captioned layer is prefixed with this index ("0, " + fg ...), whatever the task.
PROMPT_INDEX: dict[str, int] = {"fg": 0, "bg": 1, "blend": 2}


class LayoutError(ValueError):
    """Input that does not fit the sub-clip layout; the message says what is wrong and what is expected."""


def prompt_index(layer: str) -> int:
    """The paper's 0, 1, 2 for fg, bg, blend; k + 2 for fg_k."""
    if layer in PROMPT_INDEX:
        return PROMPT_INDEX[layer]
    k = foreground_index(layer)
    if k is None or is_alpha(layer):
        raise LayoutError(f"layer {layer!r} has no prompt; prompts exist for fg, bg, blend and fg_1, fg_2, ...")
    return k + 2


class Task(str, Enum):
    GENERATE = "generate"
    FG_CONDITIONED = "fg_conditioned"
    BG_CONDITIONED = "bg_conditioned"
    DECOMPOSE = "decompose"
    GIVEN = "given"  # any other subset of the layers given (named by the caller), the rest generated

    @classmethod
    def parse(cls, value: Task | str) -> Task:
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
    conditions: tuple[str, ...]  # layers given as clean inputs, in sequence order
    prompt_layers: tuple[str, ...]  # captioned layers whose prompts are encoded, in prompt-index order
    duplicate_first_frame: bool
    num_foregrounds: int = 1

    @property
    def layers(self) -> tuple[str, ...]:
        return layer_names(self.num_foregrounds)

    @property
    def captioned(self) -> tuple[str, ...]:
        return captioned_layer_names(self.num_foregrounds)

    @property
    def generated(self) -> tuple[str, ...]:
        return tuple(layer for layer in self.layers if layer not in self.conditions)


def _named_conditions(task: Task, num_foregrounds: int) -> tuple[str, ...]:
    foregrounds = tuple(name for k in range(num_foregrounds) for name in (fg_name(k), alpha_name(k)))
    return {Task.GENERATE: (), Task.FG_CONDITIONED: foregrounds, Task.BG_CONDITIONED: ("bg",),
            Task.DECOMPOSE: ("blend",)}[task]


def _spec(task: Task, num_foregrounds: int, conditions: tuple[str, ...]) -> TaskSpec:
    captioned = captioned_layer_names(num_foregrounds)
    # The official decomposition model reads the foregrounds' and the bg's prompts; the blend is the condition.
    prompts = tuple(layer for layer in captioned if layer != "blend") if task is Task.DECOMPOSE else captioned
    # The official fg- and bg-conditioned models were trained with a copy of frame 0 in front (see module doc).
    duplicate = task in (Task.FG_CONDITIONED, Task.BG_CONDITIONED)
    return TaskSpec(task, conditions, prompts, duplicate, num_foregrounds)


# The paper's tasks at K = 1, whose layouts the official checkpoints were trained on.
TASKS: dict[Task, TaskSpec] = {
    task: _spec(task, 1, _named_conditions(task, 1)) for task in Task if task is not Task.GIVEN
}
# The named tasks: the paper's four, each a fixed subset of the layers.
PAPER_TASKS: tuple[Task, ...] = tuple(TASKS)

# The tasks given some layers, whose condition latents the pipeline encodes with stand-ins (`pack_conditions`).
CONDITIONAL_TASKS: tuple[Task, ...] = tuple(task for task, spec in TASKS.items() if spec.conditions)


def task_spec(task: Task | str, num_foregrounds: int = 1, given: tuple[str, ...] | None = None) -> TaskSpec:
    """The spec of `task` with K = `num_foregrounds`. `Task.GIVEN` takes the given layers in `given` (any
    non-empty proper subset of `layer_names(K)`; a subset that is one of the paper's tasks is that task)."""
    task = Task.parse(task)
    layers = layer_names(num_foregrounds)
    if task is not Task.GIVEN:
        named = _named_conditions(task, num_foregrounds)
        if given is not None and set(given) != set(named):
            raise LayoutError(f"task {task.value} is given {', '.join(named) or 'nothing'}, not "
                              f"{', '.join(given)}; use task 'given' for another subset")
        return _spec(task, num_foregrounds, named)
    unknown = sorted(set(given or ()) - set(layers))
    if unknown:
        raise LayoutError(f"unknown layer(s) {unknown} for {num_foregrounds} foreground(s); layers are "
                          f"{', '.join(layers)}")
    conditions = tuple(layer for layer in layers if layer in set(given or ()))
    if not conditions or len(conditions) == len(layers):
        raise LayoutError(f"task given needs some but not all of the layers {', '.join(layers)}, got "
                          f"{', '.join(conditions) or 'none'}")
    for named in TASKS:
        if set(conditions) == set(_named_conditions(named, num_foregrounds)):
            return _spec(named, num_foregrounds, conditions)
    return _spec(Task.GIVEN, num_foregrounds, conditions)


def is_static(kind: str, static_videos: bool) -> bool:
    """Whether a training sample is a still video (one frame repeated): every image sample, and every sample of a
    stage that trains on static videos (stage 2)."""
    return static_videos or kind == "image"


def motion_scale(static: bool) -> float:
    """The Motion LoRA's scale for a sample: 1 on a still video, 0 on a real one; sampling passes none (0). So the
    Motion LoRA absorbs what makes image data still, and the Content LoRA trained beside it carries over to
    videos with it off (the paper's dual LoRA)."""
    return 1.0 if static else 0.0


def prompt_slots(task: Task | str | TaskSpec, num_prompts: int) -> tuple[list[int], list[bool]]:
    """Which captioned layers (indices into `spec.captioned`: fg, bg, blend, fg_1, ...) fill the text of a model
    with `num_prompts` slots at K = 1, and which of those slots the task uses. A 3-slot (unified) model reads
    every captioned layer (K + 2 prompts); a prompt the task does not use (decomposition's blend) is fed as zeros,
    the dropped-prompt input it was trained with. A model with as many slots as the task has prompts (the
    official 2-prompt decomposition, K = 1 only) reads the task's prompts only.
    """
    spec = task if isinstance(task, TaskSpec) else task_spec(task)
    captioned = spec.captioned
    if num_prompts == len(CAPTIONED_LAYERS):
        return list(range(len(captioned))), [layer in spec.prompt_layers for layer in captioned]
    if num_prompts == len(spec.prompt_layers) and spec.num_foregrounds == 1:
        return [captioned.index(layer) for layer in spec.prompt_layers], [True] * num_prompts
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
    def for_task(cls, task: Task | str, frames_per_layer: int = 16, temporal_compression: int = 4,
                 num_foregrounds: int = 1) -> SequenceLayout:
        return cls(task_spec(task, num_foregrounds), frames_per_layer, temporal_compression)

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def duplicate(self) -> int:
        return int(self.spec.duplicate_first_frame)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.spec.layers

    @property
    def num_frames(self) -> int:
        return len(self.layers) * self.frames_per_layer + self.duplicate

    @property
    def latents_per_layer(self) -> int:
        return self.frames_per_layer // self.temporal_compression

    @property
    def num_latents(self) -> int:
        return len(self.layers) * self.latents_per_layer + self.duplicate

    def _position(self, layer: str) -> int:
        if layer not in self.layers:
            raise LayoutError(f"layer {layer!r} is not in a {self.spec.num_foregrounds}-foreground sequence "
                              f"({', '.join(self.layers)})")
        return self.layers.index(layer)

    def frame_slice(self, layer: str) -> slice:
        start = self._position(layer) * self.frames_per_layer + self.duplicate
        return slice(start, start + self.frames_per_layer)

    def latent_indices(self, layer: str) -> list[int]:
        """The latents that encode `layer`; fg includes the duplicated first frame's latent."""
        start = self._position(layer) * self.latents_per_layer + self.duplicate
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
        arrays = _layer_arrays(layers, self.spec)
        for name in self.layers:
            if name not in arrays:
                raise LayoutError(f"layer {name!r} is missing; pack needs all of {', '.join(self.layers)}")
        frames = []
        for name in self.layers:
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
        closest to what it would be: alphas transparent, fgs mid-grey (their empty value), and an unknown bg or
        blend the other one's frames when given (a background looks like its blend), else mid-grey."""
        arrays = _layer_arrays(layers, self.spec)
        given = {name: arrays[name] for name in self.spec.conditions if name in arrays}
        if len(given) != len(self.spec.conditions) or not given:
            raise LayoutError(f"task {self.task.value} packs its conditions "
                              f"{', '.join(self.spec.conditions) or '(none)'}; "
                              f"got {', '.join(sorted(arrays)) or 'none'}")
        frames, height, width = next(iter(given.values())).shape[:3]
        grey = np.full((frames, height, width, 3), MID_GREY, np.uint8)
        for name in self.layers:
            if foreground_index(name) is not None:
                given.setdefault(name, np.zeros((frames, height, width), np.uint8) if is_alpha(name) else grey)
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
        for name in self.layers:
            part = video[self.frame_slice(name)].float()
            if is_alpha(name):
                part = part.mean(dim=1, keepdim=True)
            arr = signed_to_uint8(part).permute(0, 2, 3, 1).numpy()
            out[name] = arr[..., 0] if is_alpha(name) else arr
        return out


def uint8_to_signed(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 127.5 - 1.0


def signed_to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _layer_arrays(layers: Mapping[str, np.ndarray] | LayeredClip, spec: TaskSpec) -> dict[str, np.ndarray]:
    names = spec.layers
    if isinstance(layers, LayeredClip):
        if layers.num_foregrounds != spec.num_foregrounds:
            raise LayoutError(f"clip {layers.key} has {layers.num_foregrounds} foreground(s); this layout has "
                              f"{spec.num_foregrounds}")
        return {name: layers.layer(name) for name in names}
    unknown = set(layers) - set(names)
    if unknown:
        raise LayoutError(f"unknown layer name(s) {sorted(unknown)}; layers are {', '.join(names)}")
    return dict(layers)


def _check_layer(name: str, arr: np.ndarray, frames: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise LayoutError(f"layer {name!r} must be uint8, got {arr.dtype}")
    colour_ok = arr.ndim == 4 and arr.shape[-1] == 3
    grey_ok = is_alpha(name) and arr.ndim == 3
    if not (colour_ok or grey_ok):
        want = "[T, H, W] or [T, H, W, 3]" if is_alpha(name) else "[T, H, W, 3]"
        raise LayoutError(f"layer {name!r} must be {want}, got shape {arr.shape}")
    if arr.shape[0] != frames:
        raise LayoutError(f"layer {name!r} has {arr.shape[0]} frames; this layout needs {frames} per layer")
    return arr
