"""Stage-3 data mixing: engine videos, copy-paste videos and layered images drawn by per-origin weight (not by
set size, nor round-robin), the motion scale per sample, and the proportions a run actually saw, logged; and the
shipped stage-3 config's mix, run at the tiny size."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace

import pytest
import yaml
from lightning.pytorch.callbacks import Callback

from data_engine.shards import ShardSink
from data_engine.sources.copy_paste import paste
from data_engine.synthetic import synthetic_clip
from tests.trainer.conftest import VIDEO, _tiny_data, image_clip
from trainer.cli import CONFIG_DIR, run
from trainer.data import LayerFlowDataModule

MIX = {"synthetic": 1.0, "image": 1.0, "copy_paste": 2.0}


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory):
    """8 synthetic videos, 2 layered images, 2 copy-paste videos: set sizes far from the configured weights."""
    out = tmp_path_factory.mktemp("mixed")
    videos = [synthetic_clip(VIDEO, i) for i in range(8)]
    with ShardSink(out, maxcount=4) as sink:
        for clip in videos:
            sink.write(clip)
        for i in range(2):
            sink.write(image_clip(i))
        for i in range(2):
            sink.write(paste(videos[i], videos[i + 1], f"copypaste_test-{i:05d}-00"))
    return out


def test_the_stream_follows_the_weights_not_the_set_sizes(mixed_shards):
    cfg = replace(_tiny_data(mixed_shards), mix=MIX, batch_size=4)
    stream = iter(LayerFlowDataModule(cfg, stage=3).stream())
    seen, scales = Counter(), {}
    for _ in range(60):
        batch = next(stream)
        seen.update(batch["origins"])
        for origin, scale in zip(batch["origins"], batch["motion_scale"].tolist()):
            scales.setdefault(origin, set()).add(scale)
    total = sum(seen.values())
    for origin, weight in MIX.items():
        share = seen[origin] / total
        assert abs(share - weight / sum(MIX.values())) < 0.08, (origin, share)
    # The Motion LoRA is on for images (static), off for videos, engine-made or pasted.
    assert scales == {"image": {1.0}, "synthetic": {0.0}, "copy_paste": {0.0}}


def test_a_stage3_run_logs_the_mix_it_saw(mixed_shards, tmp_path, capsys):
    root = tmp_path / "stage3"
    cli = run(["--stage", "3", "--tiny", "--model.network.pretrained=null", f"--data.stream.shards={mixed_shards}",
               f"--data.stream.mix={MIX}", "--trainer.max_steps=4", f"--trainer.default_root_dir={root}",
               f"--trainer.logger.init_args.save_dir={root}", "--trainer.enable_progress_bar=false",
               "--trainer.callbacks=[{class_path: trainer.checkpoint.ExportCallback}]",
               "--trainer.enable_checkpointing=false"])
    seen = cli.model.mix_seen
    assert sum(seen.values()) == 4 * 2 and set(seen) <= set(MIX)
    rows = list(csv.DictReader(open(next(root.rglob("metrics.csv")))))
    last = [r for r in rows if r.get("train/loss")][-1]
    for origin in MIX:
        assert float(last[f"train/mix_{origin}"]) == pytest.approx(seen.get(origin, 0) / 8)
    assert "samples seen per origin:" in capsys.readouterr().out


# -- the shipped stage-3 config ---------------------------------------------------------------------------------------
STAGE3 = CONFIG_DIR / "stage3.yaml"


@pytest.fixture(scope="module")
def stage3_shards(tmp_path_factory):
    """The origins the shipped stage-3 mix names: engine videos (synthetic layered videos standing in for the
    perception chain's, which compose labels `engine`), copy-paste videos and layered images."""
    out = tmp_path_factory.mktemp("stage3_mix")
    videos = [synthetic_clip(VIDEO, i) for i in range(4)]
    with ShardSink(out, maxcount=4) as sink:
        for clip in videos:
            sink.write(replace(clip, origin="engine"))
        for i in range(2):
            sink.write(paste(videos[i], videos[i + 1], f"copypaste_test-{i:05d}-00"))
        for i in range(3):
            sink.write(image_clip(i))
    return out


class MotionScales(Callback):
    """Per training step: the micro-batch's sample origins and the motion scale the transformer was called with."""

    def __init__(self) -> None:
        self.steps: list[tuple[list[str], list[float]]] = []
        self._origins: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.transformer.register_forward_pre_hook(self._called, with_kwargs=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._origins = list(batch["origins"])

    def _called(self, module, args, kwargs) -> None:
        self.steps.append((self._origins, kwargs["motion_scale"].tolist()))


def test_the_shipped_stage3_config_mixes_engine_copy_paste_and_images(stage3_shards, tmp_path, capsys):
    """stage3.yaml as `layerflow train --stage 3` parses it, shrunk to the tiny model on a CPU: every origin of
    its mix is drawn, images reach the transformer with motion scale 1 and videos with 0, and the run logs the
    shares it saw."""
    mix = yaml.safe_load(STAGE3.read_text())["data"]["stream"]["mix"]
    assert set(mix) == {"engine", "copy_paste", "image"} and all(w > 0 for w in mix.values())
    root, steps = tmp_path / "stage3", 6
    cli = run(["--stage", "3", "--config", str(STAGE3), "--model.network.preset=tiny",
               "--model.network.pretrained=null", "--model.network.gradient_checkpointing=false",
               f"--data.stream.shards={stage3_shards}", "--data.stream.frames_per_layer=4",
               "--data.stream.height=32", "--data.stream.width=48", "--data.stream.batch_size=2",
               "--data.stream.num_workers=0", "--data.stream.shuffle_buffer=4", "--trainer.accelerator=cpu",
               "--trainer.devices=1", "--trainer.precision=32-true", f"--trainer.max_steps={steps}",
               f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
               "--trainer.enable_progress_bar=false"], fit=False)
    assert cli.datamodule.cfg.mix == mix and cli.model.hparams["stage"] == 3
    scales = MotionScales()
    cli.trainer.callbacks.append(scales)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert len(scales.steps) == steps
    by_origin: dict[str, set[float]] = {}
    for origins, motion in scales.steps:
        assert len(origins) == len(motion) == 2
        for origin, scale in zip(origins, motion):
            by_origin.setdefault(origin, set()).add(scale)
    assert by_origin == {"image": {1.0}, "engine": {0.0}, "copy_paste": {0.0}}
    seen = cli.model.mix_seen
    assert sum(seen.values()) == 2 * steps and set(seen) == set(mix)
    assert seen == Counter(o for origins, _ in scales.steps for o in origins)
    logged = cli.trainer.logged_metrics
    for origin in mix:
        assert float(logged[f"train/mix_{origin}"]) == pytest.approx(seen[origin] / (2 * steps))
    assert "samples seen per origin:" in capsys.readouterr().out
