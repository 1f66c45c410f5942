"""Exact resume through Lightning with our checkpoint format, and the CLI's one-line errors."""
from __future__ import annotations

import lightning as L
import pytest
from safetensors.torch import load_file

from trainer.checkpoint import RNGStateCallback, SafetensorsCheckpointIO, load_checkpoint
from trainer.cli import main
from trainer.data import LayerFlowDataModule


class LossLog(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(module, dm, root, max_steps, ckpt_path=None):
    log = LossLog()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=0.1, default_root_dir=root,
                        callbacks=[log, RNGStateCallback()], plugins=[SafetensorsCheckpointIO()],
                        enable_checkpointing=False)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, log.losses


def test_resume_is_exact(tmp_path, shard_dir, tiny_data, tiny_module):
    cfg = tiny_data(shard_dir, batch_size=1)
    _, full = _fit(tiny_module(3), LayerFlowDataModule(cfg, stage=3), tmp_path / "a", 6)

    trainer, first = _fit(tiny_module(3), LayerFlowDataModule(cfg, stage=3), tmp_path / "b", 3)
    ckpt = tmp_path / "b" / "step3.ckpt"
    trainer.save_checkpoint(ckpt)
    # Only the stage's weights are stored, as safetensors, with the stage in the metadata.
    weights = load_file(str(ckpt / "trainable.safetensors"))
    assert weights and all(".content_lora." in k for k in weights)
    state = load_checkpoint(ckpt)
    assert state["global_step"] == 3 and state["optimizer_states"][0]["state"]

    _, rest = _fit(tiny_module(3), LayerFlowDataModule(cfg, stage=3), tmp_path / "c", 6, ckpt_path=ckpt)
    assert len(full) == 6 and first + rest == full


def test_cli_rejects_unknown_stage(capsys):
    assert main(["--stage", "7", "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown stage 7; choose one of 0, 1, 2, 3"]


def test_cli_rejects_a_wrong_config_key(capsys, shard_dir):
    assert main(["--stage", "1", "--tiny", f"--data.stream.shards={shard_dir}", "--model.network.presett=tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "presett" in err[0]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_reports_missing_shards_before_loading_a_model(tmp_path, make, monkeypatch, capsys):
    shards = tmp_path / "shards"
    if make == "empty":
        shards.mkdir()
    import trainer.components as components

    def no_model(*_a, **_k):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(components, "build_components", no_model)
    assert main(["--stage", "2", "--tiny", f"--data.stream.shards={shards}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(shards) in err[0]
    assert ("does not exist" if make == "missing" else "no complete shards") in err[0]


def test_cli_names_the_stage_to_train_first(capsys, shard_dir, tmp_path):
    missing = tmp_path / "tiny_stage1" / "final"
    assert main(["--stage", "2", "--tiny", f"--data.stream.shards={shard_dir}",
                 f"--model.network.pretrained={missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "make train STAGE=1 ARGS=--tiny" in err[0]
