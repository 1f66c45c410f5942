"""The loss per layer sub-clip (what each generated layer contributes to the loss) and the run's loss-curve PNG."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from model.layout import PAPER_TASKS, SequenceLayout, Task, task_spec
from trainer.callbacks import LossCurvesCallback, draw_loss_curves
from trainer.data import LayerFlowDataModule, collate
from trainer.module import layer_losses

LAYOUTS = [SequenceLayout(task_spec(task, k), 8) for k in (1, 2) for task in PAPER_TASKS] + [
    SequenceLayout(task_spec(Task.GIVEN, 2, ("alpha", "bg", "fg_1")), 8)]


def _counts(layout: SequenceLayout) -> dict[str, int]:
    return {layer: len(layout.latent_indices(layer)) for layer in layout.spec.generated}


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"{layout.task.value}-K{layout.spec.num_foregrounds}")
def test_each_layer_gets_the_errors_of_its_own_latents(layout):
    # Errors that name their latent: sample s's latent i holds 100 s + i, so a layer's mean is its indices' mean.
    noisy = torch.tensor(layout.noisy_indices, dtype=torch.float64)
    errors = (100 * torch.arange(2.0, dtype=torch.float64)[:, None] + noisy).view(2, -1, 1, 1, 1).expand(2, -1, 3, 2, 2)
    losses = layer_losses(errors, layout)
    assert tuple(losses) == layout.spec.generated
    for layer, loss in losses.items():
        expected = torch.tensor(layout.latent_indices(layer), dtype=torch.float64).mean()
        assert torch.allclose(loss, torch.stack([expected, 100 + expected])), layer
    counts = _counts(layout)
    weighted = sum(counts[layer] * loss for layer, loss in losses.items()) / sum(counts.values())
    assert torch.allclose(weighted, errors.flatten(1).mean(1))


@pytest.fixture(scope="module")
def examples(shard_dir, tiny_data):
    return LayerFlowDataModule(tiny_data(shard_dir), stage=1).stream().first_examples(2)


@pytest.mark.parametrize("task", PAPER_TASKS, ids=lambda t: t.value)
def test_layer_losses_average_to_the_per_sample_loss(tiny_module, examples, task):
    module = tiny_module(1)
    batch = collate(examples, task, 4)
    layout = module.batch_layout(batch)
    with torch.no_grad():
        errors = module.weighted_errors(batch, 3)
        loss = module.compute_loss(batch, 3)
    assert torch.equal(loss, errors.flatten(1).mean(1))
    losses = layer_losses(errors, layout)
    # A layer given as a condition is not in the loss: decomposition has no blend, generation has every layer.
    assert set(losses) == set(layout.spec.generated) and ("blend" in losses) == (task is not Task.DECOMPOSE)
    counts = _counts(layout)
    weighted = sum(counts[layer] * value for layer, value in losses.items()) / sum(counts.values())
    assert torch.allclose(weighted, loss, rtol=1e-6)


def test_a_run_logs_each_generated_layer_and_draws_the_curves(tmp_path, shard_dir, tiny_data, tiny_module):
    tasks = {"decompose": 1.0, "bg_conditioned": 1.0}
    curves = LossCurvesCallback()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=6, log_every_n_steps=1, callbacks=[curves],
                        logger=CSVLogger(tmp_path, name="csv", version=0), default_root_dir=tmp_path,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(tiny_module(1), datamodule=LayerFlowDataModule(tiny_data(shard_dir, tasks=tasks), stage=1))

    history = {name: dict(points) for name, points in curves.history.items()}
    layers = {name for name in history if name.startswith("train/loss_layer_")}
    assert layers == {f"train/loss_layer_{n}" for n in ("fg", "alpha", "bg", "blend")}
    rows = {int(r["step"]): r for r in csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open())}
    seen = set()
    for step in range(1, 7):
        (task,) = [t for t in tasks if step in history[f"train/loss_{t}"]]
        seen.add(task)
        layout = SequenceLayout(task_spec(task), 4)
        # Every step logs the layers its task generates, and only those; weighted by their latents they make
        # the step's loss, the one the logger got.
        assert {n for n in layers if step in history[n]} == {f"train/loss_layer_{n}" for n in layout.spec.generated}
        counts = _counts(layout)
        weighted = sum(c * history[f"train/loss_layer_{n}"][step] for n, c in counts.items()) / sum(counts.values())
        assert weighted == pytest.approx(history["train/loss"][step], rel=1e-5)
        assert float(rows[step - 1]["train/loss"]) == pytest.approx(history["train/loss"][step], rel=1e-6)
        for n in counts:
            name = f"train/loss_layer_{n}"
            assert float(rows[step - 1][name]) == pytest.approx(history[name][step], rel=1e-6)
    assert seen == set(tasks)

    png = Image.open(tmp_path / "loss_curves.png")
    assert png.format == "PNG" and png.size == (1500, 400)
    assert len(png.convert("RGB").getcolors(1 << 16)) > 20  # curves and text, not a blank canvas
    figure = draw_loss_curves(curves.history)
    legends = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()] for ax in figure.axes}
    assert legends == {"training loss, total": ["loss"],
                       "training loss, per task": ["bg_conditioned", "decompose"],
                       "training loss, per layer": ["alpha", "bg", "blend", "fg"]}

    # A resumed run's callback takes the points so far from the checkpoint and goes on after them.
    resumed = LossCurvesCallback()
    resumed.load_state_dict(curves.state_dict())
    assert resumed.history == curves.history


def test_each_point_is_the_mean_since_the_last_and_a_short_run_still_gets_enough(tmp_path):
    # 400 steps logged every 50: 8 points would hide the curve's shape, so a point every 400 // 100 = 4 steps.
    curves = LossCurvesCallback()
    trainer = SimpleNamespace(is_global_zero=True, log_every_n_steps=50, max_steps=400, default_root_dir=tmp_path)
    for step in range(1, 401):
        trainer.global_step = step
        losses = {"train/loss": torch.tensor(float(step))}
        if step % 2:
            losses["train/loss_layer_bg"] = torch.tensor(10.0 * step)
        curves.on_train_batch_end(trainer, None, {"loss": None, "losses": losses}, None, step - 1)
    curves.on_train_end(trainer, None)
    assert curves.history["train/loss"] == [(s, s - 1.5) for s in range(4, 401, 4)]
    # A loss logged at some steps only: the mean of those (steps s - 3 and s - 1).
    assert curves.history["train/loss_layer_bg"] == [(s, 10.0 * (s - 2)) for s in range(4, 401, 4)]
    assert Image.open(tmp_path / "loss_curves.png").size == (1000, 400)
