"""Which metric models to build (preset, weights, variants) and scoring layered samples with them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_engine.schema import fg_name
from data_engine.weights import missing_files
from evaluation.errors import EvaluationError
from evaluation.layered_io import LayerSet
from evaluation.metrics.base import Metric, VideoScore
from evaluation.results import EvalRun, Score, report_layers

METRICS = ("dynamic_degree", "aesthetic", "text_alignment", "frame_consistency")
# Layers each metric is reported on (the paper's Table 1: no Dynamic Degree for the background). "fg" stands for
# every foreground a sample has (fg, fg_1, ...: `sample_layers`), so a metric of the foreground covers each object.
GENERATION_LAYERS = {
    "dynamic_degree": ("fg", "blend"),
    "aesthetic": ("fg", "bg", "blend"),
    "text_alignment": ("fg", "bg", "blend"),
    "frame_consistency": ("fg", "bg", "blend"),
}
# Table 3: the blend is the input, Dynamic Degree is not reported.
DECOMPOSITION_LAYERS = {m: ("fg", "bg") for m in ("aesthetic", "text_alignment", "frame_consistency")}


@dataclass(frozen=True)
class SuiteConfig:
    preset: Literal["tiny", "full"] = "tiny"
    weights_root: Path | None = None
    consistency: Literal["clip", "dino"] = "clip"
    text_backend: Literal["auto", "viclip", "clip"] = "auto"
    metrics: tuple[str, ...] = METRICS
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise EvaluationError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(METRICS)}")
        if self.preset not in ("tiny", "full"):
            raise EvaluationError(f"preset must be 'tiny' (random weights) or 'full', got {self.preset!r}")

    @property
    def random_init(self) -> bool:
        return self.preset == "tiny"

    def resolved_text_backend(self) -> str:
        if self.text_backend != "auto":
            return self.text_backend
        if self.random_init or not missing_files("viclip-internvid-10m-flt", self.weights_root):
            return "viclip"
        return "clip"


def build_suite(cfg: SuiteConfig, layers_for: dict[str, tuple[str, ...]] = GENERATION_LAYERS) -> dict[str, Metric]:
    """One instance per requested metric that the task reports (`layers_for`); each loads its model once here,
    so a metric the task never reports (decomposition's Dynamic Degree) loads nothing."""
    from evaluation.metrics.aesthetic import AestheticQuality
    from evaluation.metrics.dynamic_degree import DynamicDegree
    from evaluation.metrics.frame_consistency import FrameConsistency
    from evaluation.metrics.text_alignment import TextAlignment

    common = {"random_init": cfg.random_init, "weights_root": cfg.weights_root, "device": cfg.device}
    tiny = cfg.random_init
    makers = {
        "dynamic_degree": lambda: DynamicDegree(tiny=tiny, **common),
        "aesthetic": lambda: AestheticQuality(tiny=tiny, **common),
        "text_alignment": lambda: TextAlignment(cfg.resolved_text_backend(), tiny=tiny, **common),
        "frame_consistency": lambda: FrameConsistency(cfg.consistency, tiny=tiny, **common),
    }
    reported = [name for name in cfg.metrics if layers_for.get(name)]
    if not reported:
        raise EvaluationError(f"none of {', '.join(cfg.metrics)} is reported for this task; choose from "
                              f"{', '.join(m for m in METRICS if layers_for.get(m))}")
    return {name: makers[name]() for name in reported}


def sample_layers(sample: LayerSet, layers: tuple[str, ...]) -> list[str]:
    """The layers of `sample` a metric reporting `layers` scores: "fg" expanded to fg, fg_1, ... it holds."""
    names = []
    for layer in layers:
        expanded = [fg_name(k) for k in range(sample.num_foregrounds)] if layer == "fg" else [layer]
        names += [name for name in expanded if name in sample.layers]
    return names


def score_samples(samples: Iterable[LayerSet], suite: dict[str, Metric], layers_for: dict[str, tuple[str, ...]],
                  kind: str, *, total: int | None = None) -> EvalRun:
    """Score every (sample, layer, metric); the prompt of a layer is its own caption (fg_k's is fg_k's)."""
    run = EvalRun(kind=kind, variants={m: suite[m].variant for m in suite},
                  random_weights=any(m.random_init for m in suite.values()))
    with Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        task = progress.add_task("samples", total=total)
        for sample in samples:
            for metric_name, metric in suite.items():
                for layer in sample_layers(sample, layers_for.get(metric_name, ())):
                    prompt = sample.captions.as_dict().get(layer, "") if metric.needs_prompt else None
                    if metric.needs_prompt and not prompt:
                        raise EvaluationError(f"{sample.key}: no {layer} caption for text alignment; add it to "
                                              f"clip.json / meta json, or drop text_alignment from --metrics")
                    s = metric.score_video(sample.layers[layer], fps=sample.fps, prompt=prompt)
                    run.scores.append(Score(sample.key, layer, metric_name, s.value, s.details))
            progress.advance(task)
    for metric_name, metric in suite.items():
        per_layer = {}
        for layer in report_layers(s.layer for s in run.scores if s.metric == metric_name):
            got = [VideoScore(s.value, s.details) for s in run.scores if s.metric == metric_name and s.layer == layer]
            per_layer[layer] = metric.aggregate(got)
        if per_layer:  # no empty table rows or plot panels for a metric no sample had a layer for
            run.aggregates[metric_name] = per_layer
    return run
