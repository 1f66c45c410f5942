"""Perception chain figures.

Default (CPU): per-stage time per clip and clips/h with the tiny preset; the batched/unbatched throughput of
`fg_check` and `caption` (`generate_batch` N vs 1, interleaved in one run, outputs checked equal); and the full-size
per-stage GPU memory (parameters x dtype from the real architectures built on the meta device, next to what each
stage declares for placement with perception_full.yaml's options).

`--gpu` (needs CUDA): the full preset's real-size architectures with RANDOM weights (no weight files needed), built
on the GPU in the dtype each stage runs them in, and one 16-frame 480x720 synthetic clip timed through every stage's
own `process_batch`. Prints seconds per clip, GPU memory and clips/hour per GPU, per stage and for the chain.

    python benchmarks/perception.py [--frames 8] [--size 128] [--repeats 2] [--clips 4] [--generate-batch 8]
    python benchmarks/perception.py --gpu [--repeats 2] [--objects 1] [--caption-tokens 60]
"""
from __future__ import annotations

import argparse
import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import torch

from data_engine.schema import LayeredClip
from data_engine.stages import caption, foreground_check, inpaint, segment_track
from data_engine.stages import tag as tag_module
from data_engine.stages.base import Resources, Row, Stage, is_failed
from data_engine.stages.caption import CaptionStage
from data_engine.stages.compose import ComposeStage
from data_engine.stages.dedup import DedupStage
from data_engine.stages.foreground_check import ForegroundCheckStage
from data_engine.stages.inpaint import InpaintStage
from data_engine.stages.segment_track import SegmentTrackStage
from data_engine.stages.tag import TagStage
from data_engine.synthetic import SyntheticConfig, synthetic_clip

GIB = 1024**3
FULL_CONFIG = "infra/configs/engine/perception_full.yaml"


def param_bytes(build, dtype_bytes: int) -> int:
    try:
        with torch.device("meta"):
            modules = build()
    except NotImplementedError:  # ProPainter computes index buffers at init; it is small enough to build on CPU
        modules = build()
    modules = modules if isinstance(modules, tuple) else (modules,)
    return sum(p.numel() for m in modules for p in m.parameters()) * dtype_bytes


def sam2_large_config() -> Any:
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig(vision_config=dict(
        model_type="sam2_vision_model", backbone_channel_list=[1152, 576, 288, 144],
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=144, blocks_per_stage=[2, 6, 36, 4],
                             embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                             window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43])))


def gdino_base_config() -> Any:
    from transformers import GroundingDinoConfig

    return GroundingDinoConfig(backbone_config=dict(
        model_type="swin", embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
        image_size=384, out_indices=[2, 3, 4]))


def qwen_7b_config(tokenizer: Any = None) -> Any:
    """Qwen2.5-VL-7B's sizes; with a tokenizer, its special token ids replace the hub tokenizer's."""
    from transformers import Qwen2_5_VLConfig

    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4,
                rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6})
    ids: dict[str, int] = {}
    if tokenizer is not None:
        tid = tokenizer.convert_tokens_to_ids
        text.update(bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|im_end|>"),
                    pad_token_id=tid("<|endoftext|>"))
        ids = dict(image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"),
                   vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"))
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584),
        **ids)


def qwen3_8b_config() -> Any:
    """Qwen3-VL-8B-Instruct's sizes (its config.json), for the `qwen3-vl` backend of fg_check and caption."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         rope_parameters={"rope_type": "default", "mrope_section": [24, 20, 20],
                                          "mrope_interleaved": True, "rope_theta": 5e6}),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                           num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]))


def full_size_models() -> dict[str, list[tuple[str, object, int]]]:
    import open_clip
    from pytorchcv.models.propainter import propainter
    from pytorchcv.models.propainter_rfc import propainter_rfc
    from pytorchcv.models.raft import raft_things
    from segment_anything import sam_model_registry
    from transformers import GroundingDinoForObjectDetection, Qwen2_5_VLForConditionalGeneration, Sam2VideoModel

    qwen = ("Qwen2.5-VL-7B (bf16)", lambda: Qwen2_5_VLForConditionalGeneration(qwen_7b_config()), 2)
    return {
        "tag": [("CLIP ViT-L/14 (fp32)", lambda: open_clip.create_model("ViT-L-14-quickgelu", device="meta"), 4)],
        "segment": [("Grounding DINO-B (fp32)", lambda: GroundingDinoForObjectDetection(gdino_base_config()), 4),
                    ("SAM ViT-H (fp32)", lambda: sam_model_registry["vit_h"](), 4),
                    ("SAM 2.1 Hiera-L (fp32)", lambda: Sam2VideoModel(sam2_large_config()), 4)],
        "fg_check": [qwen],
        "inpaint": [("RAFT + RFC + ProPainter (fp32)",
                     lambda: (raft_things(in_normalize=False, iters=20), propainter_rfc(), propainter()), 4)],
        "caption": [qwen],
    }


def full_config_options() -> dict[str, dict[str, Any]]:
    from data_engine.engine.config import load_config

    return {spec.name: spec.options for spec in load_config(FULL_CONFIG).stages}


def memory_table() -> None:
    from data_engine.stages import stage_class

    options = full_config_options()
    print("\nFull-size GPU memory per stage actor: parameters of the real architectures on the meta device, and what "
          f"the stage declares for placement (weights + working set + CUDA context) with {FULL_CONFIG}'s options")
    print(f"{'stage':<10}{'models':<62}{'params GiB':>11}{'declared GiB':>13}")
    grand = 0.0
    for stage, models in full_size_models().items():
        weights = sum(param_bytes(build, nbytes) for _, build, nbytes in models) / GIB
        cls = stage_class(stage)
        declared = cls.gpu_memory_gib(cls.parse_options(options.get(stage, {})))
        grand += declared
        names = ", ".join(n for n, _, _ in models)
        print(f"{stage:<10}{names:<62}{weights:>11.2f}{declared:>13.1f}")
    print(f"{'all':<72}{'':>11}{grand:>13.1f}  (one actor per stage; `layerflow dataset --dry-run` packs them)")


def timing_table(frames: int, size: int, repeats: int) -> None:
    clip = synthetic_clip(SyntheticConfig(num_frames=frames, height=size, width=size), 0)
    res = Resources(num_gpus=0.0)
    stages = [
        TagStage(res, preset="tiny", num_keyframes=2, top_k=3),
        SegmentTrackStage(res, preset="tiny", sam_gap=4, box_threshold=0.0, text_threshold=0.0, max_objects=1),
        DedupStage(min_area=0.0, max_area=1.0, max_missing=1.0),
        ForegroundCheckStage(res, preset="tiny", num_frames=2, constrain_answer=True, on_reject="keep",
                             dtype="float32"),
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
    print(f"Tiny preset, CPU ({torch.get_num_threads()} threads), one {frames}x{size}x{size} clip, "
          f"median of {repeats}; rows out: {len(rows)}")
    print(f"{'stage':<10}{'setup s':>9}{'s/clip':>9}{'clips/h':>9}{'share':>8}")
    for name, v in times.items():
        med = float(np.median(v))
        print(f"{name:<10}{setup[name]:>9.2f}{med:>9.3f}{3600 / med:>9.0f}{med / total:>8.0%}")
    print(f"{'total':<10}{sum(setup.values()):>9.2f}{total:>9.3f}{3600 / total:>9.0f}")


def vlm_rows(clips: int, frames: int, size: int) -> list[Row]:
    rows = []
    for i in range(clips):
        clip = synthetic_clip(SyntheticConfig(num_frames=frames, height=size, width=size), i)
        rows.append({"key": f"bench-{i:05d}", "frames": clip.blend, "mask": clip.alpha, "bg": clip.bg, "fps": 8.0,
                     "tag": "object", "scores": {}})
    return rows


def vlm_stages(batch: int) -> list[Stage]:
    res = Resources(num_gpus=0.0)
    return [ForegroundCheckStage(res, preset="tiny", num_frames=2, constrain_answer=True, on_reject="keep",
                                 dtype="float32", generate_batch=batch),
            CaptionStage(res, preset="tiny", max_frames=4, max_new_tokens=8, min_new_tokens=8, dtype="float32",
                         keep_existing=False, generate_batch=batch)]


def batching_table(clips: int, frames: int, size: int, repeats: int, batch: int) -> None:
    """fg_check and caption over `clips` clips with generate_batch 1 and `batch`, alternating in one process."""
    variants = {1: vlm_stages(1), batch: vlm_stages(batch)}
    for stages in variants.values():
        for s in stages:
            s.ensure_setup()
    times: dict[tuple[int, str], list[float]] = {(b, s.name): [] for b, stages in variants.items() for s in stages}
    outputs: dict[int, list[Any]] = {}
    for rep in range(repeats):
        for b in (list(variants) if rep % 2 == 0 else list(variants)[::-1]):  # alternate who goes first
            outputs[b] = []
            for s in variants[b]:
                rows = vlm_rows(clips, frames, size)
                t0 = time.perf_counter()
                out = s.process_batch(rows)
                times[(b, s.name)].append(time.perf_counter() - t0)
                outputs[b].append([r.get("captions") or r["scores"].get("fg_check") for r in out])
    same = outputs[1] == outputs[batch]
    print(f"\nBatched VLM stages, tiny preset, CPU ({torch.get_num_threads()} threads): {clips} clips of {frames}x"
          f"{size}x{size} per process_batch, generate_batch {batch} vs 1, median of {repeats} (alternating); "
          f"outputs identical: {'yes' if same else 'NO'}")
    print(f"{'stage':<10}{'prompts':>8}{'1: clips/h':>12}{f'{batch}: clips/h':>13}{'batched/unbatched':>19}")
    totals = {b: 0.0 for b in variants}
    for s in variants[1]:
        prompts = clips * (3 if s.name == "caption" else 1)
        med = {b: float(np.median(times[(b, s.name)])) for b in variants}
        for b in variants:
            totals[b] += med[b]
        print(f"{s.name:<10}{prompts:>8}{3600 * clips / med[1]:>12.0f}{3600 * clips / med[batch]:>13.0f}"
              f"{med[1] / med[batch]:>19.2f}")
    print(f"{'both':<10}{'':>8}{3600 * clips / totals[1]:>12.0f}{3600 * clips / totals[batch]:>13.0f}"
          f"{totals[1] / totals[batch]:>19.2f}")
    if not same:
        raise SystemExit("batched and unbatched outputs differ: greedy batching must not change an answer")


# ---------------------------------------------------------------- --gpu: real-size architectures, random weights

GPU_CLIP = SyntheticConfig(num_frames=16, height=480, width=720)


def real_size_builders(device: str) -> dict[tuple[Any, str], Callable]:
    """Stand-ins for the model builders the stage modules call: the full preset's architectures with random weights,
    built straight on `device`, with the full preset's processor classes at their default (hub) sizes. Tokenizers
    are the tiny preset's in-process ones, so prompts tokenize into more (shorter) tokens than with the hub
    vocabularies; the image/video token counts, which dominate the VLM prompts, are the real ones."""
    from data_engine.stages.models import (
        CLIP_ARCH,
        TINY_CHAT_TEMPLATE,
        ClipBundle,
        tag_list,
        tiny_bert_tokenizer,
        tiny_qwen_tokenizer,
    )

    def clip(*_: Any, **__: Any) -> ClipBundle:
        import open_clip

        model = open_clip.create_model(CLIP_ARCH, device=device)
        return ClipBundle(model.eval(), open_clip.image_transform(model.visual.image_size, is_train=False),
                          open_clip.get_tokenizer(CLIP_ARCH))

    def gdino(*_: Any, **__: Any) -> tuple[Any, Any]:
        from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

        with torch.device(device):
            model = GroundingDinoForObjectDetection(gdino_base_config())
        return model.eval(), GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(),
                                                    tokenizer=tiny_bert_tokenizer(tag_list()))

    def sam(*_: Any, **__: Any) -> Any:
        from segment_anything import SamPredictor, sam_model_registry

        with torch.device(device):
            return SamPredictor(sam_model_registry["vit_h"]().eval())

    def sam2(*_: Any, **__: Any) -> tuple[Any, Any]:
        from transformers import Sam2ImageProcessor, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor

        with torch.device(device):
            model = Sam2VideoModel(sam2_large_config())
        return model.eval(), Sam2VideoProcessor(image_processor=Sam2ImageProcessor(),
                                                video_processor=Sam2VideoVideoProcessor())

    shared: dict[str, tuple[Any, Any]] = {}

    def qwen(*_: Any, dtype: str = "bfloat16", **__: Any) -> tuple[Any, Any]:
        # fg_check and caption get the same instance: on one GPU a second 16 GB copy would only cost memory.
        if dtype not in shared:
            from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
            from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

            tok = tiny_qwen_tokenizer()
            with torch.device(device):
                model = Qwen2_5_VLForConditionalGeneration._from_config(qwen_7b_config(tok),
                                                                         dtype=getattr(torch, dtype))
            shared[dtype] = model.eval(), Qwen2_5_VLProcessor(
                image_processor=Qwen2VLImageProcessor(), tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                chat_template=TINY_CHAT_TEMPLATE)
        return shared[dtype]

    def propainter(*_: Any, **__: Any) -> tuple[Any, Any, Any]:
        from pytorchcv.models.propainter import propainter
        from pytorchcv.models.propainter_rfc import propainter_rfc
        from pytorchcv.models.raft import raft_things

        # Built on the CPU (ProPainter computes index buffers at init); the stage moves it to its device.
        modules = (raft_things(in_normalize=False, iters=20), propainter_rfc(), propainter())
        return tuple(m.eval().requires_grad_(False) for m in modules)  # type: ignore[return-value]

    return {(tag_module, "build_clip"): clip, (segment_track, "build_grounding_dino"): gdino,
            (segment_track, "build_sam"): sam, (segment_track, "build_sam2_video"): sam2,
            (foreground_check, "build_qwen_vl"): qwen, (caption, "build_qwen_vl"): qwen,
            (inpaint, "build_propainter"): propainter}


@contextlib.contextmanager
def patched(builders: dict[tuple[Any, str], Callable]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for (module, name), build in builders.items():
            stack.enter_context(mock.patch.object(module, name, build))
        yield


def with_truth(row: Row, clip: LayeredClip) -> Row:
    """The fields a model stage that was skipped (or dropped everything) would have added, from the synthetic
    clip's true layers, so the stages after it are still timed on a realistic row."""
    key = row.get("clip_key") or row["key"]
    return {"tags": [{"tag": "object", "score": 1.0}], "tag": "object", "obj": 1, "key": f"{key}-01",
            "mask": clip.alpha, "bg": clip.bg, **row}


def gpu_stages(res: Resources, objects: int, caption_tokens: int) -> list[Stage]:
    """The chain with the full preset's options, except where random weights need otherwise (see `notes`)."""
    segment = SegmentTrackStage(res, preset="full", box_threshold=0.0, text_threshold=0.0, max_objects=objects)
    detect = segment.detect
    # Random weights score the 900 Grounding DINO queries alike; a trained model's thresholds keep a handful.
    # Keeping the top `objects` boxes per keyframe stands in for that (SAM and SAM 2 then see a realistic count).
    segment.detect = lambda frame, tags: detect(frame, tags)[:objects]  # type: ignore[method-assign]
    return [
        TagStage(res, preset="full"),
        segment,
        DedupStage(min_area=0.0, max_area=1.0, max_missing=1.0),
        ForegroundCheckStage(res, preset="full", constrain_answer=True, max_new_tokens=4, on_reject="keep"),
        InpaintStage(res, preset="full"),
        ComposeStage(),
        CaptionStage(res, preset="full", max_new_tokens=caption_tokens, min_new_tokens=caption_tokens,
                     keep_existing=False),
    ]


def gpu_table(repeats: int, objects: int, caption_tokens: int, device: str = "cuda") -> None:
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def allocated() -> float:
        return torch.cuda.memory_allocated() / GIB if cuda else 0.0

    clip = synthetic_clip(GPU_CLIP, 0)
    stages = gpu_stages(Resources(num_gpus=1.0), objects, caption_tokens)
    builders = real_size_builders(device)
    setup, weights, skipped, notes = {}, {}, {}, {}
    for s in stages:
        before, t0 = allocated(), time.perf_counter()
        try:
            with patched(builders):
                s.ensure_setup()
        except Exception as exc:  # one stage that cannot be built must not cost the other stages' figures
            traceback.print_exc()
            skipped[s.name] = f"setup failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            print(f"skip {s.name}: {skipped[s.name]}", flush=True)
            continue
        sync()
        setup[s.name], weights[s.name] = time.perf_counter() - t0, allocated() - before
        print(f"setup {s.name}: {setup[s.name]:.1f} s, +{weights[s.name]:.2f} GiB", flush=True)

    times: dict[str, list[float]] = {s.name: [] for s in stages if s.name not in skipped}
    work: dict[str, float] = dict.fromkeys(times, 0.0)
    peak: dict[str, float] = dict.fromkeys(times, 0.0)
    rows_out = 0
    for rep in range(repeats + 1):  # pass 0 warms up (cuDNN/cuBLAS autotuning, lazy CUDA init)
        rows: list[Row] = [{"key": "bench-00000", "clip_key": "bench-00000", "frames": clip.blend, "fps": clip.fps,
                            "frame_range": (0, GPU_CLIP.num_frames), "scores": {}}]
        for s in stages:
            if s.name in skipped:
                rows = [with_truth(r, clip) for r in rows]
                continue
            sync()
            base = allocated()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                out = s.process_batch(rows)
            except Exception as exc:
                traceback.print_exc()
                skipped[s.name] = f"process failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                print(f"skip {s.name}: {skipped[s.name]}", flush=True)
                times.pop(s.name)
                rows = [with_truth(r, clip) for r in rows]
                continue
            sync()
            dt = time.perf_counter() - t0
            if rep:
                times[s.name].append(dt)
            if cuda:
                peak[s.name] = max(peak[s.name], torch.cuda.max_memory_allocated() / GIB)
                work[s.name] = max(work[s.name], torch.cuda.max_memory_allocated() / GIB - base)
            live = [r for r in out if not is_failed(r)]
            if not live:
                why = [r["_failed"]["message"] for r in out if is_failed(r)] or rows[0]["scores"].get("dropped", [])
                notes[s.name] = f"no row out ({'; '.join(map(str, why))[:160]}); later stages got the true layers"
                rows = [with_truth(r, clip) for r in rows]
            else:
                rows = live
        rows_out = len([r for r in rows if not is_failed(r)])
        print(f"pass {rep}{' (warm-up)' if not rep else ''} done", flush=True)

    med = {name: float(np.median(v)) for name, v in times.items()}
    total = sum(med.values())
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"\nReal-size perception stages, RANDOM weights, {name}: one {GPU_CLIP.num_frames}x{GPU_CLIP.height}x"
          f"{GPU_CLIP.width} clip, {objects} object(s), median of {repeats} after 1 warm-up")
    print(f"{'stage':<10}{'setup s':>9}{'weights GiB':>12}{'s/clip':>9}{'work GiB':>10}{'peak GiB':>10}"
          f"{'clips/h':>9}{'share':>7}")
    for stage, t in med.items():
        print(f"{stage:<10}{setup[stage]:>9.1f}{weights[stage]:>12.2f}{t:>9.3f}{work[stage]:>10.2f}"
              f"{peak[stage]:>10.2f}{3600 / t:>9.0f}{t / total:>7.0%}")
    print(f"{'chain':<10}{sum(setup.values()):>9.1f}{sum(weights.values()):>12.2f}{total:>9.3f}{'':>10}"
          f"{max(peak.values(), default=0.0):>10.2f}{3600 / total:>9.0f}  clips/hour per GPU, all stages on one GPU"
          f" in sequence; rows out of the last pass: {rows_out}")
    print("weights: GPU memory the stage's setup added (fg_check and caption share one Qwen2.5-VL-7B); work: "
          "peak above the memory in use when the stage started; peak: all resident models included")
    print("caps: fg_check answer constrained to yes/no, <= 4 new tokens over 3 images; caption exactly "
          f"{caption_tokens} new tokens per layer (fg, bg, blend); segment keeps the top {objects} Grounding DINO "
          f"box(es) per keyframe; dtypes as the stages run them: Qwen2.5-VL bf16, the other models fp32")
    for stage, why in {**notes, **skipped}.items():
        print(f"  {stage}: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clips", type=int, default=4, help="clips per batch for the batched/unbatched figures")
    parser.add_argument("--generate-batch", type=int, default=8, help="generate_batch of the batched VLM stages")
    parser.add_argument("--gpu", action="store_true",
                        help="time the real-size architectures (random weights) on the GPU instead (needs CUDA)")
    parser.add_argument("--objects", type=int, default=1, help="--gpu: objects segmented per clip")
    parser.add_argument("--caption-tokens", type=int, default=60, help="--gpu: new tokens per caption")
    args = parser.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            parser.error("--gpu needs a CUDA device; none is visible (run without --gpu for the CPU figures)")
        gpu_table(args.repeats, args.objects, args.caption_tokens)
        return
    timing_table(args.frames, args.size, args.repeats)
    batching_table(args.clips, args.frames, args.size, max(args.repeats, 3), args.generate_batch)
    memory_table()


if __name__ == "__main__":
    main()
