"""Trainer overhead and data throughput, as ratios measured in one run (CPU, tiny model); with --gpu and CUDA,
the full-size stage-2 step (CogVideoX-2B, 64 frames x 480x720, random weights): time, peak memory, MFU.

    python benchmarks/train.py [--steps 6] [--gpu]
"""
from __future__ import annotations

import argparse
import copy
import itertools
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_engine.shards import ShardSink  # noqa: E402
from data_engine.sources.synthetic import SyntheticConfig, synthetic_clip  # noqa: E402
from trainer.components import build_components  # noqa: E402
from trainer.config import DataConfig, ModelConfig  # noqa: E402
from trainer.data import LayerFlowDataModule  # noqa: E402
from trainer.module import LayerFlowModule  # noqa: E402

TINY = ModelConfig(preset="tiny", gradient_checkpointing=False)


class _Fixed(L.LightningDataModule):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def train_dataloader(self):
        return itertools.repeat(self.batch)


def _module(parts, stage: int) -> LayerFlowModule:
    m = LayerFlowModule(stage=stage, network=TINY)
    m.use_components(copy.deepcopy(parts))
    return m


def bare_loop(parts, batch, steps: int) -> float:
    m = _module(parts, 2)
    opt = m.configure_optimizers()["optimizer"]
    start = time.perf_counter()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        m.compute_loss(batch, step).mean().backward()
        torch.nn.utils.clip_grad_norm_(m.trainable_parameters(), 0.1)
        opt.step()
    return (time.perf_counter() - start) / steps


def lightning_loop(parts, batch, steps: int) -> float:
    m = _module(parts, 2)
    times = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *a):
            times.append(time.perf_counter())

    trainer = L.Trainer(accelerator="cpu", max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=0.1,
                        callbacks=[Timer()])
    trainer.fit(m, datamodule=_Fixed(batch))
    end = time.perf_counter()
    return (end - times[1]) / steps  # from the second step: the first includes Lightning's setup


def data_rate(shards: Path, n_batches: int, workers: int) -> float:
    dm = LayerFlowDataModule(DataConfig(shards=str(shards), frames_per_layer=4, height=32, width=48, batch_size=2,
                                        num_workers=workers, shuffle_buffer=8), stage=2)
    loader = iter(dm.loader(0, 0, n_batches + 1))
    next(loader)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(loader)
    return n_batches * 2 / (time.perf_counter() - start)


def gpu_stage2(steps: int) -> None:
    from model.config import get_preset
    from model.transformer import LayerFlowTransformer

    cfg = get_preset("cogvideox-2b")
    device = torch.device("cuda")
    model = LayerFlowTransformer.from_config(cfg).to(device, torch.bfloat16)
    model.enable_gradient_checkpointing()
    for name, p in model.named_parameters():
        p.requires_grad_(".motion_lora." in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-4)
    x = torch.randn(1, 16, 16, 60, 90, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 678, 4096, device=device, dtype=torch.bfloat16)
    t = torch.tensor([500], device=device)
    scale = torch.ones(1, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, text, t, motion_scale=scale).float().square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    n_params = sum(p.numel() for p in model.parameters())
    tokens = cfg.video_tokens + cfg.max_text_seq_length
    hidden, layers = cfg.hidden_size, cfg.num_layers
    # Forward FLOPs: 2 * params * tokens for the linears plus 4 * tokens^2 * hidden per layer for attention;
    # training = forward + recomputed forward (checkpointing) + backward (2x) = 4x forward.
    forward = 2 * n_params * tokens + 4 * tokens**2 * hidden * layers
    achieved = 4 * forward / seconds
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    ref = next((v for k, v in peak.items() if k in name), None)
    print(f"stage-2 step, CogVideoX-2B, 64 frames 480x720 ({tokens} tokens), batch 1, bf16, checkpointing, {name}:")
    print(f"  step time            {seconds:.3f} s")
    print(f"  peak memory          {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"  model FLOP/s         {achieved / 1e12:.1f} TFLOP/s" + (f" (MFU {achieved / ref:.1%} of dense bf16 peak)"
                                                                    if ref else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu: CUDA is not available on this machine")
        gpu_stage2(args.steps)
        return
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp)
        with ShardSink(shards, maxcount=4) as sink:
            for i in range(8):
                sink.write(synthetic_clip(SyntheticConfig(num_frames=8, height=40, width=56), i))
        parts = build_components(TINY)
        dm = LayerFlowDataModule(DataConfig(shards=str(shards), frames_per_layer=4, height=32, width=48,
                                            batch_size=2, num_workers=0), stage=2)
        batch = next(iter(dm.loader(0, 0, 1)))
        bare, lit = [], []
        for _ in range(2):  # interleaved repeats: the machine's load drifts
            bare.append(bare_loop(parts, batch, args.steps))
            lit.append(lightning_loop(parts, batch, args.steps))
        bare_s, lit_s = min(bare), min(lit)
        rate = data_rate(shards, 8, workers=0)
        print(f"tiny model, batch 2, {args.steps} steps, best of 2 interleaved runs (CPU, {torch.get_num_threads()} threads)")
        print(f"  bare PyTorch step     {bare_s * 1e3:.1f} ms")
        print(f"  Lightning step        {lit_s * 1e3:.1f} ms   overhead ratio {lit_s / bare_s:.3f}")
        print(f"  dataloader            {rate:.1f} samples/s (1 process); the step consumes {2 / lit_s:.1f} samples/s"
              f"   supply/demand ratio {rate * lit_s / 2:.2f}")


if __name__ == "__main__":
    main()
