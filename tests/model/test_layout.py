"""The sub-clip layout: per-task positions (as in the official release), pack/unpack and split/join round trips."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_engine.schema import LAYERS, MID_GREY, Captions, LayeredClip, over_grey
from model.layout import PAPER_TASKS, LayoutError, SequenceLayout, Task, task_spec


def _clip(frames: int = 8, height: int = 6, width: int = 10, seed: int = 0) -> LayeredClip:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (frames, height, width), dtype=np.uint8)
    alpha[:, :2] = 0  # a fully transparent band
    bg = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    blend = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return LayeredClip("t-00000-00", over_grey(rgb, alpha), alpha, bg, blend, Captions("f", "b", "c"))


# Positions in the official 16-frame layout (SihuiJi/LayerFlow sat/diffusion_video.py).
OFFICIAL = {
    Task.GENERATE: dict(frames=64, latents=16, clean=[], prompts=("fg", "bg", "blend")),
    Task.FG_CONDITIONED: dict(frames=65, latents=17, clean=list(range(0, 9)), prompts=("fg", "bg", "blend")),
    Task.BG_CONDITIONED: dict(frames=65, latents=17, clean=list(range(9, 13)), prompts=("fg", "bg", "blend")),
    Task.DECOMPOSE: dict(frames=64, latents=16, clean=list(range(12, 16)), prompts=("fg", "bg")),
}


@pytest.mark.parametrize("task", list(PAPER_TASKS))
def test_official_positions(task):
    layout = SequenceLayout.for_task(task)
    want = OFFICIAL[task]
    assert layout.num_frames == want["frames"]
    assert layout.num_latents == want["latents"]
    assert layout.clean_indices == want["clean"]
    assert layout.noisy_indices == [i for i in range(want["latents"]) if i not in want["clean"]]
    assert layout.spec.prompt_layers == want["prompts"]


def test_latents_per_layer_with_duplicate():
    layout = SequenceLayout.for_task("fg_conditioned")
    assert layout.latent_indices("fg") == [0, 1, 2, 3, 4]  # the duplicated frame's latent travels with fg
    assert layout.latent_indices("alpha") == [5, 6, 7, 8]
    assert layout.latent_indices("bg") == [9, 10, 11, 12]
    assert layout.latent_indices("blend") == [13, 14, 15, 16]
    assert layout.frame_slice("fg") == slice(1, 17)
    assert layout.frame_slice("blend") == slice(49, 65)


def test_official_task_names_and_bad_name():
    assert Task.parse("fg2bg") is Task.FG_CONDITIONED
    assert Task.parse("bg2fg") is Task.BG_CONDITIONED
    assert Task.parse("seg") is Task.DECOMPOSE
    assert Task.parse("Generate") is Task.GENERATE
    with pytest.raises(LayoutError, match="choose one of generate, fg_conditioned"):
        Task.parse("inpaint")


@pytest.mark.parametrize("task", list(PAPER_TASKS))
def test_split_join_round_trip(task):
    layout = SequenceLayout.for_task(task)
    full = torch.randn(2, layout.num_latents, 4, 3, 5)
    clean, noisy = layout.split_latents(full)
    assert clean.shape[1] + noisy.shape[1] == layout.num_latents
    assert torch.equal(layout.join_latents(clean, noisy), full)
    for pos, idx in enumerate(layout.clean_indices):
        assert torch.equal(clean[:, pos], full[:, idx])


def test_join_needs_clean_for_conditional_tasks():
    layout = SequenceLayout.for_task("bg_conditioned")
    with pytest.raises(LayoutError, match="needs the clean condition latents"):
        layout.join_latents(None, torch.zeros(1, 13, 4, 2, 2))
    with pytest.raises(LayoutError, match=r"must be \[B, 13, C, h, w\]"):
        layout.join_latents(torch.zeros(1, 4, 4, 2, 2), torch.zeros(1, 12, 4, 2, 2))


@pytest.mark.parametrize("task", list(PAPER_TASKS))
def test_pack_unpack_round_trip_is_exact(task):
    clip = _clip()
    layout = SequenceLayout.for_task(task, frames_per_layer=8)
    video = layout.pack(clip)
    assert video.dtype == torch.float32 and video.shape == (layout.num_frames, 3, 6, 10)
    assert video.min() >= -1 and video.max() <= 1
    layers = layout.unpack(video)
    for name in LAYERS:
        assert np.array_equal(layers[name], clip.layer(name)), name


def test_pack_order_duplicate_and_official_fg_encoding():
    clip = _clip()
    layout = SequenceLayout.for_task("fg_conditioned", frames_per_layer=8)
    video = layout.pack(clip)
    assert torch.equal(video[0], video[1])  # frame 0 duplicated first
    alpha = video[layout.frame_slice("alpha")]
    assert torch.equal(alpha[:, 0], alpha[:, 1]) and torch.equal(alpha[:, 0], alpha[:, 2])
    assert torch.allclose(alpha[:, 0], torch.from_numpy(clip.alpha).float() / 127.5 - 1)
    bg = video[layout.frame_slice("bg")]
    assert torch.allclose(bg, torch.from_numpy(clip.bg).permute(0, 3, 1, 2).float() / 127.5 - 1)
    # The official fg input is rgb * alpha in [-1, 1]: zero (mid-grey) where transparent.
    fg = video[layout.frame_slice("fg")]
    assert torch.allclose(fg[:, :, :2], torch.full_like(fg[:, :, :2], MID_GREY / 127.5 - 1))
    assert fg[:, :, :2].abs().max() < 1 / 127.5


def test_pack_matches_official_rgb_times_alpha():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (4, 5, 7), dtype=np.uint8)
    clip = LayeredClip("t-00000-00", over_grey(rgb, alpha), alpha, rgb, rgb)
    packed = SequenceLayout.for_task("generate", frames_per_layer=4).pack(clip)[:4]
    a = torch.from_numpy(alpha).float()[:, None] / 255
    official = (torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1) * a
    # Equal up to uint8 rounding and the grey being 127, not 127.5.
    assert (packed - official).abs().max() <= 1.5 / 127.5


def test_pack_rejects_bad_layers():
    clip = _clip()
    layout = SequenceLayout.for_task("generate", frames_per_layer=8)
    layers = {n: clip.layer(n) for n in LAYERS}
    with pytest.raises(LayoutError, match="has 8 frames; this layout needs 4"):
        SequenceLayout.for_task("generate", frames_per_layer=4).pack(clip)
    with pytest.raises(LayoutError, match="'bg' must be uint8"):
        layout.pack({**layers, "bg": layers["bg"].astype(np.float32)})
    with pytest.raises(LayoutError, match="'alpha' is missing"):
        layout.pack({n: a for n, a in layers.items() if n != "alpha"})
    with pytest.raises(LayoutError, match="unknown layer name"):
        layout.pack({**layers, "mask": layers["alpha"]})
    with pytest.raises(LayoutError, match="multiple of 4"):
        SequenceLayout.for_task("generate", frames_per_layer=6)


def test_task_spec_generated_layers():
    assert task_spec("fg_conditioned").generated == ("bg", "blend")
    assert task_spec("bg_conditioned").generated == ("fg", "alpha", "blend")
    assert task_spec("decompose").generated == ("fg", "alpha", "bg")
    assert task_spec("generate").generated == LAYERS


@pytest.mark.parametrize("task", ["fg_conditioned", "bg_conditioned", "decompose"])
def test_pack_conditions_keeps_the_conditions_and_stands_in_for_the_rest(task):
    """Known answers: the given layers as `pack` packs them; alpha transparent, fg mid-grey, an unknown bg the
    blend's frames and an unknown blend the bg's; whatever the true generated layers hold never reaches it."""
    clip, other = _clip(seed=0), _clip(seed=1)
    layout = SequenceLayout.for_task(task, frames_per_layer=8)
    video = layout.pack_conditions(clip)
    # The generated layers of another clip with the same conditions change nothing.
    mixed = {n: (clip if n in layout.spec.conditions else other).layer(n) for n in LAYERS}
    assert torch.equal(layout.pack_conditions(mixed), video)
    layers = layout.unpack(video)
    given = set(layout.spec.conditions)
    expected = {"alpha": np.zeros_like(clip.alpha), "fg": np.full_like(clip.fg, MID_GREY),
                "bg": clip.blend if "blend" in given else np.full_like(clip.bg, MID_GREY),
                "blend": clip.bg if "bg" in given else np.full_like(clip.bg, MID_GREY)}
    for name in LAYERS:
        want = clip.layer(name) if name in given else expected[name]
        assert np.array_equal(layers[name], want), name
    if layout.duplicate:
        assert torch.equal(video[0], video[1])  # the duplicate follows fg, stand-in or given


def test_pack_conditions_needs_the_conditions():
    with pytest.raises(LayoutError, match="decompose packs its conditions blend"):
        SequenceLayout.for_task("decompose", 8).pack_conditions({"bg": _clip().bg})
    with pytest.raises(LayoutError, match="generate"):
        SequenceLayout.for_task("generate", 8).pack_conditions(_clip())
