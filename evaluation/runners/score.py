"""Score a folder of existing layered outputs (one sub-folder per sample, see evaluation.layered_io)."""
from __future__ import annotations

from pathlib import Path

from evaluation.layered_io import find_samples, read_sample
from evaluation.results import EvalRun
from evaluation.runners.common import finish, keep_thumbs
from evaluation.suite import GENERATION_LAYERS, SuiteConfig, build_suite, score_samples


def run_score(root: str | Path, out: str | Path, cfg: SuiteConfig = SuiteConfig()) -> tuple[EvalRun, dict[str, Path]]:
    folders = find_samples(root)
    suite = build_suite(cfg, GENERATION_LAYERS)
    thumbs: list = []
    samples = keep_thumbs((read_sample(f) for f in folders), thumbs)
    run = score_samples(samples, suite, GENERATION_LAYERS, "score", total=len(folders))
    run.meta.update(source=str(root), preset=cfg.preset)
    return run, finish(run, Path(out), thumbs)
