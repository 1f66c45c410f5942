"""The generation model's releases, tiny: THUDM/CogVideoX-2b (diffusers) and the official LayerFlow checkpoints.

- `cogvideox-2b/`: what diffusers' `scripts/convert_cogvideox_to_diffusers.py` wrote for the hub (a
  `CogVideoXPipeline` moved to float16 and saved): model_index.json, transformer/ and vae/ (config.json +
  diffusion_pytorch_model.safetensors), text_encoder/ (T5 in safetensors shards + model.safetensors.index.json),
  tokenizer/ (spiece.model and the JSON files transformers 4.4x's slow T5Tokenizer wrote), scheduler/.
- `layerflow/<hub folder>/`: the zjuJish/LayerFlow snapshot (its README downloads it with `--local-dir`), one
  SAT/DeepSpeed checkpoint per released task: `latest` + `1000/mp_rank_00_model_states.pt`, the file
  `sat.training.model_io.save_ds_checkpoint` makes DeepSpeed's `_save_checkpoint` write: the engine's whole
  state dict under "module" plus DeepSpeed's bookkeeping and SAT's iteration, lr-scheduler and RNG states.
  Its DiT weights are the official-code fixture's (`../shared/reference/sat_tiny`, float32 where the releases
  are bfloat16), so a converted checkpoint can be checked against the official forward; without that fixture
  this folder is not written.
"""
from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
from safetensors.torch import load_file
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from data_engine.weights import spec
from model.text import MAX_PROMPT_TOKENS, train_tiny_spiece
from model.tiny import build_tiny_vae

# Sizes shared with the official fixture, so that its DiT runs on this release's VAE latents and T5 output.
LATENT_CHANNELS = 16
TEXT_WIDTH = 32
EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0..99>, after the SentencePiece pieces
# The official checkpoints the fixture holds a forward of: fixture run name -> hub folder of zjuJish/LayerFlow.
OFFICIAL = {"gen": "multi-layer-generation-rgba", "fg2bg": "foreground-conditioned-generation-rgba"}
LAYERFLOW_DIR = spec("layerflow").subdir
SAT_ITERATION = 1000
SAT_PREFIX = "model.diffusion_model."
T5_PREFIX = "conditioner.embedders.0.transformer."
REPO = Path(__file__).resolve().parents[2]


def build(root: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        pipe = build_cogvideox(root / spec("cogvideox-2b").subdir)
    fixture = sat_tiny_dir()
    if fixture is not None:
        for run, hub_folder in OFFICIAL.items():
            dit = load_file(str(fixture / f"{run}_state_dict.safetensors"))
            write_sat_checkpoint(root / LAYERFLOW_DIR / hub_folder, dit, pipe.text_encoder.state_dict())


def sat_tiny_dir() -> Path | None:
    """The official-code fixture, found as tests/conftest.py finds ../shared."""
    folder = Path(os.environ.get("LAYERFLOW_SHARED", REPO.parent / "shared")) / "reference" / "sat_tiny"
    return folder if (folder / "fixture.json").is_file() else None


# ---- THUDM/CogVideoX-2b ------------------------------------------------------------------------------------
def build_cogvideox(folder: Path) -> CogVideoXPipeline:
    spiece = train_tiny_spiece()
    write_tokenizer(folder / "tokenizer", spiece)
    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer")
    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=tiny_t5(len(tokenizer)), vae=tiny_vae(),
                             transformer=tiny_transformer(), scheduler=release_scheduler())
    pipe.save_config(folder)  # model_index.json
    pipe.transformer.save_pretrained(folder / "transformer")
    pipe.vae.save_pretrained(folder / "vae")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    write_sharded_t5(folder / "text_encoder", pipe.text_encoder)
    return pipe


# The 2B release is float16 throughout (the convert script run with --fp16), hence `.half()` below.
def tiny_transformer() -> CogVideoXTransformer3DModel:
    torch.manual_seed(1)
    # The release's config with the sizes shrunk; six layers keep stage 1's "every 6th block" rule meaningful.
    model = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=16, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        time_embed_dim=32, text_embed_dim=TEXT_WIDTH, num_layers=6, sample_width=12, sample_height=8,
        sample_frames=49, max_text_seq_length=MAX_PROMPT_TOKENS,
    )
    return model.half().eval()


def tiny_vae() -> AutoencoderKLCogVideoX:
    return build_tiny_vae(LATENT_CHANNELS, seed=2).half()


def tiny_t5(tokens: int) -> T5EncoderModel:
    """t5-v1_1-xxl's configuration (gated GELU, untied, dropout 0.1, vocabulary padded to a multiple of 128)
    at a tiny width."""
    config = T5Config(
        vocab_size=-(-tokens // 128) * 128, d_model=TEXT_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.1, tie_word_embeddings=False, is_encoder_decoder=True,
    )
    torch.manual_seed(3)
    return T5EncoderModel(config).half().eval()


def release_scheduler() -> CogVideoXDDIMScheduler:
    """The scheduler config the 2B release ships (the convert script's, verbatim values)."""
    return CogVideoXDDIMScheduler.from_config({
        "snr_shift_scale": 3.0, "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True, "set_alpha_to_one": True, "timestep_spacing": "trailing",
    })


def write_sharded_t5(folder: Path, model: T5EncoderModel) -> None:
    """Two shards and their index, as the ~9.5 GB release is split by a 5 GB shard limit."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(folder, max_shard_size=total * 3 // 5)
    # As transformers 4.4x wrote the release's config: the dtype under torch_dtype (current versions: dtype), and
    # t5-v1_1's untied flag (current versions write true for an encoder).
    config = json.loads((folder / "config.json").read_text())
    config["torch_dtype"] = config.pop("dtype", "float16")
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def write_tokenizer(folder: Path, spiece: bytes) -> None:
    """The files transformers 4.4x's slow T5Tokenizer(model_max_length=226).save_pretrained wrote: current
    transformers writes tokenizer.json instead, which the release does not have."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(spiece)
    pieces = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    extra = {f"<extra_id_{i}>": pieces + EXTRA_IDS - 1 - i for i in range(EXTRA_IDS)}
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    token = lambda content: {"content": content, "lstrip": False, "normalized": False, "rstrip": False,  # noqa: E731
                             "single_word": False, "special": True}
    decoder = {"0": token("<pad>"), "1": token("</s>"), "2": token("<unk>")}
    decoder.update({str(i): token(name) for name, i in sorted(extra.items(), key=lambda kv: kv[1])})
    _write_json(folder / "added_tokens.json", extra)
    _write_json(folder / "special_tokens_map.json", {"additional_special_tokens": list(extra),
                                                    **{k: token(v) for k, v in specials.items()}})
    _write_json(folder / "tokenizer_config.json", {
        "added_tokens_decoder": decoder, "additional_special_tokens": list(extra),
        "clean_up_tokenization_spaces": True, "extra_ids": EXTRA_IDS, "legacy": True,
        "model_max_length": MAX_PROMPT_TOKENS, "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer", **specials,
    })


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


# ---- zjuJish/LayerFlow (SAT / DeepSpeed) --------------------------------------------------------------------
def write_sat_checkpoint(folder: Path, dit: dict[str, torch.Tensor], t5: dict[str, torch.Tensor]) -> None:
    """`<folder>/latest` + `<folder>/1000/mp_rank_00_model_states.pt` as SAT's DeepSpeed training saves them."""
    module = OrderedDict((SAT_PREFIX + k, v) for k, v in dit.items())
    # The engine (SATVideoDiffusionEngine) also holds the frozen T5 conditioner, so its state dict carries it.
    module.update((T5_PREFIX + k, v) for k, v in t5.items())
    trainable = [k for k in module if _trainable(k)]
    frozen = [k for k in module if k not in trainable]
    state = {
        # DeepSpeed's engine._save_checkpoint (ZeRO-2, bf16: no optimizer here; flat fp32 states in other files)
        "module": module,
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [OrderedDict((k, module[k].shape) for k in trainable)],
        "frozen_param_shapes": OrderedDict((k, module[k].shape) for k in frozen),
        "shared_params": {},
        "frozen_param_fragments": OrderedDict((k, module[k].clone()) for k in frozen),
        "lr_scheduler": None,
        "data_sampler": None,
        "random_ltd": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": SAT_ITERATION,
        "global_samples": SAT_ITERATION * 8,
        "dp_world_size": 8,
        "mp_world_size": 1,
        "ds_config": _ds_config(),
        "ds_version": "0.14.4",
        # SAT's save_ds_checkpoint client state
        "iteration": SAT_ITERATION,
        "client_lr_scheduler": {"start_lr": 0.005, "warmup_iter": 100, "num_iters": 100000,
                                "decay_style": "linear", "end_iter": 100000, "decay_ratio": 0.1},
        "random_rng_state": random.Random(0).getstate(),
        "np_rng_state": np.random.RandomState(0).get_state(),
        "torch_rng_state": torch.Generator().manual_seed(0).get_state(),
        "cuda_rng_state": torch.arange(16, dtype=torch.uint8),  # a CUDA generator's (seed, offset) bytes
    }
    path = folder / str(SAT_ITERATION) / "mp_rank_00_model_states.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    (folder / "latest").write_text(str(SAT_ITERATION))


def _trainable(key: str) -> bool:
    """The released stage-2 configs' trainable set: blocks 6k+5 (with their adaLN and q/k norms) and the
    layer-index embedder."""
    if not key.startswith(SAT_PREFIX):
        return False
    parts = key[len(SAT_PREFIX):].split(".")
    if parts[:2] == ["transformer", "layers"]:
        return int(parts[2]) % 6 == 5
    if parts[:2] == ["mixins", "adaln_layer"]:
        return int(parts[3]) % 6 == 5
    return "txt_embedder" in parts


def _ds_config() -> dict:
    """The `deepspeed:` section of the released sft_stage2_*.yaml, as SAT hands it to DeepSpeed."""
    return {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "steps_per_print": 50,
        "gradient_clipping": 0.1,
        "zero_optimization": {"stage": 2, "cpu_offload": False, "contiguous_gradients": False, "overlap_comm": True,
                              "reduce_scatter": True, "reduce_bucket_size": 1000000000,
                              "allgather_bucket_size": 1000000000, "load_from_fp32_weights": False},
        "zero_allow_untested_optimizer": True, "bf16": {"enabled": True}, "fp16": {"enabled": False},
        "loss_scale": 0, "loss_scale_window": 400, "hysteresis": 2, "min_loss_scale": 1,
        "optimizer": {"type": "sat.ops.FusedEmaAdam",
                      "params": {"lr": 0.005, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4}},
        "activation_checkpointing": {"partition_activations": False, "contiguous_memory_optimization": False},
        "wall_clock_breakdown": False,
    }
