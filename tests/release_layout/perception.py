"""The perception models' releases, tiny: every entry of infra/weights/perception.yaml, plus the tag stage's CLIP
(`clip-vit-l14-openai` of infra/weights/evaluation.yaml).

- `clip-vit-l14-openai/open_clip_model.safetensors`: open_clip's `CLIP` state dict (the OpenAI key names) as the
  timm hub repo ships it: ViT-L/14 geometry (224 px, patch 14, 77 tokens, 768-d output), 64-wide towers with one
  64-wide head per 64 channels (2 vision layers, 1 text layer). tests/release_layout/evaluation.py reads it too.
- `ram-plus/ram_plus_swin_large_14m.pth`: `{"model": state_dict}` with RAM++'s top-level modules. Not loadable
  here (the `ram` package is a git install); the file only has to be where the registry says.
- `grounding-dino-base/` (4 queries), `sam2.1-hiera-large/`: transformers `save_pretrained` folders. Grounding
  DINO's processor files are in the release's layout (preprocessor_config.json, the BERT tokenizer's
  tokenizer_config.json and vocab.txt), which transformers 5's processor `save_pretrained` no longer writes;
  SAM 2.1's processor_config.json is what its processor `save_pretrained` writes.
- `sam3/`: the tiny SAM 3 as transformers' `save_pretrained` writes model and processor (config.json,
  model.safetensors, processor_config.json, the CLIP tokenizer's tokenizer.json and tokenizer_config.json).
- `sam-vit-h/sam_vit_h_4b8939.pth`: segment-anything's plain state dict from its own `_build_sam` (the vit_h image
  size, prompt encoder and mask decoder) with a 3-block, 48-channel image encoder.
- `qwen2.5-vl-7b-instruct/`: bfloat16 safetensors shards + model.safetensors.index.json, the image processor's
  preprocessor_config.json, tokenizer.json and the release's chat_template.json (the Qwen2-VL chat template).
- `qwen3-vl-8b-instruct/`: the same, plus the video processor's video_preprocessor_config.json, with the Qwen3-VL
  instruct chat layout (no default system turn).
- `cogvlm2-llama3-caption/`: config.json naming the release's remote-code classes, an index and its shard with the
  release's key names, tokenizer_config.json. Not loadable here (no remote code is shipped).
- `propainter/`: pytorchcv state dicts under the release's file names: RAFT with raft_things' layout (separable
  GRU, context batch norm, convex upsampling mask) at small widths, the recurrent flow completion network (it has
  one size) and a 2-block, 1-head ProPainter.
- `stable-diffusion-2-inpainting/`: the diffusers folders of the hub repository (unet/, vae/, text_encoder/ as
  `save_pretrained` writes them, safetensors; scheduler/scheduler_config.json) with the tiny preset's sizes, and
  tokenizer/ as the release ships it (CLIP's vocab.json and merges.txt, tokenizer_config.json and
  special_tokens_map.json with stable-diffusion-2's "!" pad token).
Every parameter is nudged off its init value (see `nudged`).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from data_engine.stages import models, sd_inpaint
from data_engine.weights import spec

SEED = 1234
# The Qwen2-VL / Qwen2.5-VL instruct chat template, as the release's chat_template.json holds it.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
# The Qwen3-VL instruct chat layout for messages without tools: unlike Qwen2.5-VL, no system turn unless given.
QWEN3_CHAT_TEMPLATE = (
    "{% if messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for message in messages if message.role != 'system' %}<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}{{ message.content }}{% else %}{% for content in message.content %}"
    "{% if content.type == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content.type == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_CHAT_TEMPLATES = {"qwen2.5-vl": QWEN_CHAT_TEMPLATE, "qwen3-vl": QWEN3_CHAT_TEMPLATE}
QWEN_SHARD_SIZE = "100KB"  # small enough that the tiny model is sharded like the 7B release
TINY_SAM_ENCODER = dict(encoder_embed_dim=48, encoder_depth=3, encoder_num_heads=3, encoder_global_attn_indexes=[2])
TINY_RAFT = dict(corr_levels=4, corr_radius=1, hidden_dim=16, context_dim=16, encoder_init_block_channels=8,
                 encoder_mid_channels=[[8, 8], [12, 12], [16, 16]], fnet_final_block_channels=16,
                 encoder_bottleneck=False, cnet_normalize=True, corr_out_channels_list=(16, 12),
                 flow_out_channels_list=(16, 8), mout_in_channels=20, mout_out_channels=14, gru_input_dim=32,
                 flow_mid_channels=16, mask_out_channels=64 * 9)
TINY_PROPAINTER = dict(hidden_dim=128, num_heads=1, depth=2)  # depth: a multiple of the time dilation (2)
RAM_DESCRIPTIONS = 51  # RAM++ holds 51 LLM tag descriptions per tag in `label_embed`
GDINO_QUERIES = 4  # few boxes per keyframe: SAM's release-size mask decoder runs once per box


def folder(root: Path, name: str) -> Path:
    path = root / spec(name).subdir
    path.mkdir(parents=True, exist_ok=True)
    return path


def nudged(module: torch.nn.Module, seed: int = SEED) -> torch.nn.Module:
    """`module` with every parameter moved off its init value by N(0, 0.02^2) noise (buffers kept), so a loader that
    silently kept a fresh init (zeros, ones, the same seed) is told apart from one that read the file."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=g).to(param.dtype))
    return module


def write_clip(root: Path) -> None:
    import open_clip

    with models.seeded(SEED):
        clip = open_clip.CLIP(
            embed_dim=768, quick_gelu=True,
            vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=64, head_width=64, patch_size=14, image_size=224),
            text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1))
    path = folder(root, models.CLIP_WEIGHTS) / models.CLIP_FILE
    save_file(nudged(clip).state_dict(), path, metadata={"format": "pt"})  # what open_clip's save_for_hf writes


def _ram_plus_state(width: int = 8, hidden: int = 16, vision: int = 8) -> dict[str, torch.Tensor]:
    """RAM++'s key names (`ram.models.ram_plus.RAM_plus`: Swin visual encoder, image projection, tag-description
    embeddings, Query2Label BERT tagging head without self-attention, word-vector projection, classifier)."""
    g = torch.Generator().manual_seed(SEED)
    shapes = {
        "visual_encoder.patch_embed.proj.weight": (vision, 3, 4, 4),
        "visual_encoder.patch_embed.norm.weight": (vision,),
        "visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table": (9, 1),
        "visual_encoder.layers.0.blocks.0.attn.qkv.weight": (3 * vision, vision),
        "visual_encoder.layers.0.blocks.0.mlp.fc1.weight": (4 * vision, vision),
        "visual_encoder.norm.weight": (vision,),
        "image_proj.weight": (width, vision),
        "label_embed": (len(models.tag_list()) * RAM_DESCRIPTIONS, width),
        "tagging_head.encoder.layer.0.crossattention.self.query.weight": (hidden, hidden),
        "tagging_head.encoder.layer.0.crossattention.self.key.weight": (hidden, width),
        "tagging_head.encoder.layer.0.crossattention.output.dense.weight": (hidden, hidden),
        "tagging_head.encoder.layer.0.intermediate.dense.weight": (4 * hidden, hidden),
        "tagging_head.encoder.layer.0.output.dense.weight": (hidden, 4 * hidden),
        "wordvec_proj.weight": (hidden, width),
        "fc.weight": (1, hidden),
    }
    state = {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
    state["reweight_scale"] = torch.tensor(1 / 0.07).log()
    return state


def write_ram_plus(root: Path) -> None:
    (name,) = spec(models.RAM_WEIGHTS).files
    torch.save({"model": _ram_plus_state()}, folder(root, models.RAM_WEIGHTS) / name)


def write_grounding_dino(root: Path) -> None:
    from transformers import GroundingDinoForObjectDetection

    tiny, processor = models.build_grounding_dino("tiny", seed=SEED)  # its BERT vocabulary is the tag words
    config = tiny.config
    config.num_queries = GDINO_QUERIES
    with models.seeded(SEED):
        model = nudged(GroundingDinoForObjectDetection(config))
    out = folder(root, models.GDINO_WEIGHTS)
    model.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    vocab = processor.tokenizer.get_vocab()  # WordPiece vocab.txt: one token per line, the line number is its id
    (out / "vocab.txt").write_text("".join(f"{t}\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")


def write_sam(root: Path) -> None:
    # segment-anything's own builder: the vit_h layout at 1024 px with a small image encoder.
    build = importlib.import_module("segment_anything.build_sam")._build_sam
    with models.seeded(SEED):
        sam = build(**TINY_SAM_ENCODER)
    torch.save(nudged(sam).state_dict(), folder(root, models.SAM_WEIGHTS) / models.SAM_FILE)


def write_sam2(root: Path) -> None:
    model, processor = models.build_sam2_video("tiny", seed=SEED)
    out = folder(root, models.SAM2_WEIGHTS)
    nudged(model).save_pretrained(out)
    processor.save_pretrained(out)


def written_sam3() -> tuple[torch.nn.Module, object]:
    """The tiny SAM 3 the tree holds (model, processor), rebuilt: what `write_sam3` writes."""
    model, processor = models.build_sam3_video("tiny", seed=SEED)
    return nudged(model), processor


def write_sam3(root: Path) -> None:
    model, processor = written_sam3()
    out = folder(root, models.SAM3_WEIGHTS)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def written_qwen(backend: str) -> tuple[torch.nn.Module, object]:
    """The tiny model (bfloat16, as the release ships it) and processor `write_qwen` writes for a Qwen-VL backend."""
    model, processor = models.build_qwen_vl("tiny", backend, dtype="float32", seed=SEED)
    return nudged(model).to(torch.bfloat16), processor


def write_qwen(root: Path) -> None:
    for backend, template in QWEN_CHAT_TEMPLATES.items():
        write_qwen_vl(root, backend, template)


def write_qwen_vl(root: Path, backend: str, chat_template: str) -> None:
    model, processor = written_qwen(backend)
    name = models.QWEN_VL[backend].weights
    out = folder(root, name)
    model.save_pretrained(out, max_shard_size=QWEN_SHARD_SIZE)
    if "video_preprocessor_config.json" in spec(name).files:  # Qwen3-VL's release has one, Qwen2.5-VL's not
        processor.video_processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2) + "\n")


def write_cogvlm2(root: Path) -> None:
    out = folder(root, models.COGVLM2_WEIGHTS)
    width, vocab = 16, 64
    g = torch.Generator().manual_seed(SEED)
    state = {k: torch.randn(s, generator=g).to(torch.bfloat16) for k, s in {
        "model.embed_tokens.weight": (vocab, width),
        "model.layers.0.input_layernorm.weight": (width,),
        "model.layers.0.mlp.language_mlp.gate_proj.weight": (2 * width, width),
        "model.norm.weight": (width,),
        "model.vision.boi": (1, 1, width),
        "lm_head.weight": (vocab, width),
    }.items()}
    shard = "model-00001-of-00001.safetensors"
    save_file(state, out / shard, metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": {k: shard for k in sorted(state)}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = {
        "architectures": ["CogVLMVideoForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_cogvlm.CogVLMConfig",
                     "AutoModelForCausalLM": "modeling_cogvlm.CogVLMVideoForCausalLM"},
        "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_multi_query_heads": 1, "vocab_size": vocab, "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}) + "\n")


def write_propainter(root: Path) -> None:
    from pytorchcv.models.propainter import ProPainter
    from pytorchcv.models.propainter_rfc import propainter_rfc
    from pytorchcv.models.raft import RAFT, SepConvGRU

    out = folder(root, models.PROPAINTER_WEIGHTS)
    with models.seeded(SEED):
        parts = {"raft": RAFT(**TINY_RAFT, gru_class=SepConvGRU), "rfc": propainter_rfc(),
                 "pp": ProPainter(**TINY_PROPAINTER)}
    for part, module in parts.items():
        torch.save(nudged(module).state_dict(), out / models.PROPAINTER_FILES[part])


def _special(content: str) -> dict:
    """A special token as the release's tokenizer files spell it (transformers 4.2x's AddedToken)."""
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_clip_tokenizer(out: Path) -> None:
    """stable-diffusion-2-inpainting's tokenizer/: CLIP's BPE as vocab.json + merges.txt, and the two JSON files."""
    vocab, merges = models.clip_bpe()
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    bos, eos = (_special(t) for t in models.CLIP_SPECIALS)
    tokens = {"bos_token": bos, "eos_token": eos, "pad_token": sd_inpaint.SD2_PAD, "unk_token": eos}
    (out / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n")
    config = {"add_prefix_space": False, **{k: dict(v, __type="AddedToken") if isinstance(v, dict) else v
                                            for k, v in tokens.items()},
              "do_lower_case": True, "errors": "replace", "model_max_length": sd_inpaint.CLIP_MAX_TOKENS,
              "name_or_path": "openai/clip-vit-large-patch14", "special_tokens_map_file": "./special_tokens_map.json",
              "tokenizer_class": "CLIPTokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_sd_inpaint(root: Path) -> None:
    pipe = sd_inpaint.build_sd_inpaint("tiny", seed=SEED)
    out = folder(root, sd_inpaint.SD_INPAINT_WEIGHTS)
    for part in ("unet", "vae", "text_encoder"):
        nudged(getattr(pipe, part)).save_pretrained(out / part)
    pipe.scheduler.save_pretrained(out / "scheduler")
    write_clip_tokenizer(out / "tokenizer")


def build(root: Path) -> None:
    """Write every perception entry (and the tag stage's CLIP) under `root`, a LAYERFLOW_WEIGHTS folder."""
    for write in (write_clip, write_ram_plus, write_grounding_dino, write_sam, write_sam2, write_sam3, write_qwen,
                  write_cogvlm2, write_propainter, write_sd_inpaint):
        write(root)
