"""`layerflow view PATH [--out DIR] [--serve]`: a static page to play a layered output or browse an engine folder."""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
from pathlib import Path

from evaluation.results import RESULTS_FILE
from layerflow.studio.clips import StudioInputError
from layerflow.studio.page import write_page
from layerflow.studio.page_data import page_data
from layerflow.studio.truth import compared_samples, load_run

EXAMPLES = """\
examples:
  layerflow view outputs/generate/tiny/generate            # -> outputs/generate/tiny/generate/studio/index.html
  layerflow view outputs/dataset --serve                   # shard browser + quarantine, on http://127.0.0.1:8000/
  layerflow view PREDICTIONS --truth DAVIS_DATA --results outputs/eval/decomposition   # ours against the truth
  layerflow view outputs/eval/decomposition                # a decomposition run scored from --predictions"""


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


def comparison_data(args: argparse.Namespace) -> dict:
    """A decomposition against its truth: PATH is the predictions (with --truth), or an evaluation run folder that
    scored `--predictions` (its results.json names the predictions and the data)."""
    run = load_run(args.results or (args.path if (args.path / RESULTS_FILE).is_file() else None))
    predictions, truth = args.path, args.truth
    if truth is None:
        predictions = Path(run.meta.get("predictions") or "")
        truth = Path(run.meta.get("data") or "")
        if not run.meta.get("predictions"):
            raise StudioInputError(f"{args.path}: this run decomposed with the model and kept no layers; view the "
                                   "predictions folder with --truth DATA --results RUN instead")
    samples = compared_samples(predictions, truth, run, args.max_samples)
    return {"title": f"decomposition: {predictions.name} against {truth.name}", "kind": "samples",
            "source": str(predictions), "samples": samples, "quarantine": []}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_samples < 1:
        print(f"error: --max-samples must be at least 1, got {args.max_samples}", file=sys.stderr)
        return 2
    try:
        if args.truth or (args.path / RESULTS_FILE).is_file():
            data = comparison_data(args)
        else:
            data = page_data(args.path, max_samples=args.max_samples)
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
