"""Markdown tables shaped like the paper's Table 1 (generation) and Table 3 (decomposition)."""
from __future__ import annotations

import math
from collections.abc import Iterable

from evaluation.results import METRIC_TITLES, RANDOM_WEIGHTS_NOTE, EvalRun, layer_title, report_layers

# The paper's Table 1 (joint image-video model), for reference beside generation results.
PAPER_TABLE1 = {
    "dynamic_degree": {"fg": 0.62, "blend": 0.66},
    "aesthetic": {"fg": 0.4859, "bg": 0.5753, "blend": 0.5742},
    "text_alignment": {"fg": 0.1972, "bg": 0.2312, "blend": 0.2350},
    "frame_consistency": {"fg": 0.9621, "bg": 0.9777, "blend": 0.9633},
}
OBJECT_MEAN = 1 << 30  # sorts the mean of a per-object score after every object
ACCURACY_TITLES = {
    "alpha_iou": "alpha IoU",
    "alpha_sad": "alpha SAD (x1000)",
    "bg_psnr": "bg PSNR vs GT bg (dB)",
    "bg_psnr_visible": "bg PSNR vs blend where GT alpha = 0 (dB)",
    "bg_visible_pixels": "pixels with GT alpha = 0 (all frames)",
}


def _split_object(key: str) -> tuple[str, int]:
    """(score, object) of an accuracy key: alpha_iou -> (alpha_iou, 0), alpha_iou_2 -> (alpha_iou, 2),
    alpha_iou_mean -> (alpha_iou, OBJECT_MEAN); see `layer_accuracy.per_object`."""
    base, _, suffix = key.rpartition("_")
    if base in ACCURACY_TITLES and suffix.isdigit():
        return base, int(suffix)
    if base in ACCURACY_TITLES and suffix == "mean":
        return base, OBJECT_MEAN
    return key, 0


def accuracy_title(key: str) -> str:
    base, k = _split_object(key)
    if k == 0:
        return ACCURACY_TITLES[base]
    return f"{ACCURACY_TITLES[base]}, " + ("mean over objects" if k == OBJECT_MEAN else f"object {k}")


def accuracy_columns(rows: Iterable[dict]) -> list[str]:
    """The accuracy keys any row has, each score's objects together (0, 1, ..., mean), in `ACCURACY_TITLES` order."""
    present = {key for row in rows for key in row if _split_object(key)[0] in ACCURACY_TITLES}
    order = list(ACCURACY_TITLES)
    return sorted(present, key=lambda key: (order.index(_split_object(key)[0]), _split_object(key)[1]))


def fmt(x: float | int | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.4f}"


def metric_table(aggregates: dict[str, dict[str, float]], layers: list[str]) -> list[str]:
    lines = ["| Metric | " + " | ".join(layer_title(lyr) for lyr in layers) + " |",
             "|---|" + "---:|" * len(layers)]
    for metric in METRIC_TITLES:
        if metric in aggregates:
            cells = [fmt(aggregates[metric].get(lyr)) for lyr in layers]
            lines.append(f"| {METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
    return lines


def run_layers(run: EvalRun) -> list[str]:
    return report_layers(lyr for per in run.aggregates.values() for lyr in per)


def render(run: EvalRun) -> str:
    title = {"generation": "Layered generation (cf. paper Table 1)",
             "decomposition": "Layer decomposition (cf. paper Table 3)"}.get(run.kind, "Scores of layered outputs")
    out = [f"# {title}", ""]
    if run.random_weights:
        out += [f"> **{RANDOM_WEIGHTS_NOTE}** (preset `tiny`: metric models are randomly initialised).", ""]
    out += [f"{len(run.samples)} samples.", ""]
    out += metric_table(run.aggregates, run_layers(run)) + [""]
    out += ["Variants:", ""] + [f"- {METRIC_TITLES[m]}: {v}" for m, v in run.variants.items()] + [""]
    if run.accuracy:
        keys = accuracy_columns(run.accuracy.values())
        out += ["## Against ground-truth layers", "",
                "| Sample | " + " | ".join(accuracy_title(k) for k in keys) + " |", "|---|" + "---:|" * len(keys)]
        for sample, row in run.accuracy.items():
            out.append(f"| {sample} | " + " | ".join(fmt(row.get(k)) for k in keys) + " |")
        out.append("")
    if run.kind == "generation":
        out += ["## Paper, Table 1 (for reference)", ""] + metric_table(PAPER_TABLE1, ["fg", "bg", "blend"]) + [""]
    return "\n".join(out)


def render_compare(runs: dict[str, EvalRun]) -> str:
    names = list(runs)
    layers = report_layers(lyr for r in runs.values() for lyr in run_layers(r))
    head = ["Metric", "Layer"] + names + ([f"{names[1]} - {names[0]}"] if len(names) == 2 else [])
    out = ["# Comparison", ""]
    for name, run in runs.items():
        note = f" ({RANDOM_WEIGHTS_NOTE})" if run.random_weights else ""
        out.append(f"- **{name}**: {run.kind}, {len(run.samples)} samples{note}")
    out += ["", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for metric in METRIC_TITLES:
        for lyr in layers:
            vals = [r.aggregates.get(metric, {}).get(lyr) for r in runs.values()]
            if all(v is None for v in vals):
                continue
            row = [METRIC_TITLES[metric], layer_title(lyr)] + [fmt(v) for v in vals]
            if len(vals) == 2:
                row.append(fmt(vals[1] - vals[0]) if None not in vals else "-")
            out.append("| " + " | ".join(row) + " |")
    variants = {m for r in runs.values() for m in r.variants}
    for m in sorted(variants):
        seen = {r.variants.get(m) for r in runs.values()}
        if len(seen) > 1:
            out.append(f"\n> {METRIC_TITLES[m]} was computed differently: " + "; ".join(
                f"{n}: {r.variants.get(m)}" for n, r in runs.items()))
    return "\n".join(out) + "\n"
