"""The latent cache: written by `python -m trainer.precompute`, read by the datamodule in place of pixels, and
refused, in one line, when the run's encoders or framing differ from the ones it was made with."""
from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from data_engine.shards import read_clips
from model.layout import SequenceLayout
from model.numerics import assert_float32_close
from trainer.cache import CACHE_META, StaleCacheError, encode_examples
from trainer.data import LayerFlowDataModule, collate, frame_clip
from trainer.precompute import main
from trainer.seeding import stable_seed


@pytest.fixture(scope="module")
def cache_dir(shard_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_cache") / "cache"
    args = ["--stage", "3", "--tiny", "--model.network.pretrained=null", f"--data.stream.shards={shard_dir}",
            "--cache", str(root)]
    assert main(args) == 0
    return root


def test_cache_holds_every_sample_and_its_config(cache_dir, shard_dir):
    meta = json.loads((cache_dir / CACHE_META).read_text())
    assert meta["parts"]["frames_per_layer"] == 4 and meta["parts"]["static_videos"] is False
    assert sorted(meta["shards"]) == sorted(p.name for p in shard_dir.glob("shard-*.tar"))
    assert len(meta["config_hash"]) == 16


def test_datamodule_reads_the_cache_instead_of_pixels(cache_dir, shard_dir, tiny_data, tiny_module, monkeypatch):
    cfg = tiny_data(shard_dir, cache=str(cache_dir), prompt_dropout=0.0, crop="center")
    dm = LayerFlowDataModule(cfg, stage=3)
    examples = dm.stream().first_examples(3)
    module = tiny_module(3)
    clips = {c.key: c for c in read_clips(shard_dir)}
    for e in examples:
        assert "layers" not in e
        # Independent of the cache code: the same sample framed and encoded from pixels by the module.
        clip = clips[e["key"]]
        layers, _ = frame_clip(clip, cfg, False, np.random.default_rng(stable_seed(cfg.seed, clip.key, "frames")),
                               random_crop=False)
        pixels = collate([{"key": e["key"], "origin": clip.origin, "layers": layers,
                           "captions": clip.captions.as_dict(), "motion_scale": e["motion_scale"], "keep": e["keep"]}],
                         "generate", 4)
        _, text = module.encode_batch(pixels, 0)
        # The cache encodes samples in groups; a sample's text is its own, to float32 rounding.
        assert_float32_close(e["prompt_embeds"], text[0], 64, "prompt_embeds")
        for name, task in (("latents", "generate"), ("latents_dup", "fg_conditioned")):
            video = SequenceLayout.for_task(task, 4).pack(layers).permute(1, 0, 2, 3)[None]
            with torch.no_grad():
                posterior = module.vae.encode(video).latent_dist
            mean, std = (x[0].permute(1, 0, 2, 3) for x in (posterior.mean, posterior.std))
            z = (e[name] / module.vae.config.scaling_factor - mean) / std
            # A posterior sample of exactly these pixels: standard-normal residuals, nothing like another sample's.
            # (~6000 residuals: mean square 1 +- 0.02; another sample's posterior measured 1.2.)
            assert z.abs().max() < 5.5 and 0.9 < z.square().mean() < 1.1, name
        # Each conditional task's condition latents: a posterior sample of the conditions with the pipeline's
        # stand-ins (not of the true layers: the VAE mixes in time, so the two differ).
        for task in ("fg_conditioned", "bg_conditioned", "decompose"):
            layout = SequenceLayout.for_task(task, 4)
            video = layout.pack_conditions(layers).permute(1, 0, 2, 3)[None]
            with torch.no_grad():
                posterior = module.vae.encode(video).latent_dist
            mean, std = (x[0].permute(1, 0, 2, 3)[layout.clean_indices] for x in (posterior.mean, posterior.std))
            z = (e[f"cond_{task}"] / module.vae.config.scaling_factor - mean) / std
            assert z.abs().max() < 5.5 and 0.85 < z.square().mean() < 1.15, task

    # Training on the cache never runs the VAE.
    module = tiny_module(3)
    monkeypatch.setattr(module.vae, "encode", lambda *a, **k: pytest.fail("the VAE ran although a cache exists"))
    losses = []

    class Log(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            assert "latents" in batch and "video" not in batch
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Log()])
    trainer.fit(module, datamodule=LayerFlowDataModule(tiny_data(shard_dir, cache=str(cache_dir)), stage=3))
    assert len(losses) == 2 and all(np.isfinite(losses))


@pytest.mark.parametrize("change,field", [({"frames_per_layer": 8}, "frames_per_layer"), ({}, "static_videos")])
def test_stale_framing_is_refused_before_any_model(cache_dir, shard_dir, tiny_data, change, field):
    stage = 3 if change else 2  # stage 2 frames static videos: other latents
    with pytest.raises(StaleCacheError) as exc:
        LayerFlowDataModule(tiny_data(shard_dir, cache=str(cache_dir), **change), stage=stage)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"stale latent cache {cache_dir}") and field in message


def test_other_encoders_are_refused_in_one_line(cache_dir, shard_dir, capsys):
    from trainer.cli import main as train

    args = ["--stage", "3", "--tiny", "--model.network.pretrained=null", f"--data.stream.shards={shard_dir}",
            f"--data.stream.cache={cache_dir}", "--model.network.seed=1", "--trainer.max_steps=1",
            "--trainer.logger=false"]
    assert train(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: stale latent cache") and "vae was" in line and "text_encoder was" in line


def test_a_sample_encodes_the_same_alone_as_in_a_group(shard_dir, tiny_data, tiny_module):
    """Precompute encodes samples in groups; each sample's tensors are those it gets alone (its own posterior
    noise, batch-independent encoders), so the group size changes no cache entry beyond float32 rounding."""
    module = tiny_module(1)
    cfg = tiny_data(shard_dir, crop="center")
    clips = list(read_clips(shard_dir))[:3]
    examples = []
    for clip in clips:
        layers, _ = frame_clip(clip, cfg, False, np.random.default_rng(0), random_crop=False)
        examples.append((layers, clip.captions.as_dict(), clip.key))

    def encode(group):
        items = [(layers, captions, torch.Generator().manual_seed(stable_seed(0, key)))
                 for layers, captions, key in group]
        return encode_examples(items, 4, module.vae, module.text_encoder, module.tokenizer, module.text_tokens)

    together = encode(examples)
    alone = [encode([example])[0] for example in examples]
    assert len({float(t["latents"].abs().sum()) for t in together}) == 3  # three different samples
    for grouped, single in zip(together, alone):
        assert grouped.keys() == single.keys()
        for name in single:
            assert_float32_close(grouped[name], single[name], 256, name)
