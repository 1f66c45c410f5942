"""What the runners share: loading the suite, keeping first frames for the contact sheet, writing reports."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from rich.console import Console

from evaluation.layered_io import LayerSet
from evaluation.report.writer import write_report
from evaluation.results import EvalRun

console = Console(stderr=True)


def keep_thumbs(samples: Iterable[LayerSet], thumbs: list[LayerSet], limit: int = 8) -> Iterator[LayerSet]:
    """Pass samples through, keeping only the first frame of the first `limit` for the contact sheet."""
    for sample in samples:
        if len(thumbs) < limit:
            thumbs.append(LayerSet(sample.key, {k: v[:1] for k, v in sample.layers.items()}, sample.captions,
                                   sample.fps, sample.source))
        yield sample


def finish(run: EvalRun, out: Path, thumbs: list[LayerSet]) -> dict[str, Path]:
    files = write_report(run, out, thumbs)
    console.print(f"[bold]report:[/bold] {files['markdown']}  (json, plots and contact sheet in {out})")
    return files
