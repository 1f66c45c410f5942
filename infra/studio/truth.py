"""A decomposition shown against its ground truth: each predicted sample folder paired by name with a DAVIS-layout
truth sequence, the truth's layers added to the page as `truth_<layer>` tiles, and the evaluation run's per-layer
scores and accuracy (alpha IoU, SAD, bg PSNR) for that sample."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data_engine.schema import LayeredClip, is_alpha, layer_names
from data_engine.video_io import cover_geometry, resize_crop
from evaluation.errors import EvaluationError
from evaluation.layered_io import LayerSet, find_samples, read_sample
from evaluation.results import EvalRun
from layerflow.studio.clips import StudioInputError
from layerflow.studio.page_data import png_data_url, run_metrics, sample_entry
from model.export import straight_rgb


def _fit(frames: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """Truth frames at the prediction's size (the evaluation may have resized the sequence) and length."""
    frames = frames[:num_frames]
    if frames.shape[1:3] != (height, width):
        frames = resize_crop(frames, cover_geometry(frames.shape[1], frames.shape[2], height, width))
    return frames


def _read(folder: Path) -> LayerSet:
    try:
        return read_sample(folder)
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc


def prediction_clip(pred: LayerSet, truth: LayerSet) -> LayeredClip:
    """The predicted layers as a clip; a decomposition predicts no blend (it is the input), so the truth's is used."""
    layers = dict(pred.layers)
    t, h, w = next(iter(layers.values())).shape[:3]
    if "blend" not in layers and "blend" in truth.layers:
        layers["blend"] = _fit(truth.layers["blend"], t, h, w)
    names = layer_names(pred.num_foregrounds)
    missing = [n for n in names if n not in layers]
    if missing:
        raise StudioInputError(f"{pred.source}: lacks {', '.join(missing)}; a decomposition folder holds fg, alpha "
                               "(or mask) and bg, as .mp4 or PNG folders")
    meta = {"key": pred.key, "captions": truth.captions.as_dict(), "fps": pred.fps, "origin": "decomposition",
            "num_foregrounds": pred.num_foregrounds}
    try:
        return LayeredClip.from_layers(meta, {n: layers[n] for n in names})
    except ValueError as exc:
        raise StudioInputError(f"{pred.source}: {exc}") from exc


def truth_layers(truth: LayerSet, num_frames: int, height: int, width: int) -> list[dict[str, Any]]:
    """The truth's fg (straight RGBA from its grey-backed fg), alpha and bg as page layers `truth_*`."""
    fitted = {name: _fit(frames, num_frames, height, width) for name, frames in truth.layers.items()}
    out = []
    for name in ("fg", "alpha", "bg"):
        if name not in fitted:
            continue
        if name == "fg" and "alpha" in fitted:
            alpha = fitted["alpha"]
            frames = np.concatenate([straight_rgb(fitted["fg"], alpha), alpha[..., None]], axis=-1)
            kind = "rgba"
        else:
            frames, kind = fitted[name], "alpha" if is_alpha(name) else "rgb"
        out.append({"name": f"truth_{name}", "kind": kind, "frames": [png_data_url(f) for f in frames]})
    return out


def compared_samples(predictions: Path, truth: Path, run: EvalRun | None, max_samples: int) -> list[dict[str, Any]]:
    """One page sample per predicted folder that has a truth sequence of its name, with truth tiles and metrics."""
    try:
        truths = {folder.name: folder for folder in find_samples(truth)}
        predicted = find_samples(predictions)
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc
    paired = [folder for folder in predicted if folder.name in truths][:max_samples]
    if not paired:
        raise StudioInputError(f"no folder under {predictions} has a truth sequence of the same name under {truth}; "
                               "pass --truth the DATA folder the decomposition ran on")
    samples = []
    for folder in paired:
        gt = _read(truths[folder.name])
        clip = prediction_clip(_read(folder), gt)
        entry = sample_entry(clip)
        entry["layers"] += truth_layers(gt, clip.num_frames, clip.height, clip.width)
        entry["metrics"] = run_metrics(run, clip.key)
        samples.append(entry)
    return samples
