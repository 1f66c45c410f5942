"""The evaluation entries of the weights registry (`infra/weights/evaluation.yaml`) in their releases' layouts.

Each file has the release's name, key names, nesting and serialisation, with the narrowest configuration the
format allows (64-wide towers: the loaders take one 64-wide attention head per 64 channels, as the releases do):

- clip-vit-b32-openai: open_clip's `open_clip_model.safetensors` (OpenAI key names), as in timm/..._clip_224.openai;
- laion-aesthetic-linear: `torch.save(Linear(width, 1).state_dict())` with keys `weight`, `bias`;
- dino-vitb16: timm's `model.safetensors` of a `VisionTransformer` without head;
- raft-large: `torch.save` of torchvision's raft_large state dict (raft_large's blocks, narrow widths);
- viclip-internvid-10m-flt: `torch.save({"model": ...})` with ViCLIP's own keys (`vision_encoder.*` with a
  Conv3d patch kernel and `temporal_positional_embedding`, `text_encoder.*`, `temp`).

clip-vit-l14-openai is not written here: another area writes it (the tag stage shares it). The LAION head is
trained on ViT-L/14's embedding, so its width is read from that file, which must exist under `root` first.
Every parameter is nudged off its init value, so a loader that silently kept a fresh init is told apart.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from data_engine.weights import spec

L14 = ("clip-vit-l14-openai", "open_clip_model.safetensors")
VICLIP_FRAMES = 8


def _folder(root: Path, name: str) -> Path:
    folder = Path(root) / spec(name).subdir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _release_like(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The state dict with every parameter moved by N(0, 0.02^2) noise (buffers such as BatchNorm statistics kept)."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name, param in model.named_parameters():
        sd[name] = (param.detach() + 0.02 * torch.randn(param.shape, generator=g)).contiguous()
    return sd


def _seeded_build(seed: int, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def l14_embed_width(root: Path) -> int:
    path = Path(root) / spec(L14[0]).subdir / L14[1]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: write clip-vit-l14-openai first (the LAION head takes its embedding width)")
    with safe_open(str(path), "pt") as f:
        return f.get_slice("visual.proj").get_shape()[1]


def write_clip_b32(root: Path) -> None:
    import open_clip

    model = _seeded_build(1, lambda: open_clip.CLIP(
        embed_dim=32, quick_gelu=True,
        vision_cfg={"image_size": 224, "patch_size": 32, "width": 64, "layers": 1},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    ))
    path = _folder(root, "clip-vit-b32-openai") / "open_clip_model.safetensors"
    save_file(_release_like(model, 1), str(path))  # what open_clip's save_for_hf writes


def write_aesthetic_head(root: Path) -> None:
    head = _seeded_build(2, lambda: nn.Linear(l14_embed_width(root), 1))
    path = _folder(root, "laion-aesthetic-linear") / "sa_0_4_vit_l_14_linear.pth"
    torch.save(_release_like(head, 2), path)


def write_dino(root: Path) -> None:
    from timm.models.vision_transformer import VisionTransformer

    vit = _seeded_build(3, lambda: VisionTransformer(img_size=224, patch_size=16, embed_dim=64, depth=1, num_heads=1,
                                                     num_classes=0))
    path = _folder(root, "dino-vitb16") / "model.safetensors"
    save_file(_release_like(vit, 3), str(path))  # what timm's push_to_hf_hub writes


def write_raft(root: Path) -> None:
    from torchvision.models.optical_flow.raft import BatchNorm2d, InstanceNorm2d, ResidualBlock, _raft

    # raft_large's own arguments (torchvision's raft_large), narrow widths and a smaller correlation window.
    raft = _seeded_build(4, lambda: _raft(
        feature_encoder_layers=(16, 16, 24, 32, 48), feature_encoder_block=ResidualBlock,
        feature_encoder_norm_layer=InstanceNorm2d,
        context_encoder_layers=(16, 16, 24, 32, 48), context_encoder_block=ResidualBlock,
        context_encoder_norm_layer=BatchNorm2d,
        corr_block_num_levels=4, corr_block_radius=3,
        motion_encoder_corr_layers=(32, 24), motion_encoder_flow_layers=(16, 8), motion_encoder_out_channels=32,
        recurrent_block_hidden_state_size=24, recurrent_block_kernel_size=((1, 5), (5, 1)),
        recurrent_block_padding=((0, 2), (2, 0)), flow_head_hidden_size=32, use_mask_predictor=True,
    ))
    path = _folder(root, "raft-large") / "raft_large_C_T_V1-22a6c225.pth"
    torch.save(_release_like(raft, 4), path)


def write_viclip(root: Path) -> None:
    """ViCLIP's towers are OpenAI CLIP's modules (VBench's viclip_vision / viclip_text); their keys are renamed
    into ViCLIP's layout here, with the patch kernel as ViCLIP's Conv3d (time kernel 1)."""
    import open_clip

    clip = _seeded_build(5, lambda: open_clip.CLIP(
        embed_dim=32, quick_gelu=True,
        vision_cfg={"image_size": 224, "patch_size": 14, "width": 64, "layers": 1},
        text_cfg={"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    ))
    sd = _release_like(clip, 5)
    model: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("visual."):
            name = "vision_encoder." + key[len("visual."):]
            model[name] = value[:, :, None] if key == "visual.conv1.weight" else value
        elif key != "logit_scale":  # ViCLIP keeps a temperature 'temp' instead
            model["text_encoder." + key] = value
    g = torch.Generator().manual_seed(5)
    model["vision_encoder.temporal_positional_embedding"] = 0.02 * torch.randn(1, VICLIP_FRAMES, 64, generator=g)
    model["temp"] = torch.tensor(0.01)
    path = _folder(root, "viclip-internvid-10m-flt") / "ViClip-InternVid-10M-FLT.pth"
    torch.save({"model": model}, path)


def build(root: Path) -> None:
    write_clip_b32(root)
    write_aesthetic_head(root)
    write_dino(root)
    write_raft(root)
    write_viclip(root)
