"""`layerflow view PATH [--out DIR] [--serve]`: a static page to play a layered output or browse an engine folder."""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

from evaluation.results import RESULTS_FILE, EvalRun
from layerflow.studio.clips import StudioInputError
from layerflow.studio.page import write_page
from layerflow.studio.page_data import load_run, page_data
from layerflow.studio.truth import compared_samples

EXAMPLES = """\
examples:
  layerflow view outputs/generate/tiny/generate            # -> outputs/generate/tiny/generate/studio/index.html
  layerflow view outputs/dataset --serve                   # shard browser + quarantine, on http://127.0.0.1:8000/
  layerflow view PREDICTIONS --truth DAVIS_DATA --results outputs/eval/decomposition   # ours against the truth
  layerflow view outputs/eval/decomposition                # a decomposition run scored from --predictions
  layerflow view outputs/eval/score                        # the samples a score / generation run scored"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerflow view", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write one self-contained static page (index.html beside assets/, works from file://) for a "
                    "generate / compose / decomposition output folder or an engine output folder: a layered player "
                    "and, for shards, a sample browser with the quarantine table.")
    parser.add_argument("path", type=Path, help="a sample folder, a folder of them, or an engine output folder")
    parser.add_argument("--out", type=Path, help="where to write the page (default: PATH/studio)")
    parser.add_argument("--truth", type=Path, help="ground truth (DAVIS layout) to show a decomposition against")
    parser.add_argument("--results", type=Path, help="an evaluation run (results.json) whose scores to show")
    parser.add_argument("--max-samples", type=int, default=24, help="samples to put on the page (default 24)")
    parser.add_argument("--serve", action="store_true", help="serve the page on localhost until Ctrl-C")
    parser.add_argument("--port", type=int, default=8000, help="--serve's port (default 8000)")
    return parser


def serve(folder: Path, port: int) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving {folder} on http://127.0.0.1:{port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def comparison_data(predictions: Path, truth: Path, run: EvalRun | None, max_samples: int) -> dict:
    samples = compared_samples(predictions, truth, run, max_samples)
    return {"title": f"decomposition: {predictions.name} against {truth.name}", "kind": "samples",
            "source": str(predictions), "samples": samples, "quarantine": []}


def run_page_data(folder: Path, max_samples: int) -> dict:
    """An evaluation run folder: a decomposition scored from --predictions against its data, or the samples a
    generation run wrote (`samples/`) or a score run read (`source`), each with its scores."""
    run = load_run(folder)
    if run.kind == "decomposition":
        if not run.meta.get("predictions"):
            raise StudioInputError(f"{folder}: this run decomposed with the model and kept no layers; view the "
                                   "predictions folder with --truth DATA --results RUN instead")
        return comparison_data(Path(run.meta["predictions"]), Path(run.meta["data"]), run, max_samples)
    source = Path(run.meta["source"]) if run.meta.get("source") else folder / "samples"
    return page_data(source, max_samples=max_samples, run=run)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_samples < 1:
        print(f"error: --max-samples must be at least 1, got {args.max_samples}", file=sys.stderr)
        return 2
    try:
        if args.truth:
            data = comparison_data(args.path, args.truth, load_run(args.results), args.max_samples)
        elif (args.path / RESULTS_FILE).is_file():
            data = run_page_data(args.path, args.max_samples)
        else:
            data = page_data(args.path, max_samples=args.max_samples, run=load_run(args.results))
    except StudioInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    index = write_page(data, args.out or args.path / "studio")
    print(f"wrote {index} ({len(data['samples'])} sample(s), {len(data['quarantine'])} quarantined); open it in a "
          "browser (file:// works)")
    if args.serve:
        serve(index.parent, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
