"""Stage-3 data mixing: engine videos, copy-paste videos and layered images drawn by per-origin weight (not by
set size, nor round-robin), the motion scale per sample, and the proportions a run actually saw, logged."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import replace

import pytest

from data_engine.shards import ShardSink
from data_engine.sources.copy_paste import paste
from data_engine.synthetic import synthetic_clip
from trainer.cli import run
from trainer.data import LayerFlowDataModule

from tests.trainer.conftest import VIDEO, _tiny_data, image_clip

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
