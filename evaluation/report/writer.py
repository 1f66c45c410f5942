"""Writing every report file of a run into one folder."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evaluation.layered_io import LayerSet
from evaluation.report.contact_sheet import contact_sheet
from evaluation.report.markdown import render, render_compare
from evaluation.report.plots import plot_bars, plot_distributions
from evaluation.results import EvalRun


def write_report(run: EvalRun, out: str | Path, samples: Sequence[LayerSet] = ()) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": run.save(out)}
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(render(run))
    if run.scores:
        files["bars"] = plot_bars({run.kind: run}, out / "scores.png")
        files["distributions"] = plot_distributions(run, out / "distributions.png")
    if samples:
        files["contact_sheet"] = contact_sheet(samples, out / "contact_sheet.png")
    return files


def write_comparison(runs: dict[str, EvalRun], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out / "compare.md"}
    files["markdown"].write_text(render_compare(runs))
    files["bars"] = plot_bars(runs, out / "compare.png")
    return files
