"""Size, cost and speed of the layer-aware transformer.

    python benchmarks/model.py [--repeats 5]      # CPU: figures from the config + a tiny-size speed ratio,
                                                  # and the cost of K = 1, 2, 3 foreground layers
    python benchmarks/model.py --gpu [--steps 3]  # CUDA: full size, random bf16 weights, one CFG step
    python benchmarks/model.py --gpu --pipeline   # CUDA: whole 50-step generation, eager vs optimised

CPU mode builds the real-size (cogvideox-2b) model on the meta device (no memory, no weights) and prints its
parameter count, token count, analytic FLOPs per forward and activation memory per sample; then times our
forward against diffusers' stock CogVideoXTransformer3DModel of the same tiny size, interleaved in one run,
and prints the ratio. GPU mode measures one transformer forward per denoising step for a classifier-free-guided
batch of 2 at 16 latent frames x 60 x 90 + 678 text tokens, and the peak GPU memory. With --pipeline it
times the whole LayerFlowPipeline generation (50 DPM steps, guidance 6, joint VAE decode of the 64 frames, T5
embeddings given) for each SDPA kernel and with regional torch.compile, checks that each variant's latents
match the eager default's, and times a T5-v1.1-XXL encoder of the real size once.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel  # noqa: E402

from model.config import TransformerConfig, get_preset  # noqa: E402
from model.lora import lora_parameters  # noqa: E402
from model.pipeline import LayerFlowPipeline  # noqa: E402
from model.schedule import make_scheduler  # noqa: E402
from model.transformer import LayerFlowTransformer, _diffusers_kwargs  # noqa: E402

# Bytes a CogVideoXBlock keeps for backward per token and hidden unit, counting the tensors autograd saves
# (16-bit, fused SDPA so no N x N matrix; N tokens, D hidden, in units of N*D elements):
#   norm1: LayerNorm input + normalised input (for the modulation)           2
#   attention: projection input 1, q/k before their LayerNorms 2, SDPA q/k/v/out 4,
#              output-projection input 1, attention output (for the gate) 1  9
#   norm2: as norm1                                                           2
#   MLP: input 1, 4D pre-GELU 4, 4D post-GELU 4, output (for the gate) 1      10
# = 23 elements = 46 bytes. (Korthikanti et al. 2022 count 34 for a GPT layer with dropout and no adaLN.)
BLOCK_BYTES_PER_TOKEN_UNIT = 46


def analytic(cfg: TransformerConfig, frames: int, batch: int = 1) -> dict[str, float]:
    per_frame = (cfg.sample_height // cfg.patch_size) * (cfg.sample_width // cfg.patch_size)
    video, text = frames * per_frame, cfg.max_text_seq_length
    n, d = video + text, cfg.hidden_size
    # Per block: q, k, v, out projections 4 * 2ND^2; MLP (4D inner) 16ND^2; QK^T and AV 4N^2D.
    block = 24 * n * d * d + 4 * n * n * d
    lora_rank = cfg.content_rank  # motion LoRA is off at inference
    lora = len(cfg.lora_block_indices()) * 4 * (2 * n * d * lora_rank * 2)
    embed = 2 * video * cfg.in_channels * cfg.patch_size**2 * d + 2 * text * cfg.text_embed_dim * d
    head = 2 * video * d * cfg.out_channels * cfg.patch_size**2
    flops = batch * (cfg.num_layers * block + lora + embed + head)
    block_bytes = BLOCK_BYTES_PER_TOKEN_UNIT * n * d
    # Checkpointing each block keeps only its input (video and text states, N*D elements of 2 bytes) and
    # recomputes one block at a time in backward, so the peak adds one block's activations.
    ckpt_saved = cfg.num_layers * 2 * n * d
    return {"video_tokens": video, "text_tokens": text, "flops": flops,
            "act_bytes": cfg.num_layers * block_bytes, "act_ckpt_bytes": ckpt_saved + block_bytes,
            "act_ckpt_saved_bytes": ckpt_saved}


def cpu_ratio(repeats: int) -> tuple[float, float, float]:
    """Median seconds of stock diffusers and of ours (tiny size, same text length), interleaved."""
    cfg = get_preset("tiny").replace(sample_height=4, sample_width=6, sample_frames=4)
    torch.manual_seed(0)
    stock = CogVideoXTransformer3DModel(**_diffusers_kwargs(cfg)).eval()
    ours = LayerFlowTransformer.from_config(cfg).eval()
    ours.load_state_dict(stock.state_dict(), strict=False)
    x = torch.randn(2, cfg.sample_frames, cfg.in_channels, cfg.sample_height, cfg.sample_width)
    text = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim)
    t = torch.tensor([500.0, 20.0])
    runs = {"stock": lambda: stock(x, text, t, return_dict=False), "ours": lambda: ours(x, text, t)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    a, b = statistics.median(times["stock"]), statistics.median(times["ours"])
    return a, b, b / a


def cpu_report(repeats: int) -> Table:
    cfg = get_preset("cogvideox-2b")
    with torch.device("meta"):
        model = LayerFlowTransformer.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for _, p in lora_parameters(model))
    extra = sum(p.numel() for p in model.layer_embedder.parameters())
    figures = analytic(cfg, cfg.sample_frames)
    stock_s, ours_s, ratio = cpu_ratio(repeats)
    table = Table(title="layer-aware CogVideoX-2B transformer (per sample, one forward)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters (total)", f"{total / 1e9:.3f} B")
    table.add_row("  of which dual LoRA (blocks 5, 11, 17, 23, 29)", f"{lora / 1e6:.1f} M")
    table.add_row("  of which layer-index embedder", f"{extra / 1e3:.1f} K")
    table.add_row("  base CogVideoX-2B", f"{(total - lora - extra) / 1e9:.3f} B")
    table.add_row("tokens (video + text)", f"{figures['video_tokens']:,} + {figures['text_tokens']:,}")
    table.add_row("FLOPs per forward (analytic)", f"{figures['flops'] / 1e12:.1f} TFLOP")
    table.add_row("activations, no checkpointing (bf16, est.)", f"{figures['act_bytes'] / 2**30:.1f} GiB")
    table.add_row("activations, block checkpointing: kept + one block (est.)",
                  f"{figures['act_ckpt_saved_bytes'] / 2**30:.2f} + "
                  f"{(figures['act_ckpt_bytes'] - figures['act_ckpt_saved_bytes']) / 2**30:.2f} GiB")
    table.add_row(f"CPU forward, tiny size: stock diffusers (median of {repeats})", f"{stock_s * 1e3:.1f} ms")
    table.add_row("CPU forward, tiny size: ours", f"{ours_s * 1e3:.1f} ms")
    table.add_row("ratio ours / stock", f"{ratio:.3f}")
    return table


def foregrounds_report(counts: tuple[int, ...] = (1, 2, 3)) -> Table:
    """The cost of K foreground layers at the real size: 2K + 2 sub-clips of 4 latent frames (K fg + K alpha, bg,
    blend) and K + 2 prompts of 226 tokens; K = 1 is the official layout, the main table's figures."""
    cfg = get_preset("cogvideox-2b")
    per_layer = cfg.sample_frames // 4
    table = Table(title="K foreground layers at the real size (per sample, one forward, analytic)")
    for column in ("K", "sub-clips", "tokens (video + text)", "TFLOP", "activations (bf16)",
                   "with block checkpointing"):
        table.add_column(column, justify="right")
    for k in counts:
        layers = 2 * k + 2
        figures = analytic(cfg.replace(num_prompts=k + 2), layers * per_layer)
        table.add_row(str(k), str(layers), f"{figures['video_tokens']:,} + {figures['text_tokens']:,}",
                      f"{figures['flops'] / 1e12:.1f}", f"{figures['act_bytes'] / 2**30:.1f} GiB",
                      f"{figures['act_ckpt_bytes'] / 2**30:.2f} GiB")
    return table


def gpu_report(steps: int) -> Table:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA; run without --gpu for the CPU figures")
    cfg = get_preset("cogvideox-2b")
    device = torch.device("cuda")
    with device:
        model = LayerFlowTransformer.from_config(cfg).to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    weights = torch.cuda.memory_allocated()
    x = torch.randn(2, cfg.sample_frames, cfg.in_channels, cfg.sample_height, cfg.sample_width, device=device,
                    dtype=torch.bfloat16)
    text = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim, device=device, dtype=torch.bfloat16)
    text[0] = 0  # the unconditional branch: all-zero T5 embeddings
    t = torch.full((2,), 500.0, device=device)
    times = []
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model(x, text, t)
        for _ in range(steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(x, text, t)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    infer_peak = torch.cuda.max_memory_allocated()
    figures = analytic(cfg, cfg.sample_frames, batch=2)
    # One training step of one sample (all weights trainable), to check the activation estimates: memory
    # held after the forward (saved activations) and the step's peak above the weights (grads included).
    saved, peak = {}, {}
    model.train()
    for ckpt in (True, False):
        model.enable_gradient_checkpointing() if ckpt else model.disable_gradient_checkpointing()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss = model(x[1:], text[1:], t[1:], motion_scale=torch.ones(1, device=device)).float().square().mean()
        torch.cuda.synchronize()
        saved[ckpt] = torch.cuda.memory_allocated() - base
        loss.backward()
        torch.cuda.synchronize()
        peak[ckpt] = torch.cuda.max_memory_allocated() - base
        model.zero_grad(set_to_none=True)
        del loss
    flops = figures["flops"]
    table = Table(title=f"GPU: {torch.cuda.get_device_name()} (bf16, CFG batch 2, 16x60x90 latents + 678 text)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("weights in GPU memory", f"{weights / 2**30:.2f} GiB")
    table.add_row(f"transformer forward per step (median of {steps})", f"{step * 1e3:.0f} ms")
    table.add_row("achieved throughput", f"{flops / step / 1e12:.0f} TFLOP/s")
    table.add_row("peak GPU memory, inference step", f"{infer_peak / 2**30:.2f} GiB")
    table.add_row("50-step sampling, transformer only", f"{50 * step:.0f} s")
    one = analytic(cfg, cfg.sample_frames)
    table.add_row("train, ckpt: kept after fwd, measured / est.",
                  f"{saved[True] / 2**30:.2f} / {one['act_ckpt_saved_bytes'] / 2**30:.2f} GiB")
    table.add_row("train, no ckpt: kept after fwd, measured / est.",
                  f"{saved[False] / 2**30:.1f} / {one['act_bytes'] / 2**30:.1f} GiB")
    table.add_row("train step peak over weights, ckpt / no ckpt",
                  f"{peak[True] / 2**30:.1f} / {peak[False] / 2**30:.1f} GiB")
    return table


def _timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def full_size_pipeline(device: torch.device) -> LayerFlowPipeline:
    """CogVideoX-2B-sized transformer and VAE (diffusers' AutoencoderKLCogVideoX defaults are the 2B VAE's
    config), random bf16 weights; no text encoder, prompt embeddings are given."""
    torch.manual_seed(0)
    with device:
        transformer = LayerFlowTransformer.from_config(get_preset("cogvideox-2b")).to(torch.bfloat16).eval()
        vae = AutoencoderKLCogVideoX().to(torch.bfloat16).eval()
    pipe = LayerFlowPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                             scheduler=make_scheduler("dpm"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def t5_xxl_seconds(device: torch.device, repeats: int = 5) -> tuple[float, int]:
    """Median seconds to encode the 3 prompts (3 x 226 tokens) with a random-weight T5-v1.1-XXL encoder."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            t5 = T5EncoderModel(config).eval()
    finally:
        torch.set_default_dtype(default)
    ids = torch.randint(0, 32000, (3, 226), device=device)
    times = []
    with torch.no_grad():
        t5(input_ids=ids)
        for _ in range(repeats):
            # partial holds the encoder itself: a lambda would look `t5` up after the `del` below
            times.append(_timed(functools.partial(t5, input_ids=ids))[1])
    params = sum(p.numel() for p in t5.parameters())
    del t5
    torch.cuda.empty_cache()
    return statistics.median(times), params


def pipeline_report(check_steps: int, attention: list[str], compile_modes: list[str], vae_tiling: bool) -> Table:
    """Whole-generation time per variant; every variant's `check_steps`-step latents against the eager default's."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu --pipeline needs CUDA; run without --gpu for the CPU figures")
    device = torch.device("cuda")
    pipe = full_size_pipeline(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    embeds = torch.randn(1, 678, 4096, device=device, dtype=torch.bfloat16,
                         generator=torch.Generator(device).manual_seed(1))

    def generate(steps: int, output_type: str):
        return pipe(prompt_embeds=embeds, num_inference_steps=steps, guidance_scale=6.0, output_type=output_type,
                    generator=torch.Generator(device).manual_seed(0))

    table = Table(title=f"GPU: {torch.cuda.get_device_name()}: 50-step generation, 480x720, 16 frames per layer "
                        f"(64 frames), CFG 6 (batch 2), DPM, bf16, VAE tiling {'on' if vae_tiling else 'off'}, "
                        "T5 embeddings given")
    for column in ("variant", "latents vs eager default (rel. L2)", "50 steps + decode", "of which decode",
                   "peak GPU memory"):
        table.add_column(column, justify="right")
    variants = [("eager, PyTorch's SDPA choice", None, False)]
    variants += [(f"eager, SDPA {name}", [name], False) for name in attention]
    variants += [(f"compiled blocks ({mode}), PyTorch's SDPA choice", None, mode) for mode in compile_modes]
    reference = None
    for label, backends, compile_mode in variants:
        pipe.transformer.set_attention_backends(backends)
        if compile_mode:
            torch._dynamo.reset()
            pipe.transformer.compile_repeated_blocks(mode=compile_mode)
        # Warm-up: kernels, cuBLAS/cuDNN plans and, when compiled, the graphs themselves.
        _, warm = _timed(lambda: generate(2, "latent"))
        check = generate(check_steps, "latent").latents.float()
        if reference is None:
            reference = check
        rel = ((check - reference).norm() / reference.norm()).item()
        torch.cuda.reset_peak_memory_stats()
        out, total = _timed(lambda: generate(50, "clip"))
        peak = torch.cuda.max_memory_allocated()
        _, decode = _timed(functools.partial(pipe.decode_latents, out.latents))
        finite = bool(torch.isfinite(out.latents).all())
        table.add_row(label, f"{rel:.2e}", f"{total:.1f} s", f"{decode:.1f} s", f"{peak / 2**30:.1f} GiB")
        print(f"{label}: warm-up {warm:.1f} s, rel {rel:.3e}, total {total:.2f} s, decode {decode:.2f} s, "
              f"peak {peak / 2**30:.2f} GiB, clips {len(out.clips)} latents finite {finite}", flush=True)
        if vae_tiling and label == variants[0][0]:  # the decoder does not depend on the variant: once
            pipe.vae.disable_tiling()
            torch.cuda.reset_peak_memory_stats()
            _, untiled = _timed(functools.partial(pipe.decode_latents, out.latents))
            untiled_peak = torch.cuda.max_memory_allocated()
            pipe.vae.enable_tiling()
            table.add_row("VAE decode without tiling", "", "", f"{untiled:.1f} s", f"{untiled_peak / 2**30:.1f} GiB")
            print(f"untiled decode {untiled:.2f} s, peak {untiled_peak / 2**30:.2f} GiB", flush=True)
    t5_s, t5_params = t5_xxl_seconds(device)
    print(f"T5-XXL {t5_s * 1e3:.1f} ms", flush=True)
    table.add_row(f"T5-v1.1-XXL encoder ({t5_params / 1e9:.2f} B params), 3 prompts x 226 tokens", "",
                  f"{t5_s * 1e3:.0f} ms", "", "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="interleaved CPU repeats")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps a shared machine's noise low)")
    parser.add_argument("--gpu", action="store_true", help="full-size timing and memory on CUDA")
    parser.add_argument("--steps", type=int, default=3, help="timed GPU steps after one warm-up")
    parser.add_argument("--pipeline", action="store_true", help="with --gpu: whole 50-step generation per variant")
    parser.add_argument("--check-steps", type=int, default=5, help="steps whose latents each variant must match")
    parser.add_argument("--attention", default="flash,cudnn", help="SDPA kernels to time, comma-separated")
    parser.add_argument("--no-vae-tiling", action="store_true", help="decode the 64 frames in one untiled pass")
    parser.add_argument("--compile-modes", default="default",
                        help="torch.compile modes for the blocks, comma-separated, each timed in turn; '' skips")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gpu and args.pipeline:
        modes = [m for m in args.compile_modes.split(",") if m]
        table = pipeline_report(args.check_steps, [a for a in args.attention.split(",") if a], modes,
                               not args.no_vae_tiling)
    else:
        table = gpu_report(args.steps) if args.gpu else cpu_report(args.repeats)
    Console().print(table)
    if not args.gpu:
        Console().print(foregrounds_report())


if __name__ == "__main__":
    main()
