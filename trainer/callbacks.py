"""Validation during training: layered samples from fixed prompts and seeds, and the loss per task at fixed
diffusion draws, logged to TensorBoard every N steps (rank 0); and the training loss curves (total, per task, per
layer) drawn into the run folder."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from data_engine.schema import LayeredClip
from model.export import preview_frames
from model.layout import PAPER_TASKS
from trainer.data import collate

DEFAULT_PROMPTS = (
    ("A red balloon floats in the air.", "A quiet park with tall trees.", "A red balloon floats over a quiet park."),
    ("A brown dog runs.", "Waves roll onto a sandy beach.", "A brown dog runs along a sandy beach."),
)


@dataclass
class SampleSpec:
    prompts: list[tuple[str, str, str]] = field(default_factory=lambda: [tuple(p) for p in DEFAULT_PROMPTS])
    seed: int = 1234
    num_inference_steps: int = 50
    guidance_scale: float = 6.0


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """uint8 [T, H, W, 3] -> an animated GIF (TensorBoard shows GIF image summaries as videos)."""
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def log_gif(logger, tag: str, frames: np.ndarray, step: int, fps: float) -> None:
    from tensorboard.compat.proto.summary_pb2 import Summary

    t, h, w, _ = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    logger.experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class ValidationCallback(L.Callback):
    """Every `every_n_steps`: generate `sample.prompts` (grid: fg over a checkerboard | alpha / bg | blend) and
    compute each task's loss on `num_examples` fixed examples at fixed timesteps and noise."""

    def __init__(self, every_n_steps: int = 500, sample: SampleSpec | None = None, num_examples: int = 2,
                 fixed_timestep: int = 500) -> None:
        self.every_n_steps = every_n_steps
        self.sample = sample or SampleSpec()
        self.num_examples = num_examples
        self.fixed_timestep = fixed_timestep
        self._examples = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for task, loss in self.task_losses(trainer, pl_module).items():
                pl_module.logger.log_metrics({f"val/loss_{task}": loss}, step=step)
            if hasattr(pl_module.logger.experiment, "_get_file_writer"):
                for i, clip in enumerate(self.generate(pl_module)):
                    log_gif(pl_module.logger, f"samples/{i}", preview_frames(clip), step, clip.fps)
        pl_module.train(was_training)

    def task_losses(self, trainer: L.Trainer, pl_module) -> dict[str, float]:
        if self._examples is None:
            examples = trainer.datamodule.stream().first_examples(self.num_examples)
            # One batch: the examples with the first one's number of foregrounds.
            count = examples[0].get("num_foregrounds", 1)
            self._examples = [e for e in examples if e.get("num_foregrounds", 1) == count]
        out = {}
        for task in PAPER_TASKS:
            batch = collate(self._examples, task, trainer.datamodule.cfg.frames_per_layer)
            b = len(self._examples)
            timesteps = torch.full((b,), self.fixed_timestep, dtype=torch.long)
            per_sample = pl_module.compute_loss(batch, 0, timesteps=timesteps, noise=None)
            out[task.value] = float(per_sample.mean())
        return out

    def generate(self, pl_module) -> list[LayeredClip]:
        from model.pipeline import LayerFlowPipeline
        from model.schedule import make_scheduler

        pipe = LayerFlowPipeline(tokenizer=pl_module.tokenizer, text_encoder=pl_module.text_encoder,
                                 vae=pl_module.vae, transformer=pl_module.transformer,
                                 scheduler=make_scheduler("dpm"))
        pipe.set_progress_bar_config(disable=True)
        cfg = pl_module.trainer.datamodule.cfg
        fg, bg, blend = (list(p) for p in zip(*self.sample.prompts))
        generator = torch.Generator().manual_seed(self.sample.seed)
        return pipe(fg, bg, blend, num_frames=cfg.frames_per_layer, height=cfg.height, width=cfg.width,
                    num_inference_steps=self.sample.num_inference_steps, guidance_scale=self.sample.guidance_scale,
                    generator=generator).clips


# The loss-curve figure's panels, left to right: a logged loss goes to the panel of its longest matching prefix.
CURVE_PANELS = (("train/loss", "total"), ("train/loss_", "per task"), ("train/loss_layer_", "per layer"))


def smooth(values: list[float], weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so that the first points are not pulled
    towards zero."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return np.asarray(out)


def draw_loss_curves(history: dict[str, list[tuple[int, float]]], smoothing: float = 0.6):
    """A figure with a panel per group of `CURVE_PANELS`: each loss's (step, value) points, faint, under their
    smoothed curve; log-scale losses."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state: safe in any process

    panels: dict[str, dict[str, list[tuple[int, float]]]] = {title: {} for _, title in CURVE_PANELS}
    for name, points in sorted(history.items()):
        prefix, title = max(((p, t) for p, t in CURVE_PANELS if name.startswith(p)), key=lambda pt: len(pt[0]))
        panels[title][name[len(prefix):] or "loss"] = points
    panels = {title: curves for title, curves in panels.items() if curves}
    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for ax, (title, curves) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for label, points in curves.items():
            steps, values = zip(*points)
            (line,) = ax.plot(steps, smooth(list(values), smoothing), label=label, linewidth=1.5)
            ax.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
        ax.set(title=f"training loss, {title}", xlabel="step", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return figure


class LossCurvesCallback(L.Callback):
    """Records the losses `LayerFlowModule.training_step` returns under "losses" (total, per task, per layer),
    each point the mean over the steps since the last one (every `log_every_n_steps`, or more often in a run too
    short for `MIN_POINTS` points at that pace), and draws them into `<default_root_dir>/<filename>` at the end
    of training and every `every_n_steps` (0: at the end only). The recorded points travel in checkpoints, so a
    resumed run's figure covers the whole run."""

    MIN_POINTS = 100

    def __init__(self, every_n_steps: int = 0, filename: str = "loss_curves.png", smoothing: float = 0.6) -> None:
        self.every_n_steps = every_n_steps
        self.filename = filename
        self.smoothing = smoothing
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._pending: dict[str, tuple[torch.Tensor, int]] = {}
        self._recorded_step = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        for name, value in outputs["losses"].items():
            total, count = self._pending.get(name, (0.0, 0))
            self._pending[name] = (total + value.detach(), count + 1)
        step = trainer.global_step
        every = trainer.log_every_n_steps
        if trainer.max_steps > 0:
            every = min(every, trainer.max_steps // self.MIN_POINTS)
        # The step counts optimizer steps: with gradient accumulation it moves on the last micro-batch.
        if step != self._recorded_step and step % max(1, every) == 0:
            self._record(step)
            if self.every_n_steps > 0 and step % self.every_n_steps == 0:
                self.write(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._record(trainer.global_step)
            self.write(trainer)

    def _record(self, step: int) -> None:
        if not self._pending:
            return
        names = list(self._pending)
        # One transfer for all the means: on a GPU each `.item()` would wait for the device.
        means = torch.stack([self._pending[n][0] / self._pending[n][1] for n in names]).tolist()
        for name, mean in zip(names, means):
            self.history.setdefault(name, []).append((step, mean))
        self._pending.clear()
        self._recorded_step = step

    def write(self, trainer: L.Trainer) -> None:
        """Draw the recorded curves into the run folder (nothing before the first point)."""
        if not self.history:
            return
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_loss_curves(self.history, self.smoothing).savefig(path, dpi=100)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: [list(p) for p in points] for name, points in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {name: [tuple(p) for p in points] for name, points in state_dict["history"].items()}
