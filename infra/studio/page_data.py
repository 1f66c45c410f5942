"""What a studio page shows, as JSON: each sample's layers as PNG frames (base64 data URLs, so the page's canvases
stay readable from file://, where images loaded from files taint a canvas), captions, origin, K and scores, and an
engine folder's quarantine table."""
from __future__ import annotations

import base64
import json
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_engine.schema import LayeredClip, alpha_name, fg_name, foreground_index, is_alpha
from data_engine.shards import QUARANTINE_NAME, ShardFormatError, complete_shards, read_clips
from data_engine.video_io import VideoDecodeError, encode_png
from evaluation.errors import EvaluationError
from evaluation.layered_io import find_samples
from evaluation.results import EvalRun
from layerflow.studio.clips import StudioInputError, read_sample_clip
from model.export import rgba_frames

QUARANTINE_COLUMNS = ("input", "stage", "error_type", "message", "attempts")


def png_data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def checker_cell(height: int, width: int) -> int:
    """The checkerboard's cell in clip pixels: about 8 cells across the short side, 2 pixels at least."""
    return max(2, min(height, width) // 8)


def sample_entry(clip: LayeredClip) -> dict[str, Any]:
    """One sample for the page. Foregrounds are straight RGBA (shown over a checkerboard), alphas grey."""
    layers = []
    for name in clip.layer_names:
        k = None if is_alpha(name) else foreground_index(name)
        frames = rgba_frames(clip, k) if k is not None else clip.layer(name)
        kind = "rgba" if k is not None else ("alpha" if is_alpha(name) else "rgb")
        layers.append({"name": name, "kind": kind, "frames": [png_data_url(f) for f in frames]})
    return {
        "key": clip.key, "origin": clip.origin, "K": clip.num_foregrounds, "fps": float(clip.fps),
        "frames": clip.num_frames, "height": clip.height, "width": clip.width,
        "cell": checker_cell(clip.height, clip.width), "captions": clip.captions.as_dict(),
        "scores": json.loads(json.dumps(clip.scores, default=str)),
        "depth": [fg_name(k) for k in range(clip.num_foregrounds)],
        "alphas": [alpha_name(k) for k in range(clip.num_foregrounds)],
        "layers": layers, "metrics": [],
    }


def run_metrics(run: EvalRun | None, key: str) -> list[dict[str, Any]]:
    """[{layer, metric, value}] of sample `key`: its per-layer scores, then its accuracy against the truth."""
    if run is None:
        return []
    rows = [{"layer": s.layer, "metric": s.metric, "value": s.value} for s in run.scores if s.sample == key]
    rows += [{"layer": "", "metric": name, "value": value} for name, value in run.accuracy.get(key, {}).items()]
    return rows


def load_run(path: Path | None) -> EvalRun | None:
    if path is None:
        return None
    try:
        return EvalRun.load(path)
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc


def is_engine_folder(folder: Path) -> bool:
    return (folder / "manifest.parquet").is_file() or bool(complete_shards(folder))


def read_quarantine(folder: Path) -> list[dict[str, Any]]:
    path = folder / QUARANTINE_NAME
    if not path.is_file():
        return []
    return [{c: row.get(c) for c in QUARANTINE_COLUMNS} for row in pq.read_table(path).to_pylist()]


def page_data(path: str | Path, *, max_samples: int = 24, run: EvalRun | None = None) -> dict[str, Any]:
    """The page's data for a generate / compose / decomposition output (one sample folder or a folder of them) or
    an engine output folder (its first `max_samples` samples and its quarantine table); `run`: the evaluation run
    that scored the samples, whose scores each sample shows."""
    folder = Path(path)
    if not folder.is_dir():
        raise StudioInputError(f"{folder}: not a folder; pass a generate output folder or an engine output folder")
    if is_engine_folder(folder):
        try:
            clips = list(islice(read_clips(folder), max_samples))
        except (ShardFormatError, VideoDecodeError) as exc:
            raise StudioInputError(f"{folder}: {exc}") from exc
        return {"title": f"shards: {folder.name}", "kind": "engine", "source": str(folder),
                "samples": [sample_entry(c) for c in clips], "quarantine": read_quarantine(folder)}
    try:
        sample_dirs = find_samples(folder)[:max_samples]
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc
    samples = []
    for sample_dir in sample_dirs:
        entry = sample_entry(read_sample_clip(sample_dir))
        entry["metrics"] = run_metrics(run, sample_dir.name)
        samples.append(entry)
    return {"title": f"layers: {folder.name}", "kind": "samples", "source": str(folder), "samples": samples,
            "quarantine": []}
