"""Evaluation cost: seconds per video per metric (tiny random-init models, CPU) and the full-size estimate
(per-frame FLOPs of each real backbone x the frames VBench feeds it).

    python benchmarks/eval.py [--frames 16] [--size 128] [--repeats 2] [--no-flops]

FLOPs are counted by torch's FlopCounterMode on one forward of the real architecture (random weights):
CLIP ViT-L/14 and ViT-B/32 and DINO ViT-B/16 per frame, ViCLIP per 8-frame clip, RAFT per 480x720 pair.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.suite import METRICS, SuiteConfig, build_suite  # noqa: E402


def time_metrics(frames: int, size: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    suite = build_suite(SuiteConfig(preset="tiny"))
    out = {}
    for name, metric in suite.items():
        metric.score_video(video[:2], fps=8.0, prompt="warm-up")
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            metric.score_video(video, fps=8.0, prompt="a dog runs on a beach")
            runs.append(time.perf_counter() - t)
        out[name] = statistics.median(runs)
    return out


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def full_size_flops(frames: int) -> dict[str, tuple[float, str]]:
    """GFLOPs per 480x720 video of `frames` frames, with how it was composed."""
    from evaluation.frames import dino_preprocess
    from evaluation.models.clip import CLIP_B32, CLIP_L14, build_clip
    from evaluation.models.dino import build_dino
    from evaluation.models.raft import build_raft
    from evaluation.models.viclip import build_viclip

    x224 = torch.zeros(1, 3, 224, 224)
    dino_in = dino_preprocess(np.zeros((1, 480, 720, 3), np.uint8))
    l14 = flops(lambda: build_clip(CLIP_L14).encode_image(x224)) / 1e9
    b32 = flops(lambda: build_clip(CLIP_B32).encode_image(x224)) / 1e9
    dino = flops(lambda: build_dino()(dino_in)) / 1e9
    viclip = flops(lambda: build_viclip().encode_video(torch.zeros(1, 8, 3, 224, 224))) / 1e9
    pair = torch.zeros(1, 3, 480, 720)
    raft = flops(lambda: build_raft()(pair, pair, num_flow_updates=20)) / 1e9
    return {
        "aesthetic": (l14 * frames, f"CLIP L/14 {l14:.1f} x {frames} frames"),
        "frame_consistency (clip)": (b32 * frames, f"CLIP B/32 {b32:.1f} x {frames} frames"),
        "frame_consistency (dino)": (dino * frames, f"DINO B/16 @224x336 {dino:.1f} x {frames} frames"),
        "text_alignment (viclip)": (viclip, f"ViCLIP 8-frame clip {viclip:.1f}"),
        "text_alignment (clip-fallback)": (l14 * 8, f"CLIP L/14 {l14:.1f} x 8 frames"),
        "dynamic_degree": (raft * (frames - 1), f"RAFT 480x720 pair {raft:.1f} x {frames - 1} pairs (8 fps)"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="tiny-run frame size (RAFT needs >= 128)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-flops", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    secs = time_metrics(a.frames, a.size, a.repeats)
    print(f"\ntiny preset, {a.frames} x {a.size} x {a.size} video, median of {a.repeats}:")
    print(f"{'metric':<20} {'s / video':>10}")
    for name in METRICS:
        print(f"{name:<20} {secs[name]:>10.3f}")
    if not a.no_flops:
        print(f"\nfull-size estimate, one 480x720 video of {a.frames} frames:")
        print(f"{'metric':<32} {'GFLOPs':>9}  composition")
        for name, (g, how) in full_size_flops(a.frames).items():
            print(f"{name:<32} {g:>9.1f}  {how}")


if __name__ == "__main__":
    main()
