"""The validation callback's TensorBoard output, and the demo's three chained stages."""
from __future__ import annotations

import csv
import io
import time

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from model.layout import PAPER_TASKS
from trainer.callbacks import SampleSpec, ValidationCallback
from trainer.components import build_components
from trainer.config import ModelConfig, TrainConfigError
from trainer.data import LayerFlowDataModule


def test_validation_callback_logs_layered_samples_and_task_losses(tmp_path, shard_dir, tiny_data, tiny_module):
    spec = SampleSpec(prompts=[("a red box", "a noisy wall", "a red box by a wall")], num_inference_steps=2)
    callback = ValidationCallback(every_n_steps=2, sample=spec, num_examples=2)
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=logger, callbacks=[callback],
                        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    dm = LayerFlowDataModule(tiny_data(shard_dir, batch_size=1), stage=3)
    trainer.fit(tiny_module(3), datamodule=dm)
    logger.experiment.flush()

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for task in PAPER_TASKS:
        (point,) = events.Scalars(f"val/loss_{task.value}")
        assert point.step == 2 and np.isfinite(point.value) and point.value > 0
    assert "train/loss" in scalars and any(t.startswith("train/loss_") for t in scalars)
    (image,) = events.Images("samples/0")
    gif = Image.open(io.BytesIO(image.encoded_image_string))
    # A 2x2 grid of the 32x48 layers (fg over a checkerboard | alpha / bg | blend), one GIF frame per video frame.
    assert (image.step, gif.size, gif.n_frames) == (2, (96, 64), 4)
    gif.seek(0)
    top_left = np.asarray(gif.convert("RGB"))[:32, :48]
    # The checkerboard shows through where the generated alpha is below 1: two grey levels, not one flat colour.
    assert len(np.unique(top_left.reshape(-1, 3), axis=0)) > 1


def test_train_all_stages_chains_the_three_stages(tmp_path, shard_dir):
    from model.pipeline import LayerFlowPipeline
    from trainer.demo import train_all_stages

    start = time.perf_counter()
    exports = train_all_stages(shard_dir, tmp_path / "demo", steps=2)
    seconds = time.perf_counter() - start
    assert seconds < 90, f"train_all_stages took {seconds:.0f} s"
    assert sorted(exports) == [1, 2, 3]
    trained = {}
    for stage, final in exports.items():
        assert final == tmp_path / "demo" / f"stage{stage}" / "final"
        trained[stage] = load_file(str(final / "trainable.safetensors"))
        ckpts = sorted((tmp_path / "demo" / f"stage{stage}").rglob("checkpoints/*.ckpt"))
        assert [c.name for c in ckpts] == ["epoch=0-step=2.ckpt", "last.ckpt"]
    kinds = {1: lambda k: ".transformer_blocks.5." in f".{k}" and "_lora." not in k or k.startswith("layer_embedder."),
             2: lambda k: ".motion_lora." in k, 3: lambda k: ".content_lora." in k}
    for stage, weights in trained.items():
        assert weights and all(kinds[stage](k) for k in weights), stage
    # Each stage starts from the previous export: the final model carries all three stages' weights.
    final = dict(LayerFlowPipeline.from_pretrained(exports[3]).transformer.named_parameters())
    for stage, weights in trained.items():
        assert all(torch.equal(final[k], v) for k, v in weights.items()), stage
    assert any(v.abs().sum() > 0 for k, v in trained[3].items() if ".up." in k)

    # A LayerFlow folder keeps the LoRA shape it was trained with: a config asking for another is refused.
    with pytest.raises(TrainConfigError, match=r"motion_rank=8 but .* motion_rank=16") as exc:
        build_components(ModelConfig(preset="tiny", pretrained=str(exports[1]), motion_rank=8))
    assert "\n" not in str(exc.value)


def test_train_all_stages_from_a_base_folder_with_steps_per_stage(tmp_path, shard_dir, tiny_parts):
    """What benchmarks/toyworld.py runs: stage 1 from a given model folder (there, one with a trained VAE), each
    stage its own step count, extra arguments for every stage, and each command line reported before it runs."""
    from model.pipeline import LayerFlowPipeline
    from model.schedule import make_scheduler
    from trainer.demo import train_all_stages

    base = LayerFlowPipeline(tokenizer=tiny_parts.tokenizer, text_encoder=tiny_parts.text_encoder,
                             vae=tiny_parts.vae, transformer=tiny_parts.transformer,
                             scheduler=make_scheduler("dpm")).save_pretrained(tmp_path / "base")
    with torch.no_grad():  # a VAE unlike the tiny preset's: only the folder can be where stage 1 got it from
        marked = LayerFlowPipeline.from_pretrained(base)
        marked.vae.decoder.conv_out.conv.bias.fill_(0.25)
        marked.save_pretrained(base)
    commands: list[str] = []
    exports = train_all_stages(shard_dir, tmp_path / "run", {1: 1, 2: 1, 3: 2}, base=base,
                               overrides=["--data.stream.batch_size=1"], log=commands.append)
    assert len(commands) == 3 and all(c.startswith("layerflow train --stage ") for c in commands)
    assert f"--model.network.pretrained={base}" in commands[0]
    assert f"--model.network.pretrained={exports[2]}" in commands[2]
    assert all("--data.stream.batch_size=1" in c for c in commands)
    for stage, steps in {1: 1, 2: 1, 3: 2}.items():
        (metrics,) = (tmp_path / "run" / f"stage{stage}").rglob("metrics.csv")
        logged = [row for row in csv.DictReader(metrics.open()) if row["train/loss"]]  # one row per step
        assert len(logged) == steps, stage
    bias = LayerFlowPipeline.from_pretrained(exports[3]).vae.decoder.conv_out.conv.bias
    assert torch.all(bias == 0.25)
