"""Decomposition benchmark over a DAVIS-layout folder (`<seq>/{fg,mask,bg,bl}/*.png` + meta json prompts).

Each blend is decomposed by the pipeline (or read from `--predictions`, see `prediction_dir`), fg and bg are
scored with the VBench metrics, and where ground-truth layers exist alpha IoU / SAD and background PSNR are
reported. With K foregrounds (fg_k, alpha_k or mask_k beside fg, alpha) every foreground is scored and IoU / SAD
are reported per object, matched by layer index, with their mean (`layer_accuracy.object_alpha_accuracy`); the
visible background is where no object's true alpha is above 0.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.errors import EvaluationError
from evaluation.layered_io import LayerSet, find_samples, read_sample
from evaluation.metrics.layer_accuracy import bg_psnr, object_alpha_accuracy, union_matte, visible_bg_psnr
from evaluation.results import EvalRun
from evaluation.runners.common import finish, keep_thumbs
from evaluation.suite import DECOMPOSITION_LAYERS, SuiteConfig, build_suite, score_samples


@dataclass(frozen=True)
class DecompositionConfig:
    data: Path
    predictions: Path | None = None
    pipeline: Path | None = None  # a LayerFlowPipeline folder; None with the tiny preset builds the tiny one
    num_frames: int = 16
    height: int | None = None  # resize the blend (and ground truth) for the pipeline; None keeps the size
    width: int | None = None
    steps: int = 50
    seed: int = 0
    limit: int | None = None


def accuracy(pred: LayerSet, gt: LayerSet) -> dict[str, float | int]:
    if pred.num_frames != gt.num_frames:
        raise EvaluationError(f"{pred.key}: prediction has {pred.num_frames} frames but ground truth has "
                              f"{gt.num_frames}; predict every frame of the sequence")
    row: dict[str, float | int] = {}
    if "alpha" in pred.layers and "alpha" in gt.layers:
        try:
            row.update(object_alpha_accuracy(pred.layers, gt.layers))
        except EvaluationError as exc:
            raise EvaluationError(f"{pred.key}: {exc}") from exc
    if "bg" in pred.layers and "bg" in gt.layers:
        row["bg_psnr"] = bg_psnr(pred.layers["bg"], gt.layers["bg"])
    if "bg" in pred.layers and "alpha" in gt.layers and "blend" in gt.layers:
        row["bg_psnr_visible"], row["bg_visible_pixels"] = visible_bg_psnr(pred.layers["bg"], gt.layers["blend"],
                                                                            union_matte(gt.layers))
    return row


def prediction_dir(predictions: Path, data: Path, sequence: Path) -> Path:
    """The prediction folder of `sequence` (found under `data`): at the same relative path under `predictions`
    (so `--predictions` may be DATA itself, or any copy of its layout), else flat at `<predictions>/<seq>/`."""
    candidates = (predictions / sequence.relative_to(data), predictions / sequence.name)
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        raise EvaluationError(
            f"{sequence.name}: no prediction at {candidates[0]} or {candidates[1]}; --predictions holds one folder "
            f"per sequence, laid out like DATA or flat as <predictions>/<seq>/ with fg, alpha (or mask) and bg"
        )
    return found


def _resize(gt: LayerSet, height: int, width: int) -> LayerSet:
    import torch
    import torch.nn.functional as F

    def one(arr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(arr).float()
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        y = F.interpolate(x, size=(height, width), mode="area").round().clamp(0, 255).to(torch.uint8)
        return (y[:, 0] if arr.ndim == 3 else y.permute(0, 2, 3, 1)).numpy()

    return LayerSet(gt.key, {k: one(v) for k, v in gt.layers.items()}, gt.captions, gt.fps, gt.source)


def _decomposer(cfg: DecompositionConfig, preset: str):
    import torch

    from evaluation.runners.generation import pipeline_to_evaluate

    pipe = pipeline_to_evaluate(cfg.pipeline, preset, cfg.seed, task="decompose")

    def decompose(gt: LayerSet) -> LayerSet:
        blend = gt.layers["blend"][: cfg.num_frames]
        if len(blend) < cfg.num_frames:
            raise EvaluationError(f"{gt.key}: {len(blend)} frames, the model decomposes {cfg.num_frames}; "
                                  f"pass --num-frames {len(blend)} or a longer sequence")
        out = pipe(fg_prompt=gt.captions.fg, bg_prompt=gt.captions.bg, blend_prompt=gt.captions.blend,
                   task="decompose", layers={"blend": blend}, num_frames=cfg.num_frames, height=blend.shape[1],
                   width=blend.shape[2], num_inference_steps=cfg.steps,
                   generator=torch.Generator().manual_seed(cfg.seed), fps=gt.fps).clips[0]
        return LayerSet(gt.key, {name: out.layer(name) for name in out.layer_names}, gt.captions, gt.fps, "pipeline")

    return decompose


def run_decomposition(cfg: DecompositionConfig, out: str | Path,
                      suite_cfg: SuiteConfig = SuiteConfig()) -> tuple[EvalRun, dict[str, Path]]:
    sequences = find_samples(cfg.data)[: cfg.limit]
    decompose = None if cfg.predictions is not None else _decomposer(cfg, suite_cfg.preset)
    suite = build_suite(suite_cfg, DECOMPOSITION_LAYERS)
    acc: dict[str, dict[str, float | int]] = {}

    def predictions() -> Iterator[LayerSet]:
        for folder in sequences:
            gt = read_sample(folder)
            if "blend" not in gt.layers:
                raise EvaluationError(f"{folder}: no bl/ (blend) frames; every sequence needs its blended video")
            if cfg.height and cfg.width:
                gt = _resize(gt, cfg.height, cfg.width)
            if decompose is None:
                pred_dir = prediction_dir(Path(cfg.predictions), Path(cfg.data), folder)
                pred = read_sample(pred_dir, key=gt.key, fps=gt.fps)
                pred.captions = gt.captions
            else:
                gt = LayerSet(gt.key, {k: v[: cfg.num_frames] for k, v in gt.layers.items()}, gt.captions, gt.fps)
                pred = decompose(gt)
            acc[gt.key] = accuracy(pred, gt)
            yield pred

    thumbs: list[LayerSet] = []
    run = score_samples(keep_thumbs(predictions(), thumbs), suite, DECOMPOSITION_LAYERS, "decomposition",
                        total=len(sequences))
    run.accuracy = acc
    run.meta.update(data=str(cfg.data), predictions=str(cfg.predictions) if cfg.predictions else None,
                    preset=suite_cfg.preset)
    return run, finish(run, Path(out), thumbs)
