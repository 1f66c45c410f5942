"""Builders of every perception model, for two presets.

- `full`: the real architectures loaded from local files under LAYERFLOW_WEIGHTS (see infra/weights/perception.yaml);
  a missing file raises `MissingWeightsError` in one line (model, expected path, hub id). Nothing downloads.
- `tiny`: the same classes from tiny configs with seeded random weights, and tokenizers built in-process; for tests,
  the demo and CPU benchmarks. Outputs of tiny models are noise: only the plumbing is meaningful.

Heavy libraries are imported inside the builders so importing this module stays cheap.
"""
from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from data_engine.weights import resolve

Preset = Literal["tiny", "full"]
PRESETS = ("tiny", "full")
DATA_DIR = Path(__file__).resolve().parent / "data"
RAM_INSTALL = "pip install git+https://github.com/xinyu1205/recognize-anything.git"

# Weight registry names (infra/weights/perception.yaml).
CLIP_WEIGHTS = "clip-vit-l14-openai"  # shared with evaluation (infra/weights/evaluation.yaml)
RAM_WEIGHTS = "ram-plus"
GDINO_WEIGHTS = "grounding-dino-base"
SAM_WEIGHTS = "sam-vit-h"
SAM2_WEIGHTS = "sam2.1-hiera-large"
QWEN_WEIGHTS = "qwen2.5-vl-7b-instruct"
COGVLM2_WEIGHTS = "cogvlm2-llama3-caption"
PROPAINTER_WEIGHTS = "propainter"
PROPAINTER_FILES = {
    "raft": "raft_things-0000-d74fed4b.pth",
    "rfc": "propainter_rfc-0000-a865ddc0.pth",
    "pp": "propainter-0000-5f3cc1e7.pth",
}
CLIP_ARCH = "ViT-L-14-quickgelu"  # the OpenAI ViT-L/14 weights were trained with QuickGELU
CLIP_FILE = "open_clip_model.safetensors"
TINY_CLIP_CONTEXT = 16  # "a photo of a {tag}." fits; 77 makes the 4585 tag prompts the slowest part of a tiny run
SAM_FILE = "sam_vit_h_4b8939.pth"

QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
# The Qwen2-VL chat layout (system turn omitted); the full preset uses the template shipped with the processor.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_CORPUS = (
    "Is the highlighted object a foreground object, not background such as sky, water, road or wall?",
    "Answer yes or no. Yes. No. yes no",
    "Describe the video in detail. A red disc glides to the left over a wavy blue pattern.",
    "The background shows a forest, a lake, a street and the sky. A person walks a dog.",
)


class MissingPackageError(ImportError):
    """An optional backend's package is not installed; the message gives the install command."""


class RemoteCodeNotAllowed(PermissionError):
    """A model needs code shipped with its weights and the config did not opt in."""


def check_preset(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {PRESETS}")
    return preset  # type: ignore[return-value]


def device_for(num_gpus: float) -> str:
    """'cuda' when the stage was given GPU share and CUDA is present, else 'cpu'."""
    import torch

    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tag_list() -> list[str]:
    """The RAM++ tag vocabulary (4585 tags) shipped in data/ram_tag_list.txt."""
    return [t for t in (DATA_DIR / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines() if t.strip()]


# ---------------------------------------------------------------- tiny tokenizers (built in-process, no download)

def tiny_bert_tokenizer(words: list[str]) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary is the given words (lower-cased) plus BERT's specials."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
    vocab: dict[str, int] = {}
    for w in [*specials, *sorted({p for w in words for p in w.lower().replace("-", " ").split()})]:
        vocab.setdefault(w, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True)


@lru_cache(maxsize=1)
def _tiny_qwen_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(QWEN_SPECIAL), show_progress=False)
    bpe.train_from_iterator(TINY_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def tiny_qwen_tokenizer() -> Any:
    """Qwen2's byte-level BPE tokenizer class over a vocabulary trained on a few sentences, with Qwen's specials."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _tiny_qwen_vocab()
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL[1:])})
    return tok


# ---------------------------------------------------------------- CLIP (open_clip)

@dataclass
class ClipBundle:
    model: Any
    preprocess: Callable
    tokenizer: Callable


def build_clip(preset: Preset, seed: int = 0) -> ClipBundle:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer  # BPE vocabulary ships inside the package

    if check_preset(preset) == "full":
        path = resolve(CLIP_WEIGHTS, CLIP_FILE)
        model, _, preprocess = open_clip.create_model_and_transforms(CLIP_ARCH, pretrained=str(path))
        return ClipBundle(model.eval(), preprocess, open_clip.get_tokenizer(CLIP_ARCH))
    with seeded(seed):
        model = open_clip.CLIP(
            embed_dim=32,
            vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=64),
            text_cfg=open_clip.CLIPTextCfg(context_length=TINY_CLIP_CONTEXT, vocab_size=49408, width=32, heads=2, layers=1),
        )
    preprocess = open_clip.image_transform(64, is_train=False)
    return ClipBundle(model.eval(), preprocess, SimpleTokenizer(context_length=TINY_CLIP_CONTEXT))


def build_ram(preset: Preset, image_size: int = 384) -> tuple[Any, Callable]:
    """RAM++ (swin-L) and its transform; needs the `ram` package (git install) and its BERT tokenizer files."""
    try:
        ram_models = importlib.import_module("ram.models")
        ram = importlib.import_module("ram")
    except ImportError as exc:
        raise MissingPackageError(
            f"the 'ram' tagging backend needs the recognize-anything package: `{RAM_INSTALL}` (or use backend: clip)"
        ) from exc
    if check_preset(preset) == "tiny":
        raise ValueError("RAM++ has no tiny configuration; use backend: clip with the tiny preset")
    path = resolve(RAM_WEIGHTS, "ram_plus_swin_large_14m.pth")
    model = ram_models.ram_plus(pretrained=str(path), image_size=image_size, vit="swin_l")
    return model.eval(), ram.get_transform(image_size=image_size)


# ---------------------------------------------------------------- Grounding DINO (transformers)

def build_grounding_dino(preset: Preset, seed: int = 0) -> tuple[Any, Any]:
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor)

    if check_preset(preset) == "full":
        path = resolve(GDINO_WEIGHTS)
        model = GroundingDinoForObjectDetection.from_pretrained(path, local_files_only=True)
        return model.eval(), GroundingDinoProcessor.from_pretrained(path, local_files_only=True)
    tokenizer = tiny_bert_tokenizer(tag_list())
    config = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                             window_size=4, image_size=64, out_indices=[2, 3, 4]),
        text_config=dict(model_type="bert", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
        num_queries=20, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, max_text_len=32,
        encoder_n_points=2, decoder_n_points=2,
    )
    with seeded(seed):
        model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128}),
        tokenizer=tokenizer)
    return model.eval(), processor


# ---------------------------------------------------------------- SAM (segment-anything)

def build_sam(preset: Preset, kind: str = "vit_h", seed: int = 0) -> Any:
    """A `SamPredictor` over SAM; full weights are loaded with weights_only=True."""
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    if check_preset(preset) == "full":
        path = resolve(SAM_WEIGHTS, SAM_FILE)
        sam = sam_model_registry[kind]()
        sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return SamPredictor(sam.eval())
    with seeded(seed):
        sam = _tiny_sam()
    return SamPredictor(sam.eval())


def _tiny_sam() -> Any:
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size, patch, dim = 64, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=dim, img_size=size, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2, patch_size=patch, qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=2,
            out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=dim),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


# ---------------------------------------------------------------- SAM 2 video (transformers)

def tiny_sam2_video_config() -> Any:
    from transformers import Sam2VideoConfig

    size, hidden = 128, 128  # memory attention hard-codes 64-channel memories: hidden must be a multiple of 64
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=12, image_size=[size, size],
                    blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[12, 24, 48, 96],
                    num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                    global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2])
    vision = dict(model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                  backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2], fpn_hidden_size=hidden)
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=hidden, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=hidden),
        image_size=size, num_maskmem=3, memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64, mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64,
    )


def build_sam2_video(preset: Preset, seed: int = 0) -> tuple[Any, Any]:
    from transformers import Sam2ImageProcessor, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor

    if check_preset(preset) == "full":
        path = resolve(SAM2_WEIGHTS)
        model = Sam2VideoModel.from_pretrained(path, local_files_only=True)
        return model.eval(), Sam2VideoProcessor.from_pretrained(path, local_files_only=True)
    config = tiny_sam2_video_config()
    with seeded(seed):
        model = Sam2VideoModel(config)
    size = config.image_size
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": size, "width": size},
                                           mask_size={"height": size // 4, "width": size // 4}),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}))
    return model.eval(), processor


# ---------------------------------------------------------------- Qwen2.5-VL (transformers)

def build_qwen_vl(preset: Preset, dtype: str = "bfloat16", seed: int = 0) -> tuple[Any, Any]:
    import torch
    from transformers import (AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    if check_preset(preset) == "full":
        path = resolve(QWEN_WEIGHTS)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, dtype),
                                                                   local_files_only=True)
        return model.eval(), AutoProcessor.from_pretrained(path, local_files_only=True)
    tok = tiny_qwen_tokenizer()
    ids = tok.convert_tokens_to_ids
    pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tok,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=TINY_CHAT_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0], window_size=56),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval(), processor


# ---------------------------------------------------------------- CogVLM2 caption model (remote code, opt-in)

def build_cogvlm2(trust_remote_code: bool, dtype: str = "bfloat16") -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(COGVLM2_WEIGHTS)
    if not trust_remote_code:
        raise RemoteCodeNotAllowed(
            f"{COGVLM2_WEIGHTS} runs model code shipped with its weights ({path}); review it, then set "
            "trust_remote_code: true in the caption stage options (or use backend: qwen2.5-vl)")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype),
                                                 trust_remote_code=trust_remote_code, local_files_only=True)
    return model.eval(), tokenizer


# ---------------------------------------------------------------- ProPainter (pytorchcv)

def build_propainter(preset: Preset, seed: int = 0) -> tuple[Any, Any, Any]:
    """(RAFT, recurrent flow completion, ProPainter) modules, ready for `ProPainterIterator`.

    RAFT must run 20 iterations on inputs already in [-1, 1]: the streaming sequencer asserts `iters == 20`.
    """
    import torch
    from pytorchcv.models.propainter import ProPainter, propainter
    from pytorchcv.models.propainter_rfc import propainter_rfc
    from pytorchcv.models.raft import RAFT, ConvGRU, raft_things

    if check_preset(preset) == "full":
        modules = (raft_things(in_normalize=False, iters=20), propainter_rfc(), propainter())
        for module, part in zip(modules, ("raft", "rfc", "pp")):
            path = resolve(PROPAINTER_WEIGHTS, PROPAINTER_FILES[part])
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return tuple(m.eval().requires_grad_(False) for m in modules)  # type: ignore[return-value]
    with seeded(seed):
        raft = RAFT(corr_levels=4, corr_radius=1, hidden_dim=16, context_dim=16, encoder_init_block_channels=8,
                    encoder_mid_channels=[[8, 8], [12, 12], [16, 16]], fnet_final_block_channels=16,
                    encoder_bottleneck=False, cnet_normalize=False, corr_out_channels_list=(16,),
                    flow_out_channels_list=(16, 8), mout_in_channels=24, mout_out_channels=14, gru_class=ConvGRU,
                    gru_input_dim=32, flow_mid_channels=16, mask_out_channels=0, in_normalize=False, iters=20)
        modules = (raft, propainter_rfc(), ProPainter(hidden_dim=64, num_heads=2, depth=2))
    return tuple(m.eval().requires_grad_(False) for m in modules)  # type: ignore[return-value]

