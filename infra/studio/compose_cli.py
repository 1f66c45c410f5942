"""`layerflow compose SAMPLE --out DIR [...]`: recompose a layered sample folder and write it as `generate` does."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerflow.studio.clips import StudioInputError, read_sample_clip
from layerflow.studio.compose import ComposeError, Composition, Transform, compose, read_background
from model.export import ExportError, ExportOptions, export_clip

EXAMPLES = """\
examples:
  layerflow compose outputs/generate/tiny/generate/sample_000 --out outputs/compose/moved \\
      --background sky.png --fg-transform 0:dx=12,dy=-4,scale=1.5,time=2,opacity=0.8
  layerflow compose SAMPLE_WITH_TWO_FOREGROUNDS --out swapped --order 1,0      # the back object in front"""

TRANSFORM_KEYS = {"dx": ("dx", float), "dy": ("dy", float), "scale": ("scale", float),
                  "time": ("time_offset", int), "opacity": ("opacity", float)}


def parse_transform(text: str) -> tuple[int, Transform]:
    """`K:dx=..,dy=..,scale=..,time=..,opacity=..` (any subset) -> (K, Transform)."""
    usage = f"--fg-transform {text!r}: write K:key=value,... with keys {', '.join(TRANSFORM_KEYS)}, e.g. 0:dx=8,scale=2"
    index, sep, body = text.partition(":")
    if not sep or not index.strip().isdigit():
        raise ComposeError(usage)
    values = {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in TRANSFORM_KEYS:
            raise ComposeError(usage)
        field_name, kind = TRANSFORM_KEYS[key.strip()]
        try:
            values[field_name] = kind(value)
        except ValueError as exc:
            raise ComposeError(f"{usage} ({key.strip()}={value!r} is not a number)") from exc
    return int(index), Transform(**values)


def parse_order(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError as exc:
        raise ComposeError(f"--order {text!r}: give foreground indices front first, e.g. 1,0") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerflow compose", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Recompose a layered sample folder (what `layerflow generate` writes): a new background, each "
                    "foreground moved, scaled, retimed and faded, a new depth order. Writes the layers and the blend "
                    "in generate's formats. Layers compose as straight colour over grey, premultiplied when "
                    "composing (see infra/studio/compose.py).")
    parser.add_argument("sample", type=Path, help="a layered sample folder (fg.mp4, alpha.mp4, bg.mp4, blend.mp4, ...)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the recomposed sample")
    parser.add_argument("--background", type=Path, help="a new background: an image (held) or a video")
    parser.add_argument("--fg-transform", action="append", default=[], metavar="K:KEY=VALUE,...",
                        help="foreground K's dx, dy (pixels), scale (about the frame centre), time (frames later), "
                             "opacity; repeat per foreground")
    parser.add_argument("--order", help="the new depth order as the input's foreground indices, front first: 1,0")
    parser.add_argument("--rgba-formats", default="png,webm,mov", help="RGBA files to write (png, webm, mov)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        transforms = dict(parse_transform(text) for text in args.fg_transform)
        composition = Composition(
            order=parse_order(args.order) if args.order else None, transforms=transforms,
            background=read_background(args.background) if args.background else None)
        options = ExportOptions(rgba_formats=tuple(filter(None, args.rgba_formats.split(","))))
        clip = compose(read_sample_clip(args.sample), composition)
        result = export_clip(clip, args.out, options)
    except (ComposeError, StudioInputError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"composed {clip.num_foregrounds} foreground(s) of {args.sample} -> {result.folder} "
          f"({len(result.files)} outputs: blend.mp4, fg_rgba/, preview.png, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
