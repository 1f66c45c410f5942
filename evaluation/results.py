"""The record of one evaluation run: every per-video score, the aggregates, and how they were computed."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_engine.schema import foreground_index
from evaluation.errors import EvaluationError

METRIC_TITLES = {
    "dynamic_degree": "Dynamic Degree",
    "aesthetic": "Aesthetic",
    "text_alignment": "Text Alignment",
    "frame_consistency": "Frame Consistency",
}
LAYER_TITLES = {"fg": "FG", "bg": "BG", "blend": "BL"}
RESULTS_FILE = "results.json"
RANDOM_WEIGHTS_NOTE = "random weights: numbers carry no meaning"


def layer_title(layer: str) -> str:
    """A table heading: FG, BG, BL (the paper's) and FG_1, FG_2, ... for the foregrounds behind the first."""
    return LAYER_TITLES.get(layer, layer.upper())


def report_layers(layers: Iterable[str]) -> list[str]:
    """The distinct `layers` in report order: the foregrounds front first (fg, fg_1, ...), then bg, blend."""
    def rank(layer: str) -> tuple[int, int]:
        k = foreground_index(layer)
        return (0, k) if k is not None else (1 + list(LAYER_TITLES).index(layer), 0)

    return sorted(set(layers), key=rank)


@dataclass
class Score:
    sample: str
    layer: str
    metric: str
    value: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalRun:
    kind: str
    scores: list[Score] = field(default_factory=list)
    aggregates: dict[str, dict[str, float]] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    accuracy: dict[str, dict[str, float | int]] = field(default_factory=dict)  # sample -> {alpha_iou, ...}
    meta: dict[str, Any] = field(default_factory=dict)

    def values(self, metric: str, layer: str) -> list[float]:
        return [s.value for s in self.scores if s.metric == metric and s.layer == layer]

    @property
    def samples(self) -> list[str]:
        return list(dict.fromkeys(s.sample for s in self.scores))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_json_safe(asdict(self)), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalRun:
        p = Path(path)
        if p.is_dir():
            p = p / RESULTS_FILE
        if not p.is_file():
            raise EvaluationError(f"{p}: no evaluation results; pass a run folder written by `python -m evaluation`")
        try:
            raw = _json_restore(json.loads(p.read_text()))
            raw["scores"] = [Score(**s) for s in raw.get("scores", [])]
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EvaluationError(f"{p}: not a results file of this suite ({exc})") from exc


def _json_safe(x: Any) -> Any:
    """JSON has no inf/nan: store them as strings so the file stays standard JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _json_restore(x: Any) -> Any:
    if x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, dict):
        return {k: _json_restore(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_restore(v) for v in x]
    return x
