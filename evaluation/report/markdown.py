"""Markdown tables shaped like the paper's Table 1 (generation) and Table 3 (decomposition)."""
from __future__ import annotations

import math

from evaluation.results import LAYER_TITLES, METRIC_TITLES, RANDOM_WEIGHTS_NOTE, EvalRun

# The paper's Table 1 (joint image-video model), for reference beside generation results.
PAPER_TABLE1 = {
    "dynamic_degree": {"fg": 0.62, "blend": 0.66},
    "aesthetic": {"fg": 0.4859, "bg": 0.5753, "blend": 0.5742},
    "text_alignment": {"fg": 0.1972, "bg": 0.2312, "blend": 0.2350},
    "frame_consistency": {"fg": 0.9621, "bg": 0.9777, "blend": 0.9633},
}
ACCURACY_TITLES = {
    "alpha_iou": "alpha IoU",
    "alpha_sad": "alpha SAD (x1000)",
    "bg_psnr": "bg PSNR vs GT bg (dB)",
    "bg_psnr_visible": "bg PSNR vs blend where GT alpha = 0 (dB)",
    "bg_visible_pixels": "pixels with GT alpha = 0 (all frames)",
}


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
    lines = ["| Metric | " + " | ".join(LAYER_TITLES[lyr] for lyr in layers) + " |",
             "|---|" + "---:|" * len(layers)]
    for metric in METRIC_TITLES:
        if metric in aggregates:
            cells = [fmt(aggregates[metric].get(lyr)) for lyr in layers]
            lines.append(f"| {METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
    return lines


def run_layers(run: EvalRun) -> list[str]:
    used = {lyr for per in run.aggregates.values() for lyr in per}
    return [lyr for lyr in LAYER_TITLES if lyr in used]


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
        keys = [k for k in ACCURACY_TITLES if any(k in row for row in run.accuracy.values())]
        out += ["## Against ground-truth layers", "", "| Sample | " + " | ".join(ACCURACY_TITLES[k] for k in keys) + " |",
                "|---|" + "---:|" * len(keys)]
        for sample, row in run.accuracy.items():
            out.append(f"| {sample} | " + " | ".join(fmt(row.get(k)) for k in keys) + " |")
        out.append("")
    if run.kind == "generation":
        out += ["## Paper, Table 1 (for reference)", ""] + metric_table(PAPER_TABLE1, ["fg", "bg", "blend"]) + [""]
    return "\n".join(out)


def render_compare(runs: dict[str, EvalRun]) -> str:
    names = list(runs)
    layers = [lyr for lyr in LAYER_TITLES if any(lyr in run_layers(r) for r in runs.values())]
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
            row = [METRIC_TITLES[metric], LAYER_TITLES[lyr]] + [fmt(v) for v in vals]
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
