"""`layerflow eval {generation,decomposition,score,compare} ...` (or `python -m evaluation`)

`--preset tiny` (the default) scores with randomly initialised metric models (reports say so);
`--preset full` (implied by `--weights DIR`) loads every metric model from local weight files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_engine.weights import MissingWeightsError
from evaluation.errors import EvaluationError
from evaluation.suite import METRICS, SuiteConfig


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("tiny", "full"), default=None,
                   help="tiny: random-init metric models (default); full: real weights (see --weights)")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights root (default $LAYERFLOW_WEIGHTS); implies --preset full")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    p.add_argument("--consistency", choices=("clip", "dino"), default="clip",
                   help="frame consistency backbone: clip = VBench background_consistency, dino = subject_consistency")
    p.add_argument("--text-backend", choices=("auto", "viclip", "clip"), default="auto",
                   help="auto: ViCLIP when its weights are present, else the CLIP fallback (labelled in reports)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="report folder (default outputs/eval/<command>)")


def _suite(a: argparse.Namespace) -> SuiteConfig:
    preset = a.preset or ("full" if a.weights else "tiny")
    return SuiteConfig(preset=preset, weights_root=a.weights, consistency=a.consistency,
                       text_backend=a.text_backend, metrics=tuple(a.metrics), device=a.device)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", type=Path, default=None, help="LayerFlowPipeline folder (tiny preset: built in)")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 50; tiny preset 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="first N prompts / sequences (generation, tiny preset: 2)")


EXAMPLES = """examples:
  layerflow eval score outputs/generate/tiny/generate                 # what `make generate` wrote
  layerflow eval generation --pipeline outputs/train/tiny_stage3/final --limit 2
  layerflow eval decomposition ../shared/samples/layerflow_official/DAVIS/480p --limit 1
  layerflow eval compare outputs/eval/score outputs/eval/generation
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="layerflow eval", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generation", help="prompt set -> pipeline -> scores per layer (Table 1)")
    g.add_argument("--prompts", type=Path, default=None, help="JSON lines {id, fg, bg, blend} (default: built-in set)")
    g.add_argument("--height", type=int, default=None, help="default 480 (tiny preset 128)")
    g.add_argument("--width", type=int, default=None, help="default 720 (tiny preset 128)")
    _model_args(g)
    _suite_args(g)
    d = sub.add_parser("decomposition", help="DAVIS-layout folder -> decompose -> scores + accuracy (Table 3)")
    d.add_argument("data", type=Path, help="folder of <seq>/{fg,mask,bg,bl}/ frames with meta*.json prompts")
    d.add_argument("--predictions", type=Path, default=None,
                   help="score these layers instead of running the model: one folder per sequence, laid out like "
                        "DATA (DATA itself works) or flat as <predictions>/<seq>/")
    d.add_argument("--height", type=int, default=None, help="resize blends (and ground truth) to this size first")
    d.add_argument("--width", type=int, default=None)
    _model_args(d)
    _suite_args(d)
    s = sub.add_parser("score",
                       help="score a folder of layered outputs (<sample>/{fg,alpha,bg,blend}.mp4 or PNG folders)")
    s.add_argument("root", type=Path)
    _suite_args(s)
    c = sub.add_parser("compare", help="side-by-side table and plot of two (or more) runs")
    c.add_argument("runs", type=Path, nargs="+", help="run folders (each holds results.json)")
    c.add_argument("--out", type=Path, default=None)
    return ap


def run(argv: list[str] | None = None) -> dict[str, Path]:
    a = parser().parse_args(argv)
    out = a.out or Path("outputs") / "eval" / a.command
    if a.command == "compare":
        from evaluation.report.writer import write_comparison
        from evaluation.results import EvalRun

        if len(a.runs) < 2:
            raise EvaluationError("compare needs at least two run folders")
        names = [p.name if p.name not in {q.name for q in a.runs if q != p} else str(p) for p in a.runs]
        files = write_comparison({n: EvalRun.load(p) for n, p in zip(names, a.runs)}, out)
        print(f"comparison: {files['markdown']}")
        return files
    suite = _suite(a)
    tiny = suite.preset == "tiny"
    if a.command == "score":
        from evaluation.runners.score import run_score

        return run_score(a.root, out, suite)[1]
    steps = a.steps or (4 if tiny else 50)
    if a.command == "generation":
        from evaluation.runners.generation import GenerationConfig, run_generation

        limit = a.limit or (2 if tiny else None)
        cfg = GenerationConfig(num_frames=a.num_frames, steps=steps, seed=a.seed, limit=limit, pipeline=a.pipeline,
                               height=a.height or (128 if tiny else 480), width=a.width or (128 if tiny else 720),
                               **({"prompts": a.prompts} if a.prompts else {}))
        return run_generation(cfg, out, suite)[1]
    from evaluation.runners.decomposition import DecompositionConfig, run_decomposition

    cfg = DecompositionConfig(a.data, predictions=a.predictions, pipeline=a.pipeline, num_frames=a.num_frames,
                              height=a.height, width=a.width, steps=steps, seed=a.seed, limit=a.limit)
    return run_decomposition(cfg, out, suite)[1]


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (EvaluationError, MissingWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
