"""PNG plots (matplotlib, Agg): aggregate bars per metric and layer, per-video distributions, comparisons."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.results import METRIC_TITLES, RANDOM_WEIGHTS_NOTE, EvalRun, layer_title, report_layers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(fig, run_random: bool, text: str) -> None:
    fig.suptitle(text + (f"\n({RANDOM_WEIGHTS_NOTE})" if run_random else ""), fontsize=10)


def plot_bars(runs: dict[str, EvalRun], path: str | Path) -> Path:
    """One panel per metric: a bar per layer, grouped by run."""
    plt = _pyplot()
    metrics = [m for m in METRIC_TITLES if any(m in r.aggregates for r in runs.values())]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    width = 0.8 / len(runs)
    for ax, metric in zip(axes[0], metrics):
        layers = report_layers(lyr for r in runs.values() for lyr in r.aggregates.get(metric, {}))
        x = np.arange(len(layers))
        for i, (name, run) in enumerate(runs.items()):
            vals = [run.aggregates.get(metric, {}).get(lyr, np.nan) for lyr in layers]
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(x, [layer_title(lyr) for lyr in layers])
        ax.set_title(METRIC_TITLES[metric], fontsize=9)
    if len(runs) > 1:
        axes[0][0].legend(fontsize=7)
    _title(fig, any(r.random_weights for r in runs.values()), "Aggregate scores per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_distributions(run: EvalRun, path: str | Path) -> Path:
    """One panel per metric: per-video values of each layer (box + points)."""
    plt = _pyplot()
    metrics = [m for m in METRIC_TITLES if m in run.aggregates]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        layers = list(run.aggregates[metric])
        data = [run.values(metric, lyr) for lyr in layers]
        ax.boxplot(data, showfliers=False)
        for i, vals in enumerate(data, start=1):
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.1, 0.1, len(vals)), vals, s=10, alpha=0.7)
        ax.set_xticks(range(1, len(layers) + 1), [layer_title(lyr) for lyr in layers])
        ax.set_title(METRIC_TITLES[metric], fontsize=9)
    _title(fig, run.random_weights, "Per-video score distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
