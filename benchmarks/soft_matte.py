"""Soft vs binary mattes from SAM 2 mask logits: alpha error at a known soft edge.

    python benchmarks/soft_matte.py [--frames 8] [--height 480] [--width 720] [--temperatures 0.5 1 2 4]

What is measured is the segment stage's conversion, not a model: the tiny models' random logits mean nothing and
the SAM 2.1 checkpoint is not available offline, so the logits are those a calibrated model would give. The clip:
a disc (radius 90 px) moving by sub-pixel steps, whose alpha falls off linearly over `ramp` px at its edge. Its
logit field at SAM 2's mask resolution (the frame stretched to 1024 x 1024, masks at 256 x 256): the true alpha
averaged over each 256-grid cell (an antialiased resize, as SAM 2 resizes its own mask inputs), as a logit
clipped to +-10 (SAM 2's own confident level), times `gain` (1: calibrated; 4: four times overconfident, as
models trained on binary masks tend to be), plus Gaussian noise of std `noise` logits per cell (uncertainty). That
field goes through the stage's own code, `segment_track.sam2_mattes` with a `Sam2VideoProcessor` of SAM 2.1's
sizes: `post_process_masks` (bilinear upsampling to 480 x 720, unthresholded), then the binary mask
(logit > 0) and the soft alpha 255 * sigmoid(logit / T) for each temperature T.

Printed: the mean absolute alpha error (alpha in 0..1) in the edge band (0 < true alpha < 1) and over the object
(pixels within 8 px of any alpha > 0), for the best binary mask there is (true alpha > 0.5 at full resolution),
the binary mask from the logits, and the soft alpha at each temperature. The background does not enter: the
conversion never sees pixels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_engine.stages.segment_track import SegmentOptions, sam2_mattes  # noqa: E402

SAM2_IMAGE, SAM2_MASK = 1024, 256  # SAM 2.1's input size and mask-logit size (Sam2ImageProcessor defaults)
LOGIT_CLIP = 10.0  # SAM 2 writes a given mask as logits +-10 (sigmoid(10) = 1 - 4.5e-5)
RADIUS, MARGIN = 90.0, 8


def sam2_processor():
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    size = {"height": SAM2_IMAGE, "width": SAM2_IMAGE}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size={"height": SAM2_MASK, "width": SAM2_MASK}),
        video_processor=Sam2VideoVideoProcessor(size=size))


def soft_disc(frames: int, height: int, width: int, ramp: float) -> tuple[np.ndarray, np.ndarray]:
    """True alpha float64 [T, H, W] of a disc with a linear ramp `ramp` px wide centred on its radius, and the
    distance of each pixel to the disc's centre."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    centres = [(width * 0.4 + 7.37 * t, height * 0.5 + 3.13 * t) for t in range(frames)]  # sub-pixel motion
    dist = np.stack([np.hypot(xx - cx, yy - cy) for cx, cy in centres])
    return np.clip((RADIUS + ramp / 2 - dist) / ramp, 0.0, 1.0), dist


def logit_field(alpha: np.ndarray, gain: float, noise: float, rng: np.random.Generator):
    """The low-resolution logits [T, 1, 256, 256] (torch) a model with this gain and noise would give."""
    import torch
    import torch.nn.functional as F

    cells = F.interpolate(torch.from_numpy(alpha)[:, None], (SAM2_MASK, SAM2_MASK), mode="bilinear",
                          antialias=True, align_corners=False).double().clamp(0, 1)
    logits = torch.logit(cells, eps=1e-12).clamp(-LOGIT_CLIP, LOGIT_CLIP) * gain
    logits += torch.from_numpy(rng.normal(0.0, noise, logits.shape)) if noise else 0.0
    return logits.float()


def errors(estimate: np.ndarray, alpha: np.ndarray, band: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    err = np.abs(estimate - alpha)
    return float(err[band].mean()), float(err[region].mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--ramps", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    start = time.perf_counter()
    processor = sam2_processor()
    size = (args.height, args.width)
    cols = ["best binary", "binary", *(f"soft T={t:g}" for t in args.temperatures)]
    rows: list[tuple[str, list[tuple[float, float]]]] = []
    for ramp in args.ramps:
        alpha, dist = soft_disc(args.frames, *size, ramp)
        band = (alpha > 0) & (alpha < 1)
        region = dist <= RADIUS + ramp / 2 + MARGIN
        for gain in args.gains:
            for noise in args.noise:
                low_res = logit_field(alpha, gain, noise, np.random.default_rng(args.seed))
                found = [errors((alpha > 0.5).astype(np.float64), alpha, band, region)]
                binary = None
                for t in args.temperatures:
                    opts = SegmentOptions(preset="tiny", soft_alpha=True, temperature=t)
                    mattes = sam2_mattes(processor, low_res, size, opts)
                    if binary is None:  # the mask does not depend on the temperature
                        binary = np.stack([m.mask for m in mattes]).astype(np.float64)
                        found.append(errors(binary, alpha, band, region))
                    soft = np.stack([m.alpha for m in mattes]).astype(np.float64) / 255
                    found.append(errors(soft, alpha, band, region))
                rows.append((f"ramp {ramp:g} px, gain {gain:g}, noise {noise:g}", found))

    print(f"soft vs binary mattes: {args.frames} frames of {args.height} x {args.width}, disc r={RADIUS:g} px, "
          f"SAM 2 logits at {SAM2_MASK} x {SAM2_MASK}; mean |alpha error| (alpha in 0..1)")
    for which, title in ((0, "edge band (0 < alpha < 1)"), (1, f"object (within {MARGIN} px of alpha > 0)")):
        print(f"\n{title}")
        width = max(len(r[0]) for r in rows)
        print(f"| {'clip / logits':<{width}} | " + " | ".join(f"{c:>11}" for c in cols) + " |")
        print(f"|{'-' * (width + 2)}|" + "|".join("-" * 13 for _ in cols) + "|")
        for label, found in rows:
            print(f"| {label:<{width}} | " + " | ".join(f"{f[which]:>11.3f}" for f in found) + " |")
    print(f"\n{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
