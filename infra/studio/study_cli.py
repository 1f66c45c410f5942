"""`layerflow study make|score`: write the user-study page for two runs; score the answers participants send back."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerflow.studio.clips import StudioInputError
from layerflow.studio.page import write_page
from layerflow.studio.study import read_answers, score_report, study_data

EXAMPLES = """\
examples:
  layerflow study make --a outputs/generate/ours --b outputs/generate/baseline --prompts prompts.txt --out study/
  layerflow study score study/answers/*.json --out study/report.md"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerflow study", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The paper's user study: a page showing two systems' outputs for the same prompts side by side "
                    "(sides randomised and recorded), and preference rates with 95 % intervals from the answers.")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the study page (index.html + assets/, file:// works)")
    make.add_argument("--a", type=Path, required=True, help="system A's output folder (sample folders)")
    make.add_argument("--b", type=Path, required=True, help="system B's output folder, same prompts")
    make.add_argument("--prompts", type=Path, help="a text file of blend prompts, one a line (default: all shared)")
    make.add_argument("--seed", type=int, default=0, help="draws the sides (recorded in the page's data)")
    make.add_argument("--out", type=Path, required=True, help="where to write the page")
    score = commands.add_parser("score", help="preference rates per question from answers-*.json")
    score.add_argument("answers", type=Path, nargs="+", help="the answers files participants saved")
    score.add_argument("--out", type=Path, help="also write the Markdown report here")
    return parser


def read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise StudioInputError(f"{path}: no such prompts file; give a text file with one blend prompt a line")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make":
            prompts = read_prompts(args.prompts) if args.prompts else None
            data = study_data(args.a, args.b, prompts, args.seed)
            index = write_page(data, args.out, script="study.js")
            (args.out / "answers").mkdir(exist_ok=True)
            print(f"wrote {index} ({len(data['items'])} item(s)); collect the answers files in {args.out / 'answers'}")
            return 0
        report = score_report([read_answers(path) for path in args.answers])
    except StudioInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report, end="")
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
