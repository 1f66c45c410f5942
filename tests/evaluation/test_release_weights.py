"""Every evaluation registry entry loaded from a weights tree in its release's own layout (tests/release_layout):
the architecture read from the files is the released one, the loaded tensors are the saved ones, and
`python -m evaluation score --weights ROOT` scores layered outputs with all of them."""
from __future__ import annotations

import logging

import open_clip
import pytest
import torch
import yaml
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from data_engine.weights import REGISTRY_DIR, spec
from evaluation.cli import main
from evaluation.metrics.aesthetic import AestheticQuality
from evaluation.metrics.dynamic_degree import DynamicDegree
from evaluation.metrics.frame_consistency import FrameConsistency
from evaluation.metrics.text_alignment import TextAlignment
from evaluation.models.clip import CLIP_B32, CLIP_L14, clip_config
from evaluation.models.dino import dino_config
from evaluation.models.raft import raft_config, raft_from_config
from evaluation.models.viclip import ViCLIP, viclip_architecture, viclip_config
from evaluation.results import RANDOM_WEIGHTS_NOTE, EvalRun
from evaluation.suite import GENERATION_LAYERS

EVALUATION_ENTRIES = sorted(yaml.safe_load((REGISTRY_DIR / "evaluation.yaml").read_text()))


def structure(model: nn.Module) -> tuple:
    """All that fixes a network's computation besides its values: the module tree (types, kernels, strides,
    norms, activations), every tensor's shape, and the attributes a state dict does not hold (head counts,
    RAFT's correlation window and upsampling-mask scale)."""
    attrs = ("num_heads", "num_levels", "radius", "multiplier")
    return (repr(model), {k: tuple(v.shape) for k, v in model.state_dict().items()},
            [(n, a, getattr(m, a)) for n, m in model.named_modules() for a in attrs if hasattr(m, a)])


# The released architectures are built on the meta device (shapes only, no memory) from their own
# definitions; each loader's reading of that state dict must rebuild exactly the same network.

@pytest.mark.parametrize("arch", [CLIP_L14, CLIP_B32])
def test_clip_read_from_the_released_shapes_is_the_released_network(arch):
    with torch.device("meta"):
        real = open_clip.CLIP(**open_clip.get_model_config(arch))
        read = open_clip.CLIP(**clip_config(real.state_dict()))
    assert structure(read) == structure(real)


def test_dino_read_from_the_released_shapes_is_vit_b16():
    import timm

    with torch.device("meta"):
        real = timm.create_model("vit_base_patch16_224.dino", pretrained=False, dynamic_img_size=True)
        read = VisionTransformer(**dino_config(real.state_dict()), num_classes=0, dynamic_img_size=True)
    assert structure(read) == structure(real)


def test_raft_read_from_the_released_shapes_is_raft_large():
    from torchvision.models.optical_flow import raft_large

    with torch.device("meta"):
        real = raft_large()
        read = raft_from_config(raft_config(real.state_dict()))
    assert structure(read) == structure(real)


def test_viclip_read_from_the_released_shapes_is_vbenchs_viclip():
    with torch.device("meta"):
        real = ViCLIP(viclip_config())
        config, frames = viclip_architecture(real.state_dict())
        read = ViCLIP(config, frames)
    assert structure(read) == structure(real)
    # VBench's clip_joint_l14 (width 1024, 24 layers, 16 heads, patch 14, 224 px, 8 frames, output 768) and
    # clip_text_l14 (width 768, 12 layers, 12 heads, context 32, vocabulary 49408, output 768)
    assert frames == 8 and config == {
        "embed_dim": 768, "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "patch_size": 14, "width": 1024, "head_width": 64, "layers": 24,
                       "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12,
                     "mlp_ratio": 4.0},
    }
    heads = {(n.split(".")[1], m.num_heads) for n, m in read.named_modules() if isinstance(m, nn.MultiheadAttention)}
    assert heads == {("visual", 16), ("transformer", 12)}


def read_file(path) -> dict[str, torch.Tensor]:
    """A release file read independently of the loaders: safetensors, or torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def viclip_as_loaded(saved: dict) -> dict[str, torch.Tensor]:
    """ViCLIP's release keys under our module names: vision_encoder -> clip.visual (Conv3d kernel of time 1 ->
    Conv2d), text_encoder -> clip, the temporal embedding at the top; the training temperature is not used."""
    out = {}
    for key, value in saved["model"].items():
        if key == "vision_encoder.temporal_positional_embedding":
            out["temporal_positional_embedding"] = value
        elif key == "vision_encoder.conv1.weight":
            out["clip.visual.conv1.weight"] = value[:, :, 0]
        elif key.startswith("vision_encoder."):
            out["clip.visual." + key[len("vision_encoder."):]] = value
        elif key.startswith("text_encoder."):
            out["clip." + key[len("text_encoder."):]] = value
    return out


LOADERS = {
    "clip-vit-l14-openai": (lambda root: AestheticQuality(weights_root=root).clip, read_file),
    "laion-aesthetic-linear": (lambda root: AestheticQuality(weights_root=root).head, read_file),
    "clip-vit-b32-openai": (lambda root: FrameConsistency("clip", weights_root=root).model, read_file),
    "dino-vitb16": (lambda root: FrameConsistency("dino", weights_root=root).model.vit, read_file),
    "raft-large": (lambda root: DynamicDegree(weights_root=root).model, read_file),
    "viclip-internvid-10m-flt": (lambda root: TextAlignment("viclip", weights_root=root).model,
                                 lambda path: viclip_as_loaded(read_file(path))),
}


def test_every_evaluation_entry_has_a_round_trip():
    assert sorted(LOADERS) == EVALUATION_ENTRIES


@pytest.mark.parametrize("name", EVALUATION_ENTRIES)
def test_loaded_weights_are_the_saved_ones(release_weights, name):
    load, expected = LOADERS[name]
    s = spec(name)
    saved = expected(release_weights / s.subdir / s.files[0])
    loaded = load(release_weights).state_dict()
    if name == "viclip-internvid-10m-flt":
        del loaded["clip.logit_scale"]  # ViCLIP has no CLIP logit scale (its 'temp' plays no part in a cosine)
    assert sorted(loaded) == sorted(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_score_cli_loads_every_metric_model_from_the_tree(release_weights, tmp_path, monkeypatch, caplog,
                                                          make_layered_samples):
    """Two runs cover every model: ViCLIP, B/32, RAFT and L/14 + LAION head; then DINO and the L/14 text fallback."""
    make_layered_samples(tmp_path / "outputs", 1, frames=2)
    # Only --weights can supply the models: the environment's weights root is an empty folder.
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path / "no_weights"))
    torch_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "a weight file was unpickled without weights_only=True"
        return torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    common = ["score", str(tmp_path / "outputs"), "--weights", str(release_weights)]
    with caplog.at_level(logging.WARNING):
        assert main(common + ["--out", str(tmp_path / "a")]) == 0
        assert main(common + ["--consistency", "dino", "--text-backend", "clip", "--metrics", "frame_consistency",
                              "text_alignment", "--out", str(tmp_path / "b")]) == 0
    assert not [r.getMessage() for r in caplog.records if "initialized randomly" in r.getMessage()]
    a, b = EvalRun.load(tmp_path / "a"), EvalRun.load(tmp_path / "b")
    assert not a.random_weights and not b.random_weights
    assert RANDOM_WEIGHTS_NOTE not in (tmp_path / "a" / "report.md").read_text()
    assert {m: set(per) for m, per in a.aggregates.items()} == {m: set(ls) for m, ls in GENERATION_LAYERS.items()}
    assert a.variants["text_alignment"].startswith("viclip") and "CLIP ViT-B/32" in a.variants["frame_consistency"]
    assert b.variants["text_alignment"].startswith("clip-fallback") and "DINO" in b.variants["frame_consistency"]
    assert not any("tiny" in v for v in (*a.variants.values(), *b.variants.values()))
    for run in (a, b):
        for s in run.scores:
            if s.metric == "frame_consistency":
                assert 0.0 <= s.value <= 1.0, s
            elif s.metric == "text_alignment":
                assert -1.0 <= s.value <= 1.0, s
            elif s.metric == "dynamic_degree":
                assert s.value in (0.0, 1.0), s
