"""Training progress is shown in optimizer steps out of max_steps (streaming data has no epoch length)."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from trainer.cli import with_run_essentials
from trainer.progress import StepProgressBar


class Endless(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.randn(4)


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_bar_counts_steps_of_max_steps_with_gradient_accumulation():
    bar = StepProgressBar()
    trainer = L.Trainer(max_steps=3, accumulate_grad_batches=2, accelerator="cpu", callbacks=[bar], logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Linear(), DataLoader(Endless(), batch_size=2))
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert task.description.strip() == "step" and (task.completed, task.total) == (3, 3)


def test_runs_get_the_step_bar_unless_bars_are_off_or_chosen():
    assert any(isinstance(c, StepProgressBar) for c in with_run_essentials({})["callbacks"])
    # LightningCLI passes every Trainer argument, unset ones as None
    assert any(isinstance(c, StepProgressBar) for c in with_run_essentials({"enable_progress_bar": None})["callbacks"])
    assert not any(isinstance(c, StepProgressBar)
                   for c in with_run_essentials({"enable_progress_bar": False})["callbacks"])
    mine = L.pytorch.callbacks.TQDMProgressBar()
    assert with_run_essentials({"callbacks": [mine]})["callbacks"].count(mine) == 1
    assert not any(isinstance(c, StepProgressBar) for c in with_run_essentials({"callbacks": [mine]})["callbacks"])
