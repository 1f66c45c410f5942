"""`layerflow edit VIDEO --background BG --out DIR`: the edit loop in one command.

1. decompose VIDEO into its layers (`layerflow generate --task decompose`) -> DIR/1_decomposed/
2. compose its foreground(s) onto BG, moved or faded as asked (`layerflow compose`) -> DIR/2_composed/
3. with --harmonise, the bg-conditioned task on the new background: foreground and blend generated for it
   (`layerflow generate --task bg_conditioned`) -> DIR/3_harmonised/
and DIR/edit.png: one row per shown frame, the columns input blend | decomposed fg (over a checkerboard) | its
alpha | new bg | composed blend [| harmonised fg | harmonised blend].

Every option that `layerflow edit` does not know goes to both generate runs (the model, its prompts, size, steps,
seed), so a run is the same as the generate and compose commands it replaces.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import LayeredClip
from layerflow.studio.clips import StudioInputError, read_sample_clip
from layerflow.studio.compose import ComposeError, Composition, compose, read_background
from layerflow.studio.compose_cli import parse_transform
from model.export import ExportError, ExportOptions, export_clip, over_checkerboard
from model.generate import GenerateError, parse_args, run
from model.quiet import quiet_weight_bars

EXAMPLES = """\
examples:
  layerflow edit walk.mp4 --background beach.png --out outputs/edit --fg-prompt "a dog" --bg-prompt "a park" \\
      --model-dir weights/layerflow --harmonise
  layerflow edit blend.mp4 --background other.mp4 --out outputs/edit --fg-transform 0:dx=6,scale=0.8 \\
      --config tiny --model-dir outputs/demo/train/RUN/export"""


@dataclass(frozen=True)
class EditResult:
    decomposed: Path
    composed: Path
    harmonised: Path | None
    picture: Path


DESCRIPTION = ("Decompose a video, compose its foreground onto another background, and optionally harmonise it with "
               "the bg-conditioned task. Other options (--config, --model-dir, --fg-prompt, --bg-prompt, --frames, "
               "--height, --width, --steps, --seed, ...) go to `layerflow generate`.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerflow edit", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path, help="the blended video to decompose: an mp4 or a folder of frames")
    parser.add_argument("--background", type=Path, required=True, help="the new background: an image or a video")
    parser.add_argument("--out", type=Path, required=True, help="where the three steps and edit.png go")
    parser.add_argument("--fg-transform", action="append", default=[], metavar="K:KEY=VALUE,...",
                        help="move, scale, retime or fade foreground K as `layerflow compose` does")
    parser.add_argument("--harmonise", action="store_true",
                        help="generate the foreground and blend again, conditioned on the new background")
    return parser


def _generate(task: str, flag: str, condition: Path, out: Path, generate_args: list[str]) -> Path:
    (folder,) = run(parse_args(["--task", task, flag, str(condition), "--out", str(out), *generate_args]))
    return folder


def edit(args: argparse.Namespace, generate_args: list[str]) -> EditResult:
    out = args.out
    options = ExportOptions(rgba_formats=("png",))
    # The composition's inputs are read first, so a wrong one stops the run before any sampling.
    composition = Composition(transforms=dict(parse_transform(t) for t in args.fg_transform),
                              background=read_background(args.background))
    decomposed = _generate("decompose", "--blend", args.video, out / "1_decomposed", generate_args)
    layers = read_sample_clip(decomposed)
    composed_clip = compose(layers, composition)
    composed = export_clip(composed_clip, out / "2_composed", options).folder
    harmonised = None
    if args.harmonise:
        harmonised = _generate("bg_conditioned", "--background", composed / "bg.mp4", out / "3_harmonised",
                               generate_args)
    clips = [layers, composed_clip] + ([read_sample_clip(harmonised)] if harmonised else [])
    picture = edit_picture(clips, out / "edit.png")
    return EditResult(decomposed, composed, harmonised, picture)


def edit_picture(clips: list[LayeredClip], path: Path, zoom: int = 4) -> Path:
    """edit.png from the decomposed, composed [and harmonised] clips: for the first, middle and last frame, the
    input blend (the decomposition's condition) | decomposed fg | alpha | new bg | composed blend, then the
    harmonised fg and blend; upscaled `zoom` times without smoothing."""
    from PIL import Image

    decomposed, composed, *harmonised = clips
    gap = np.full((decomposed.height, 2, 3), 255, np.uint8)
    rows = []
    for frame in sorted({0, decomposed.num_frames // 2, decomposed.num_frames - 1}):
        cells = [decomposed.blend[frame], over_checkerboard(decomposed.fg[frame], decomposed.alpha[frame]),
                 np.repeat(decomposed.alpha[frame][..., None], 3, axis=-1), composed.bg[frame], composed.blend[frame]]
        for clip in harmonised:
            cells += [over_checkerboard(clip.fg[frame], clip.alpha[frame]), clip.blend[frame]]
        rows.append(np.concatenate([part for cell in cells for part in (cell, gap)][:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    args, generate_args = build_parser().parse_known_args(argv)
    quiet_weight_bars()
    try:
        result = edit(args, generate_args)
    except (GenerateError, ComposeError, StudioInputError, ExportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"decomposed: {result.decomposed}\ncomposed:   {result.composed}")
    if result.harmonised:
        print(f"harmonised: {result.harmonised}")
    print(f"picture:    {result.picture}  (layerflow view {args.out} plays every step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
