"""The tiny VAE trainer (`trainer.vae`): training on the synthetic world raises the PSNR of held-out clips, the run
is fixed by its seed, and the saved `vae/` folder is the trained model, shaped for the tiny transformer."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from model.config import get_preset
from model.layout import SequenceLayout
from model.numerics import assert_float32_close
from model.tiny import build_tiny_vae
from trainer.vae import TRAINED_TINY_VAE, VAETrainConfig, heldout_set, reconstruct, save, train_tiny_vae

# Half a minute of the real recipe (the default is 600 steps).
QUICK = VAETrainConfig(steps=80, heldout_clips=4)


@pytest.fixture(scope="module")
def trained():
    return train_tiny_vae(QUICK, log=lambda *_: None)


def test_training_raises_heldout_psnr(trained):
    _, report = trained
    before, after = report["psnr_untrained"], report["psnr_trained"]
    # 80 steps reach 16.4 dB (+6.6); the full 600-step run reaches 20.9 dB.
    assert after["all"] >= before["all"] + 5.0, (before, after)


def test_saved_folder_reproduces_the_trained_vae(trained, tmp_path):
    vae, report = trained
    folder = save(vae, report, tmp_path)
    loaded = AutoencoderKLCogVideoX.from_pretrained(folder, use_safetensors=True).eval()
    assert loaded.config.scaling_factor == pytest.approx(report["scaling_factor"])
    for task, videos in heldout_set(QUICK).items():
        assert_float32_close(reconstruct(loaded, videos), reconstruct(vae, videos), ulps=4, what=f"{task.value} recon")
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["weights_bytes"] == (folder / "diffusion_pytorch_model.safetensors").stat().st_size


def test_latents_fit_the_tiny_transformer(trained):
    vae, _ = trained
    preset = get_preset("tiny")
    for task, videos in heldout_set(QUICK).items():
        with torch.no_grad():
            latents = vae.encode(videos).latent_dist.mode()
        expected = SequenceLayout.for_task(task, QUICK.frames_per_layer).num_latents
        assert latents.shape[1:] == (preset.in_channels, expected, preset.sample_height, preset.sample_width)


def test_same_seed_same_weights():
    short = replace(QUICK, steps=2, heldout_clips=1)
    first, _ = train_tiny_vae(short, log=lambda *_: None)
    second, _ = train_tiny_vae(short, log=lambda *_: None)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_heldout_world_is_not_the_training_world():
    with pytest.raises(ValueError, match="must differ"):
        VAETrainConfig(train_world_seed=3, heldout_world_seed=3)


def test_trained_config_weights_stay_small(tmp_path):
    build_tiny_vae(get_preset("tiny").in_channels, 0, TRAINED_TINY_VAE).save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").stat().st_size <= 5 * 2**20
