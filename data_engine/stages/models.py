"""Builders of every perception model, for two presets.

- `full`: the real architectures loaded from local files under LAYERFLOW_WEIGHTS (see infra/weights/perception.yaml);
  a missing file raises `MissingWeightsError` in one line (model, expected path, hub id). Nothing downloads.
  Each architecture comes from the files themselves: transformers models from their config.json, plain state dicts
  (CLIP, SAM, RAFT, ProPainter) from their key names and tensor shapes, so the real checkpoint gives exactly the
  released architecture and a tiny checkpoint of the same format runs the same code. A file that is present but
  not such a checkpoint raises `WeightsFormatError` in one line naming the file.
- `tiny`: the same classes from tiny configs with seeded random weights, and tokenizers built in-process; for tests,
  the demo and CPU benchmarks. Outputs of tiny models are noise: only the plumbing is meaningful.

Heavy libraries are imported inside the builders so importing this module stays cheap.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
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
SAM3_WEIGHTS = "sam3"
QWEN_WEIGHTS = "qwen2.5-vl-7b-instruct"
QWEN3_WEIGHTS = "qwen3-vl-8b-instruct"
COGVLM2_WEIGHTS = "cogvlm2-llama3-caption"
PROPAINTER_WEIGHTS = "propainter"
PROPAINTER_FILES = {
    "raft": "raft_things-0000-d74fed4b.pth",
    "rfc": "propainter_rfc-0000-a865ddc0.pth",
    "pp": "propainter-0000-5f3cc1e7.pth",
}
CLIP_ARCH = "ViT-L-14-quickgelu"  # open_clip's name for the release (real-size benchmarks build it by name)
CLIP_FILE = "open_clip_model.safetensors"
TINY_CLIP_CONTEXT = 16  # "a photo of a {tag}." fits; 77 makes the 4585 tag prompts the slowest part of a tiny run
SAM_FILE = "sam_vit_h_4b8939.pth"

# GPU memory, for placement (data_engine/engine/resources.py). Parameter counts of the released architectures as
# benchmarks/perception.py builds them on the meta device (tests/data_engine/test_gpu_memory.py rebuilds and
# compares); a model without one is sized from its weight files.
GIB = 1024**3
RELEASE_PARAMS = {
    CLIP_WEIGHTS: 427_616_513,
    GDINO_WEIGHTS: 232_315_264,
    SAM_WEIGHTS: 641_090_608,
    SAM2_WEIGHTS: 224_446_642,
    # The default Sam3VideoConfig (transformers' facebook/sam3 sizes); Meta's SAM 3 README quotes 848M.
    SAM3_WEIGHTS: 859_921_848,
    QWEN_WEIGHTS: 8_292_166_656,
    QWEN3_WEIGHTS: 8_767_123_696,
    PROPAINTER_WEIGHTS: 49_766_758,
}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Per actor process: the CUDA context and the caching allocator's slack. Tiny models add nothing measurable to it.
CUDA_CONTEXT_GIB = 0.5


def weights_gib(name: str, dtype: str = "float32") -> float:
    """GiB the weights of registry model `name` take on the GPU in `dtype`."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}")
    if name in RELEASE_PARAMS:
        return RELEASE_PARAMS[name] * DTYPE_BYTES[dtype] / GIB
    from data_engine.weights import model_dir

    folder = model_dir(name)
    files = [f for f in folder.rglob("*") if f.is_file()] if folder.is_dir() else []
    if not files:
        raise ValueError(f"{name} has no parameter count here and no weight files under {folder} to size it by; "
                         f"run `layerflow weights download {name}`")
    return sum(f.stat().st_size for f in files) / GIB


def actor_gpu_gib(preset: str, models: dict[str, str], working_gib: float) -> float:
    """One actor's GPU memory: its models' weights ({registry name: dtype}) plus its working set; the tiny preset
    only needs the process's CUDA context."""
    if check_preset(preset) == "tiny":
        return CUDA_CONTEXT_GIB
    return CUDA_CONTEXT_GIB + sum(weights_gib(name, dtype) for name, dtype in models.items()) + working_gib


QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
# The Qwen-VL chat layout, the same for Qwen2-VL, Qwen2.5-VL and Qwen3-VL (system turn omitted); the full preset
# uses the template shipped with the processor.
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


class WeightsFormatError(ValueError):
    """A weight file is present but is not the checkpoint its loader reads; the message names the file, in one line."""


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


# ---------------------------------------------------------------- plain state-dict checkpoints

Shapes = Mapping[str, tuple[int, ...]]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a state-dict checkpoint: safetensors, or a torch file read with weights_only=True (no pickled
    code runs)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or code-carrying files fail in many ways: name the file once
        raise WeightsFormatError(f"{path}: not a readable state dict ({_first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise WeightsFormatError(f"{path}: expected a state dict of tensors, got a {type(state).__name__}")
    nested = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if nested is not None:
        raise WeightsFormatError(f"{path}: expected a state dict of tensors; {nested!r} holds a "
                                 f"{type(state[nested]).__name__}")
    return state


def shapes_of(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def numbered(shapes: Shapes, prefix: str) -> int:
    """How many numbered submodules (`<prefix>0.`, `<prefix>1.`, ...) the keys hold."""
    return len({k[len(prefix):].split(".", 1)[0] for k in shapes if k.startswith(prefix)})


def model_for(build: Callable[[Shapes], Any], state: Mapping[str, Any], path: Path, what: str) -> Any:
    """The module `build` makes for the checkpoint's shapes; a checkpoint it cannot read is a WeightsFormatError."""
    try:
        return build(shapes_of(state))
    except KeyError as exc:
        raise WeightsFormatError(f"{path}: not a {what} checkpoint (no key {exc.args[0]!r})") from exc
    except (ValueError, IndexError, ZeroDivisionError) as exc:
        raise WeightsFormatError(f"{path}: not a {what} checkpoint ({_first_line(exc)})") from exc


def refuse_mismatch(path: Path, what: str, found: dict[str, list[str]]) -> None:
    """A WeightsFormatError naming each non-empty group of bad keys (how many, and the first)."""
    problems = [f"{len(keys)} {kind}, first {keys[0]}" for kind, keys in found.items() if keys]
    if problems:
        raise WeightsFormatError(f"{path}: does not fit {what} ({'; '.join(problems)})")


def load_exact(module: Any, state: Mapping[str, Any], path: Path, what: str) -> Any:
    """`module` with every tensor of `state` copied in; keys and shapes must match both ways."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    refuse_mismatch(path, what, {"missing key(s)": missing, "unexpected key(s)": unexpected,
                                 "shape mismatch(es)": wrong})
    module.load_state_dict(state, strict=True)
    return module


def load_checkpoint(path: Path, build: Callable[[Shapes], Any], what: str) -> Any:
    """Read a state-dict file, build the architecture its shapes describe, and load it exactly."""
    state = read_state_dict(path)
    return load_exact(model_for(build, state, path, what), state, path, what)


def load_pretrained(cls: Any, path: Path, what: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained` on a local folder. transformers re-initialises weights missing from the checkpoint with
    only a log line; here that, a shape mismatch or an unreadable file is a WeightsFormatError naming the folder."""
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                          ignore_mismatched_sizes=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        raise WeightsFormatError(f"{path}: not a {what} checkpoint ({_first_line(exc)})") from exc
    # mismatched_keys holds (key, checkpoint shape, model shape) tuples
    wrong = sorted(f"{key} {tuple(got)} vs {tuple(want)}" for key, got, want in info["mismatched_keys"])
    refuse_mismatch(path, what, {"missing key(s)": sorted(info["missing_keys"]), "shape mismatch(es)": wrong})
    return model


# ---------------------------------------------------------------- tiny tokenizers (built in-process, no download)

def tiny_bert_tokenizer(words: list[str]) -> Any:
    """A BERT WordPiece tokenizer whose vocabulary is the given words (lower-cased) plus BERT's specials."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
    vocab: dict[str, int] = {}
    for w in [*specials, *sorted({p for word in words for p in word.lower().replace("-", " ").split()})]:
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


CLIP_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes, 256 bytes + "</w>", the merges, two specials
CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


@lru_cache(maxsize=1)
def clip_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary and merges, from the BPE file open_clip ships (the file OpenAI's CLIP ships): the same
    ids as the release's vocab.json, with the Hugging Face names of the two special tokens."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:CLIP_MERGES + 1]
    merges = tuple(tuple(line.split()) for line in lines)
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), *CLIP_SPECIALS]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


# ---------------------------------------------------------------- CLIP (open_clip)

OPENAI_CLIP_HEAD_WIDTH = 64  # every OpenAI CLIP tower has 64-channel attention heads; head counts are not in the shapes


@dataclass(frozen=True)
class ClipArch:
    """An OpenAI-layout CLIP ViT as its checkpoint describes it (open_clip's `CLIP` class, QuickGELU)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_mlp_ratio: float
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_mlp_ratio: float


def clip_arch(shapes: Shapes) -> ClipArch:
    """The architecture of an open_clip / OpenAI CLIP ViT state dict (the keys open_clip's `CLIP` writes)."""
    width, _, patch, _ = shapes["visual.conv1.weight"]
    tokens = shapes["visual.positional_embedding"][0] - 1  # patches plus the class token
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ValueError(f"visual.positional_embedding holds {tokens} patches, not a square grid")
    text_width = shapes["ln_final.weight"][0]
    return ClipArch(
        embed_dim=shapes["text_projection"][1], image_size=patch * grid, patch_size=patch, vision_width=width,
        vision_layers=numbered(shapes, "visual.transformer.resblocks."),
        vision_mlp_ratio=shapes["visual.transformer.resblocks.0.mlp.c_fc.weight"][0] / width,
        context_length=shapes["positional_embedding"][0], vocab_size=shapes["token_embedding.weight"][0],
        text_width=text_width, text_layers=numbered(shapes, "transformer.resblocks."),
        text_mlp_ratio=shapes["transformer.resblocks.0.mlp.c_fc.weight"][0] / text_width)


def clip_from_arch(arch: ClipArch) -> Any:
    import open_clip

    vision = open_clip.CLIPVisionCfg(layers=arch.vision_layers, width=arch.vision_width,
                                     head_width=OPENAI_CLIP_HEAD_WIDTH, mlp_ratio=arch.vision_mlp_ratio,
                                     patch_size=arch.patch_size, image_size=arch.image_size)
    text = open_clip.CLIPTextCfg(context_length=arch.context_length, vocab_size=arch.vocab_size, width=arch.text_width,
                                 heads=arch.text_width // OPENAI_CLIP_HEAD_WIDTH, layers=arch.text_layers,
                                 mlp_ratio=arch.text_mlp_ratio)
    # The OpenAI weights were trained with QuickGELU.
    return open_clip.CLIP(embed_dim=arch.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)


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
        model = load_checkpoint(path, lambda shapes: clip_from_arch(clip_arch(shapes)), "CLIP ViT (open_clip layout)")
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        return ClipBundle(model.eval(), preprocess, SimpleTokenizer(context_length=model.context_length))
    with seeded(seed):
        model = open_clip.CLIP(
            embed_dim=32,
            vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=64),
            text_cfg=open_clip.CLIPTextCfg(context_length=TINY_CLIP_CONTEXT, vocab_size=49408, width=32, heads=2,
                                           layers=1),
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
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    if check_preset(preset) == "full":
        path = resolve(GDINO_WEIGHTS)
        model = load_pretrained(GroundingDinoForObjectDetection, path, "Grounding DINO")
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

SAM_DECODER_HEAD_WIDTH = 32  # all SAM releases: 8 heads over 256 channels; head counts are not in the shapes
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # non-persistent buffers: not in the checkpoint
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamArch:
    """segment-anything's `Sam` (ViT image encoder, prompt encoder, two-way mask decoder) as its sizes."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    window_size: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_heads: int
    decoder_downsample: int
    iou_head_depth: int
    iou_head_hidden_dim: int
    num_multimask_outputs: int


TINY_SAM = SamArch(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2, window_size=2,
                   global_attn_indexes=(1,), out_chans=32, mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64,
                   decoder_heads=2, decoder_downsample=2, iou_head_depth=2, iou_head_hidden_dim=32,
                   num_multimask_outputs=3)


def _sam_attention(shapes: Shapes, grid: int) -> tuple[int, int, tuple[int, ...]]:
    """(heads, window size, global block indexes) from the relative position tables: a block's table spans
    2 * size - 1 positions of `head_dim` channels, size being the feature grid for global blocks, else the window."""
    depth = numbered(shapes, "image_encoder.blocks.")
    spans = [shapes[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    head_dims = {d for _, d in spans}
    if len(head_dims) != 1:
        raise ValueError(f"image encoder blocks disagree on the attention head width: {sorted(head_dims)}")
    sizes = [(n + 1) // 2 for n, _ in spans]
    windows = {s for s in sizes if s != grid}
    if len(windows) > 1:
        raise ValueError(f"image encoder blocks use several window sizes: {sorted(windows)}")
    heads = shapes["image_encoder.patch_embed.proj.weight"][0] // head_dims.pop()
    return heads, windows.pop() if windows else 0, tuple(i for i, s in enumerate(sizes) if s == grid)


def sam_arch(shapes: Shapes) -> SamArch:
    """The architecture of a segment-anything checkpoint (`sam_vit_{b,l,h}_*.pth` key names)."""
    _, grid, grid_w, embed_dim = shapes["image_encoder.pos_embed"]
    if grid != grid_w:
        raise ValueError(f"image_encoder.pos_embed is a {grid}x{grid_w} grid; SAM's is square")
    patch = shapes["image_encoder.patch_embed.proj.weight"][-1]
    heads, window, global_blocks = _sam_attention(shapes, grid)
    dim = shapes["mask_decoder.iou_token.weight"][1]
    return SamArch(
        img_size=grid * patch, patch_size=patch, embed_dim=embed_dim, depth=numbered(shapes, "image_encoder.blocks."),
        num_heads=heads, mlp_ratio=shapes["image_encoder.blocks.0.mlp.lin1.weight"][0] / embed_dim,
        window_size=window, global_attn_indexes=global_blocks, out_chans=shapes["image_encoder.neck.0.weight"][0],
        mask_in_chans=shapes["prompt_encoder.mask_downscaling.3.weight"][0],
        decoder_depth=numbered(shapes, "mask_decoder.transformer.layers."),
        decoder_mlp_dim=shapes["mask_decoder.transformer.layers.0.mlp.lin1.weight"][0],
        decoder_heads=dim // SAM_DECODER_HEAD_WIDTH,
        decoder_downsample=dim // shapes["mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"][0],
        iou_head_depth=numbered(shapes, "mask_decoder.iou_prediction_head.layers."),
        iou_head_hidden_dim=shapes["mask_decoder.iou_prediction_head.layers.0.weight"][0],
        num_multimask_outputs=shapes["mask_decoder.mask_tokens.weight"][0] - 1)


def sam_from_arch(arch: SamArch) -> Any:
    """segment-anything's `Sam`, assembled as its `build_sam` does, at the given sizes."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch.img_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=arch.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads, patch_size=arch.patch_size,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=arch.global_attn_indexes,
            window_size=arch.window_size, out_chans=arch.out_chans),
        prompt_encoder=PromptEncoder(embed_dim=arch.out_chans, image_embedding_size=(grid, grid),
                                     input_image_size=(arch.img_size, arch.img_size), mask_in_chans=arch.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.out_chans,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_heads,
                                          attention_downsample_rate=arch.decoder_downsample),
            transformer_dim=arch.out_chans, iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def build_sam(preset: Preset, seed: int = 0) -> Any:
    """A `SamPredictor` over SAM; the full preset's architecture is the checkpoint's own (vit_h for the release)."""
    from segment_anything import SamPredictor

    if check_preset(preset) == "full":
        sam = load_checkpoint(resolve(SAM_WEIGHTS, SAM_FILE), lambda shapes: sam_from_arch(sam_arch(shapes)),
                              "segment-anything SAM")
        return SamPredictor(sam.eval())
    with seeded(seed):
        sam = sam_from_arch(TINY_SAM)
    return SamPredictor(sam.eval())


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


def release_with_processor(name: str, model_cls: Any, processor_cls: Any, what: str) -> tuple[Any, Any]:
    """A transformers release folder's model (see `load_pretrained`), in eval mode, and its processor."""
    path = resolve(name)
    return load_pretrained(model_cls, path, what).eval(), processor_cls.from_pretrained(path, local_files_only=True)


def build_sam2_video(preset: Preset, seed: int = 0) -> tuple[Any, Any]:
    from transformers import Sam2ImageProcessor, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor

    if check_preset(preset) == "full":
        return release_with_processor(SAM2_WEIGHTS, Sam2VideoModel, Sam2VideoProcessor, "SAM 2 video")
    config = tiny_sam2_video_config()
    with seeded(seed):
        model = Sam2VideoModel(config)
    size = config.image_size
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": size, "width": size},
                                           mask_size={"height": size // 4, "width": size // 4}),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}))
    return model.eval(), processor


# ---------------------------------------------------------------- SAM 3 video (transformers)

SAM3_TEXT_TOKENS = 32  # Sam3VideoProcessor pads every text prompt to 32 tokens: the text encoder's context


def tiny_sam3_video_config() -> Any:
    from transformers import Sam3VideoConfig

    # A 4 x 4 patch grid; the tracker's features and low-res masks are 4x finer, as the release's 72 -> 288.
    size, patch = 56, 14
    # The tracker's object pointers (`width` channels) reach its 64-channel memories only when split into them:
    # `width` must be a multiple of 64 above 64 (transformers skips the split at exactly 64, and the shapes break).
    width, small = 128, dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    layers = dict(small, hidden_size=width)
    # The tracker shares the detector's ViT (its own vision config only sizes its feature maps).
    vision = dict(backbone_config=dict(model_type="sam3_vit_model", num_hidden_layers=2, window_size=2,
                                       global_attn_indexes=[1], image_size=size, patch_size=patch,
                                       pretrain_image_size=size, **small),
                  fpn_hidden_size=width)
    detector = dict(
        vision_config=vision,
        text_config=dict(vocab_size=len(clip_bpe()[0]), projection_dim=32, num_hidden_layers=1,
                         max_position_embeddings=SAM3_TEXT_TOKENS, hidden_act="gelu", **small),
        geometry_encoder_config=dict(num_layers=1, **layers),
        detr_encoder_config=dict(num_layers=1, **layers),
        detr_decoder_config=dict(num_layers=1, num_queries=4, **layers),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=2),
    )
    tracker = dict(
        vision_config=vision, prompt_encoder_config=dict(hidden_size=width, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        num_maskmem=3, memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=width,
        mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=64,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * size // patch)
    config.image_size = size  # the setter sizes the tracker's feature maps and memory attention to the patch grid
    return config


def tiny_sam3_tokenizer() -> Any:
    """transformers' CLIPTokenizer over CLIP's real vocabulary: SAM 3's text encoder is a CLIP text tower."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=SAM3_TEXT_TOKENS)


def build_sam3_video(preset: Preset, seed: int = 0) -> tuple[Any, Any]:
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoModel, Sam3VideoProcessor

    if check_preset(preset) == "full":
        return release_with_processor(SAM3_WEIGHTS, Sam3VideoModel, Sam3VideoProcessor, "SAM 3 video")
    config = tiny_sam3_video_config()
    with seeded(seed):
        model = Sam3VideoModel(config)
    size, mask = config.image_size, config.low_res_mask_size
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size={"height": size, "width": size},
                                           mask_size={"height": mask, "width": mask}),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}),
        tokenizer=tiny_sam3_tokenizer())
    return model.eval(), processor


# ---------------------------------------------------------------- Qwen2.5-VL and Qwen3-VL (transformers)

@dataclass(frozen=True)
class QwenVl:
    """One Qwen-VL generation the fg_check and caption stages can run (their `backend`): its transformers classes
    (by name, imported when built), its release in the weights registry, and what its tiny preset changes from the
    sizes the generations share."""

    weights: str
    label: str
    model: str
    config: str
    processor: str
    video_processor: str
    patch: int  # vision patch side: the tiny processors' pixel bounds are whole 2 x 2 merged patches
    tiny_text: Mapping[str, Any]
    tiny_vision: Mapping[str, Any]
    # The processor writes each frame pair's time into the prompt, so a video needs its fps and frame indices.
    timestamps: bool


QWEN_VL = {
    "qwen2.5-vl": QwenVl(
        QWEN_WEIGHTS, "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig", "Qwen2_5_VLProcessor",
        "Qwen2VLVideoProcessor", 14,
        tiny_text=dict(rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4}),
        tiny_vision=dict(fullatt_block_indexes=[0], window_size=56), timestamps=False),
    "qwen3-vl": QwenVl(
        QWEN3_WEIGHTS, "Qwen3-VL", "Qwen3VLForConditionalGeneration", "Qwen3VLConfig", "Qwen3VLProcessor",
        "Qwen3VLVideoProcessor", 16,
        tiny_text=dict(head_dim=16, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                     "mrope_interleaved": True, "rope_theta": 1e4}),
        # A 4 x 4 grid of learned position embeddings (interpolated to each image's patch grid); DeepStack feeds the
        # one vision layer's features into the first language layer, as the release feeds 3 into the first 3.
        tiny_vision=dict(num_position_embeddings=16, deepstack_visual_indexes=[0]), timestamps=True),
}


def qwen_vl(backend: str) -> QwenVl:
    if backend not in QWEN_VL:
        raise ValueError(f"unknown Qwen-VL backend {backend!r}; choose one of {tuple(QWEN_VL)}")
    return QWEN_VL[backend]


def qwen_vl_release_processor(backend: str) -> tuple[Any, Path]:
    """A released Qwen-VL's processor and weights folder, without the model (the vLLM path loads that)."""
    from transformers import AutoProcessor

    path = resolve(qwen_vl(backend).weights)
    return AutoProcessor.from_pretrained(path, local_files_only=True), path


def tiny_qwen_vl(vl: QwenVl, tok: Any) -> tuple[Any, Any]:
    """The tiny (config, processor) of a Qwen-VL generation over the tiny Qwen tokenizer `tok`."""
    import transformers

    ids = tok.convert_tokens_to_ids
    side = 2 * vl.patch
    pixels = {"shortest_edge": (2 * side) ** 2, "longest_edge": (4 * side) ** 2}
    processor = getattr(transformers, vl.processor)(
        image_processor=transformers.Qwen2VLImageProcessor(patch_size=vl.patch, size=pixels), tokenizer=tok,
        video_processor=getattr(transformers, vl.video_processor)(size=pixels), chat_template=TINY_CHAT_TEMPLATE)
    config = getattr(transformers, vl.config)(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>"), **vl.tiny_text),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           **vl.tiny_vision),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    return config, processor


def build_qwen_vl(preset: Preset, backend: str = "qwen2.5-vl", dtype: str = "bfloat16",
                  seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of the Qwen-VL generation `backend` (a key of QWEN_VL)."""
    import torch
    import transformers

    vl = qwen_vl(backend)
    model_class = getattr(transformers, vl.model)
    if check_preset(preset) == "full":
        path = resolve(vl.weights)
        model = load_pretrained(model_class, path, vl.label, dtype=getattr(torch, dtype))
        return model.eval(), transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    config, processor = tiny_qwen_vl(vl, tiny_qwen_tokenizer())
    with seeded(seed):
        model = model_class(config)
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

RAFT_CORR_LEVELS = 4  # pytorchcv's correlation pyramid is fixed at 4 levels (CorrCalculator's default)
PROPAINTER_HEAD_WIDTH = 128  # the ProPainter release: 4 heads over 512 channels; head counts are not in the shapes


def _unit_channels(shapes: Shapes, stage: str) -> list[int]:
    """Output channels of each residual unit of an encoder stage (its last body convolution)."""
    out = []
    for j in range(1, numbered(shapes, f"{stage}.unit") + 1):
        body = f"{stage}.unit{j}.body.conv"
        last = max(int(k[len(body):].split(".", 1)[0]) for k in shapes if k.startswith(body))
        out.append(shapes[f"{body}{last}.conv.weight"][0])
    return out


def raft_arch(shapes: Shapes) -> dict[str, Any]:
    """pytorchcv `RAFT` constructor arguments from a RAFT checkpoint (`raft_things` / `raft_small` key names)."""
    from pytorchcv.models.raft import ConvGRU, SepConvGRU

    enc, upd = "fnet.features", "update_block"
    corr = [shapes[f"{upd}.encoder.conv_corr.conv_list.conv{i}.conv.weight"]
            for i in range(1, numbered(shapes, f"{upd}.encoder.conv_corr.conv_list.conv") + 1)]
    diameter = math.isqrt(corr[0][1] // RAFT_CORR_LEVELS)  # lookup window (2r + 1)^2 per pyramid level
    if RAFT_CORR_LEVELS * diameter * diameter != corr[0][1] or diameter % 2 == 0:
        raise ValueError(f"correlation input of {corr[0][1]} channels is not {RAFT_CORR_LEVELS} levels of (2r+1)^2")
    hidden = shapes[f"{upd}.flow_head.conv1.conv.weight"][1]
    separable = f"{upd}.gru.horizontal_gru.conv_z.conv.weight" in shapes
    gru_z = shapes[f"{upd}.gru.{'horizontal_gru.' if separable else ''}conv_z.conv.weight"]
    mout_out, mout_in = shapes[f"{upd}.encoder.conv_out.conv.weight"][:2]
    return dict(
        corr_levels=RAFT_CORR_LEVELS, corr_radius=diameter // 2, hidden_dim=hidden,
        context_dim=shapes["cnet.features.final_block.weight"][0] - hidden,
        encoder_init_block_channels=shapes[f"{enc}.init_block.conv.weight"][0],
        encoder_mid_channels=[_unit_channels(shapes, f"{enc}.stage{i}")
                              for i in range(1, numbered(shapes, f"{enc}.stage") + 1)],
        fnet_final_block_channels=shapes[f"{enc}.final_block.weight"][0],
        encoder_bottleneck=f"{enc}.stage1.unit1.body.conv3.conv.weight" in shapes,
        cnet_normalize="cnet.features.init_block.bn.weight" in shapes,
        corr_out_channels_list=tuple(w[0] for w in corr),
        flow_out_channels_list=tuple(shapes[f"{upd}.encoder.conv_flow.conv_list.conv{i}.conv.weight"][0]
                                     for i in (1, 2)),
        mout_in_channels=mout_in, mout_out_channels=mout_out, gru_class=SepConvGRU if separable else ConvGRU,
        gru_input_dim=gru_z[1] - hidden, flow_mid_channels=shapes[f"{upd}.flow_head.conv1.conv.weight"][0],
        mask_out_channels=shapes[f"{upd}.mask.conv2.weight"][0] if f"{upd}.mask.conv2.weight" in shapes else 0)


def raft_from_arch(arch: dict[str, Any]) -> Any:
    from pytorchcv.models.raft import RAFT

    # The streaming sequencer asserts 20 iterations and feeds frames already in [-1, 1].
    return RAFT(**arch, in_normalize=False, iters=20)


def propainter_arch(shapes: Shapes) -> dict[str, Any]:
    """pytorchcv `ProPainter` sizes from its checkpoint; window and stride are the constructor's (the release's)."""
    hidden, patch_len = shapes["ss.embedding.weight"]
    channels = shapes["sc.bias_conv.weight"][0]
    kernel = math.isqrt(patch_len // channels)  # soft split unfolds kernel x kernel patches of the features
    if kernel * kernel * channels != patch_len:
        raise ValueError(f"ss.embedding takes {patch_len} inputs, not square patches of {channels} channels")
    pool = shapes["transformers.transformer.0.attention.pool_layer.weight"][-2:]
    return dict(channels=channels, hidden_dim=hidden, num_heads=hidden // PROPAINTER_HEAD_WIDTH,
                depth=numbered(shapes, "transformers.transformer."), t2t_kernel_size=(kernel, kernel),
                pool_size=tuple(pool))


def propainter_from_arch(arch: dict[str, Any]) -> Any:
    from pytorchcv.models.propainter import ProPainter

    return ProPainter(**arch)


def _rfc_for(_: Shapes) -> Any:
    from pytorchcv.models.propainter_rfc import propainter_rfc

    return propainter_rfc()  # the recurrent flow completion network has one size: its constructor takes none


PROPAINTER_PARTS: dict[str, tuple[Callable[[Shapes], Any], str]] = {
    "raft": (lambda shapes: raft_from_arch(raft_arch(shapes)), "pytorchcv RAFT"),
    "rfc": (_rfc_for, "pytorchcv ProPainter recurrent flow completion"),
    "pp": (lambda shapes: propainter_from_arch(propainter_arch(shapes)), "pytorchcv ProPainter"),
}


def build_propainter(preset: Preset, seed: int = 0) -> tuple[Any, Any, Any]:
    """(RAFT, recurrent flow completion, ProPainter) modules, ready for `ProPainterIterator`.

    RAFT must run 20 iterations on inputs already in [-1, 1]: the streaming sequencer asserts `iters == 20`.
    """
    from pytorchcv.models.propainter import ProPainter
    from pytorchcv.models.propainter_rfc import propainter_rfc
    from pytorchcv.models.raft import RAFT, ConvGRU

    if check_preset(preset) == "full":
        modules = tuple(load_checkpoint(resolve(PROPAINTER_WEIGHTS, PROPAINTER_FILES[part]), *PROPAINTER_PARTS[part])
                        for part in ("raft", "rfc", "pp"))
        return tuple(m.eval().requires_grad_(False) for m in modules)  # type: ignore[return-value]
    with seeded(seed):
        raft = RAFT(corr_levels=4, corr_radius=1, hidden_dim=16, context_dim=16, encoder_init_block_channels=8,
                    encoder_mid_channels=[[8, 8], [12, 12], [16, 16]], fnet_final_block_channels=16,
                    encoder_bottleneck=False, cnet_normalize=False, corr_out_channels_list=(16,),
                    flow_out_channels_list=(16, 8), mout_in_channels=24, mout_out_channels=14, gru_class=ConvGRU,
                    gru_input_dim=32, flow_mid_channels=16, mask_out_channels=0, in_normalize=False, iters=20)
        modules = (raft, propainter_rfc(), ProPainter(hidden_dim=64, num_heads=2, depth=2))
    return tuple(m.eval().requires_grad_(False) for m in modules)  # type: ignore[return-value]
