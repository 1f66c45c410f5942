"""Perception chain figures: per-stage time per clip with the tiny preset on CPU, and the full-size per-stage GPU
memory estimate (parameters x dtype, from the real architectures built on the meta device, plus an activation
estimate per stage). Prints two tables.

    python benchmarks/perception.py [--frames 8] [--size 128] [--repeats 2] [--gpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from data_engine.sources.synthetic import SyntheticConfig, synthetic_clip
from data_engine.stages.base import Resources
from data_engine.stages.caption import CaptionStage
from data_engine.stages.compose import ComposeStage
from data_engine.stages.dedup import DedupStage
from data_engine.stages.foreground_check import ForegroundCheckStage
from data_engine.stages.inpaint import InpaintStage
from data_engine.stages.segment_track import SegmentTrackStage
from data_engine.stages.tagging import TagStage

GIB = 1024**3
# Activation / working-set estimates for one actor at the full config's working size, with their basis.
ACTIVATIONS_GIB = {
    "tag": (0.5, "ViT-L/14 on 3 keyframes at 224 px + 4585 cached text embeddings"),
    "segment": (3.0, "SAM ViT-H image encoder at 1024^2 + SAM 2 session features for 16 frames x 8 objects"),
    "fg_check": (2.0, "Qwen2.5-VL prefill of 3 images (~1k visual tokens) + KV cache"),
    "inpaint": (8.0, "ProPainter README: ~8 GB fp16 for 80 frames at 720x480 (one window)"),
    "caption": (3.0, "Qwen2.5-VL prefill of a 16-frame video (~4k visual tokens) + 120-token KV cache"),
}


def param_bytes(build, dtype_bytes: int) -> int:
    try:
        with torch.device("meta"):
            modules = build()
    except NotImplementedError:  # ProPainter computes index buffers at init; it is small enough to build on CPU
        modules = build()
    modules = modules if isinstance(modules, tuple) else (modules,)
    return sum(p.numel() for m in modules for p in m.parameters()) * dtype_bytes


def full_size_models() -> dict[str, list[tuple[str, object, int]]]:
    import open_clip
    from pytorchcv.models.propainter import propainter
    from pytorchcv.models.propainter_rfc import propainter_rfc
    from pytorchcv.models.raft import raft_things
    from segment_anything import sam_model_registry
    from transformers import (GroundingDinoConfig, GroundingDinoForObjectDetection, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Sam2VideoConfig, Sam2VideoModel)

    sam2_large = Sam2VideoConfig(vision_config=dict(
        model_type="sam2_vision_model", backbone_channel_list=[1152, 576, 288, 144],
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=144, blocks_per_stage=[2, 6, 36, 4],
                             embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                             window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43])))
    gdino_base = GroundingDinoConfig(backbone_config=dict(
        model_type="swin", embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
        image_size=384, out_indices=[2, 3, 4]))
    qwen_7b = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4,
                         rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584))
    qwen = ("Qwen2.5-VL-7B (bf16)", lambda: Qwen2_5_VLForConditionalGeneration(qwen_7b), 2)
    return {
        "tag": [("CLIP ViT-L/14 (fp32)", lambda: open_clip.create_model("ViT-L-14-quickgelu", device="meta"), 4)],
        "segment": [("Grounding DINO-B (fp32)", lambda: GroundingDinoForObjectDetection(gdino_base), 4),
                    ("SAM ViT-H (fp32)", lambda: sam_model_registry["vit_h"](), 4),
                    ("SAM 2.1 Hiera-L (fp32)", lambda: Sam2VideoModel(sam2_large), 4)],
        "fg_check": [qwen],
        "inpaint": [("RAFT + RFC + ProPainter (fp32)",
                     lambda: (raft_things(in_normalize=False, iters=20), propainter_rfc(), propainter()), 4)],
        "caption": [qwen],
    }


def memory_table() -> None:
    print("\nFull-size GPU memory estimate per stage actor (parameters from the real architectures on the meta device)")
    print(f"{'stage':<10}{'models':<62}{'params GiB':>11}{'act GiB':>9}{'total':>8}")
    grand = 0.0
    for stage, models in full_size_models().items():
        weights = sum(param_bytes(build, nbytes) for _, build, nbytes in models) / GIB
        act, _ = ACTIVATIONS_GIB[stage]
        grand += weights + act
        names = ", ".join(n for n, _, _ in models)
        print(f"{stage:<10}{names:<62}{weights:>11.2f}{act:>9.1f}{weights + act:>8.1f}")
    print(f"{'all':<72}{'':>11}{'':>9}{grand:>8.1f}  (one actor per stage; fits one 80 GB GPU)")
    for stage, (_, basis) in ACTIVATIONS_GIB.items():
        print(f"  activations {stage}: {basis}")


def timing_table(frames: int, size: int, repeats: int, gpu: bool) -> None:
    clip = synthetic_clip(SyntheticConfig(num_frames=frames, height=size, width=size), 0)
    res = Resources(num_gpus=1.0 if gpu else 0.0)
    stages = [
        TagStage(res, preset="tiny", num_keyframes=2, top_k=3),
        SegmentTrackStage(res, preset="tiny", sam_gap=4, box_threshold=0.0, text_threshold=0.0, max_objects=1),
        DedupStage(min_area=0.0, max_area=1.0, max_missing=1.0),
        ForegroundCheckStage(res, preset="tiny", num_frames=2, constrain_answer=True, on_reject="keep", dtype="float32"),
        InpaintStage(res, preset="tiny", dilate_px=3),
        ComposeStage(),
        CaptionStage(res, preset="tiny", max_frames=4, max_new_tokens=8, min_new_tokens=8, dtype="float32"),
    ]
    setup, times = {}, {s.name: [] for s in stages}
    for s in stages:
        t0 = time.perf_counter()
        s.ensure_setup()
        setup[s.name] = time.perf_counter() - t0
    for _ in range(repeats):
        rows = [{"key": "bench-00000", "clip_key": "bench-00000", "frames": clip.blend, "fps": 8.0,
                 "frame_range": (0, frames), "scores": {}}]
        for s in stages:
            t0 = time.perf_counter()
            rows = s.process_batch(rows)
            times[s.name].append(time.perf_counter() - t0)
    total = sum(np.median(v) for v in times.values())
    where = f"GPU ({torch.cuda.get_device_name()})" if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"Tiny preset, {where}, one {frames}x{size}x{size} clip, "
          f"median of {repeats}; rows out: {len(rows)}")
    print(f"{'stage':<10}{'setup s':>9}{'s/clip':>9}{'share':>8}")
    for name, v in times.items():
        med = float(np.median(v))
        print(f"{name:<10}{setup[name]:>9.2f}{med:>9.3f}{med / total:>8.0%}")
    print(f"{'total':<10}{sum(setup.values()):>9.2f}{total:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="give every model stage the GPU (needs CUDA)")
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device; none is visible")
    timing_table(args.frames, args.size, args.repeats, args.gpu)
    memory_table()


if __name__ == "__main__":
    main()
