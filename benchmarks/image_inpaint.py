"""Image-matting importer with the image_inpaint stage, tiny preset, CPU: samples/s.

Writes `--images` photos of `--size` (image/ + alpha/, no bg/: every one is inpainted) and times them through
the rows of infra/configs/engine/image_matting.yaml at the tiny presets (image_inpaint with the config's 25 steps
unless `--steps`, then caption, then encode), in this process on one thread, per stage; with `--engine`, also
through the engine on a local 2-CPU Ray (its processing rate, actor start-up excluded).

    python benchmarks/image_inpaint.py [--images 8] [--size 480x640] [--steps 25] [--engine]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_engine.sources.image_matting import ImageMattingOptions, ImageMattingSource
from data_engine.stages.base import Resources, Row, Stage, is_failed
from data_engine.stages.caption import CaptionStage
from data_engine.stages.encode import EncodeStage
from data_engine.stages.image_inpaint import ImageInpaintStage


def write_photos(root: Path, count: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for sub in ("image", "alpha"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        alpha = np.zeros((h, w), np.uint8)
        alpha[h // 4:3 * h // 4, w // 3:2 * w // 3] = 255  # an object covering a sixth of the photo
        Image.fromarray(image).save(root / "image" / f"{i:03d}.png")
        Image.fromarray(alpha).save(root / "alpha" / f"{i:03d}.png")


def in_process(root: Path, steps: int) -> None:
    torch.set_num_threads(1)
    source = ImageMattingSource(ImageMattingOptions(root=str(root)))
    stages: list[Stage] = [
        ImageInpaintStage(Resources(num_gpus=0), preset="tiny", dtype="float32", steps=steps),
        CaptionStage(Resources(num_gpus=0), preset="tiny", dtype="float32", max_new_tokens=8, min_new_tokens=4),
        EncodeStage(),
    ]
    for stage in stages:
        stage.ensure_setup()
    seconds = {"source": 0.0, **{s.name: 0.0 for s in stages}}
    items = source.list_inputs()
    for item in items:
        clock = time.perf_counter()
        rows: list[Row] = source.rows(item)
        seconds["source"] += time.perf_counter() - clock
        for stage in stages:
            clock = time.perf_counter()
            rows = stage.process_batch(rows)
            seconds[stage.name] += time.perf_counter() - clock
            assert not any(is_failed(r) for r in rows), rows
    total = sum(seconds.values())
    per_stage = ", ".join(f"{name} {s / len(items) * 1e3:.0f} ms" for name, s in seconds.items())
    print(f"in process, 1 thread: {len(items) / total:.3f} samples/s ({per_stage} per sample)")


def through_engine(root: Path, steps: int, out: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from local_engine import run_locally

    from data_engine.defaults import configs_dir
    from data_engine.engine.config import load_config

    tiny = [f"stages.{s}.{k}" for s in ("image_inpaint", "caption")
            for k in ("num_gpus=0", "options.preset=tiny", "options.dtype=float32")]
    cfg = load_config(configs_dir("engine") / "image_matting.yaml", [
        f"sources.0.root={root}", *tiny, f"stages.image_inpaint.options.steps={steps}",
        "stages.caption.options.max_new_tokens=8", "stages.caption.options.min_new_tokens=4", "run.progress=false",
    ], out=str(out))
    engine = run_locally(cfg).stats["engine"]
    print(f"engine, local Ray 2 CPUs: {engine['processing_clips_per_s']} samples/s "
          f"({engine['samples_written']} samples, wall {engine['wall_s']} s with actor start-up)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", default="480x640", help="HxW of the photos")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (image_matting.yaml: 25)")
    p.add_argument("--engine", action="store_true", help="also run them through the engine")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.images, h, w)
        print(f"{args.images} photos of {h}x{w} (image/ + alpha/), tiny presets, {args.steps} steps")
        in_process(root, args.steps)
        if args.engine:
            through_engine(root, args.steps, Path(tmp) / "out")


if __name__ == "__main__":
    main()
