"""Stable Diffusion inpainting (diffusers `StableDiffusionInpaintPipeline`): the image_inpaint stage's model.

- `full`: stabilityai/stable-diffusion-2-inpainting as its hub repository lays out the diffusers folders (unet/,
  vae/, text_encoder/ with safetensors weights, the CLIP tokenizer's vocab.json + merges.txt, scheduler/) under
  LAYERFLOW_WEIGHTS (infra/weights/perception.yaml). Each part's architecture comes from its config.json; a part
  whose weights miss keys or have other shapes is a `WeightsFormatError` naming its folder (diffusers and
  transformers would re-initialise those weights with only a log line). No safety checker: the stage makes
  training backgrounds, nothing is shown to anyone.
- `tiny`: the same classes from tiny configs with seeded random weights: a 9-channel-input UNet (latents, mask,
  masked-image latents, as the release), a 4-level VAE (8x downsampling, as the release), a 2-layer CLIP text
  encoder, the release's scheduler, and the real CLIP tokenizer built from the BPE merges open_clip ships.
"""
from __future__ import annotations

import json
from typing import Any

from data_engine.stages.models import (
    Preset,
    WeightsFormatError,
    check_preset,
    clip_bpe,
    load_pretrained,
    seeded,
)
from data_engine.weights import resolve

SD_INPAINT_WEIGHTS = "stable-diffusion-2-inpainting"
DTYPES = ("float16", "bfloat16", "float32")
CLIP_MAX_TOKENS = 77  # the CLIP text encoder's context, which the pipeline pads every prompt to
SD2_PAD = "!"  # stable-diffusion-2's tokenizer pads with "!" (OpenCLIP's pad id 0), not with <|endoftext|>
# The release's text_encoder/config.json ids (bos 0, pad 1, eos 2); the pipeline never pools, so they only have
# to match the release, not the tokenizer.
RELEASE_TEXT_IDS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2)
# The release's scheduler/scheduler_config.json (PNDM, SD's scaled-linear betas).
RELEASE_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)


def tiny_clip_tokenizer() -> Any:
    """transformers' CLIPTokenizer over CLIP's real vocabulary, set up as stable-diffusion-2's (77 tokens, "!" pad)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=SD2_PAD, model_max_length=CLIP_MAX_TOKENS)


def _scheduler(folder: Any) -> Any:
    """The scheduler class scheduler_config.json names, if it is one of diffusers' schedulers."""
    import diffusers
    from diffusers import SchedulerMixin

    path = folder / "scheduler_config.json"
    try:
        name = json.loads(path.read_text())["_class_name"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightsFormatError(f"{path}: not a diffusers scheduler config ({exc!r})") from None
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise WeightsFormatError(f"{path}: _class_name {name!r} is not a diffusers scheduler")
    return cls.from_pretrained(folder, local_files_only=True)


def _tiny_parts(seed: int, dtype: Any) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    with seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=9, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
            sample_size=64)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=CLIP_MAX_TOKENS, projection_dim=32, hidden_act="gelu", **RELEASE_TEXT_IDS))
    if dtype != torch.float32:  # built in float32; the full preset loads straight in its dtype
        for model in (unet, vae, text_encoder):
            model.to(dtype)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=PNDMScheduler(**RELEASE_SCHEDULER))


def _full_parts(dtype: Any) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = resolve(SD_INPAINT_WEIGHTS)  # every registry file present, or one line naming the first missing
    # transformers takes `dtype`, diffusers `torch_dtype`; safetensors only: the repo also holds pickled .bin files
    return dict(
        unet=load_pretrained(UNet2DConditionModel, root / "unet", "diffusers UNet2DConditionModel",
                             torch_dtype=dtype, use_safetensors=True),
        vae=load_pretrained(AutoencoderKL, root / "vae", "diffusers AutoencoderKL", torch_dtype=dtype,
                            use_safetensors=True),
        text_encoder=load_pretrained(CLIPTextModel, root / "text_encoder", "CLIP text encoder", dtype=dtype,
                                     use_safetensors=True),
        tokenizer=CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
        scheduler=_scheduler(root / "scheduler"),
    )


def build_sd_inpaint(preset: Preset, dtype: str = "float32", seed: int = 0) -> Any:
    """A `StableDiffusionInpaintPipeline` in `dtype`, in eval mode, its progress bar off."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    if dtype not in DTYPES:
        raise ValueError(f"inpainting dtype must be one of {DTYPES}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    parts = _full_parts(torch_dtype) if check_preset(preset) == "full" else _tiny_parts(seed, torch_dtype)
    pipe = StableDiffusionInpaintPipeline(**parts, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    for model in (pipe.unet, pipe.vae, pipe.text_encoder):
        model.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
