"""`layerflow generate` (or `python -m model.generate`): layered video generation, conditional generation and
decomposition from the shell.

Prompts come from flags or a JSON/YAML file; conditions from videos (mp4) or folders of frames, or from a
folder in the official sample layout (`<seq>/fg, mask, bg, bl` + `meta*.json` prompts), which then also
supplies the prompts. Every result is written by `model.export` under `--out/<name>/`.

Examples:
  layerflow generate --config tiny                   # the tiny stage-3 model that `layerflow train --tiny` exported
  layerflow generate --preset tiny --fg-prompt "a dog" --bg-prompt "a park" --blend-prompt "a dog in a park"
  layerflow generate --preset tiny --task fg_conditioned --sample ../shared/samples/layerflow_official/DAVIS/480p/dog
  layerflow generate --model-dir weights/layerflow-fg2bg --task fg_conditioned --foreground fg.mp4 --alpha mask/
  layerflow generate --foregrounds 2 --fg-prompt "a red disc" --fg-prompt "a blue ring" --bg-prompt "a beach"
  layerflow generate --task decompose --foregrounds 2 --blend blend.mp4 --fg-prompt "a dog" --fg-prompt "a ball"
  layerflow generate --task given --foregrounds 2 --background bg.mp4 --foreground fg.mp4 --alpha mask/ \
      --fg-prompt "a dog" --fg-prompt "a ball"
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from data_engine.defaults import config_path
from data_engine.official_layout import OfficialLayoutError, find_sequences, read_sequence
from data_engine.schema import Captions, LayeredClip, fg_name, is_alpha
from data_engine.video_io import cover_geometry, decode_video, read_frame_folder, resize_crop
from model.export import RGBA_FORMATS, ExportOptions, export_clip
from model.layout import LayoutError, TaskSpec, task_spec
from model.quiet import quiet_weight_bars


@dataclass(frozen=True)
class PresetDefaults:
    height: int
    width: int
    steps: int
    dtype: str


PRESET_DEFAULTS = {
    "tiny": PresetDefaults(height=32, width=48, steps=8, dtype="float32"),
    "cogvideox-2b": PresetDefaults(height=480, width=720, steps=50, dtype="bfloat16"),
}


class GenerateError(ValueError):
    """A bad command line or input file; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="layerflow generate",
        description="LayerFlow: generate layered videos (fg RGBA, bg, blend), conditioned on layers, or decompose.",
        epilog=__doc__[__doc__.index("Examples:"):], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML of defaults for these options, or an installed one by name "
                   "(e.g. tiny: the defaults of `make generate`)")
    p.add_argument("--task", default="generate",
                   help="generate | fg_conditioned | bg_conditioned | decompose | given (the layers passed)")
    p.add_argument("--foregrounds", type=int, default=1, metavar="K",
                   help="foreground layers, front first (1: the paper's layout)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESET_DEFAULTS), help="model size")
    p.add_argument("--model-dir", type=Path,
                   help="local model folder (vae/ text_encoder/ tokenizer/ transformer/); "
                   "none: the preset's random model")
    p.add_argument("--fg-prompt", action="append",
                   help="a foreground's prompt; repeat it for K foregrounds, front first")
    p.add_argument("--bg-prompt")
    p.add_argument("--blend-prompt")
    p.add_argument("--prompts", type=Path,
                   help="JSON/YAML file with fg/bg/blend prompts (or fg_prompt/bg_prompt/bl_prompt)")
    p.add_argument("--foreground", type=Path, help="fg condition: mp4 or folder of frames (over mid-grey)")
    p.add_argument("--alpha", type=Path, help="alpha condition: grey mp4 or folder of mask frames")
    p.add_argument("--background", type=Path, help="bg condition: mp4 or folder of frames")
    p.add_argument("--blend", type=Path, help="blend condition (decomposition input): mp4 or folder of frames")
    p.add_argument("--layer", action="append", default=[], metavar="NAME=PATH",
                   help="another given layer by name, e.g. fg_1=fg1.mp4 alpha_1=mask1/ (repeatable)")
    p.add_argument("--sample", type=Path, help="folder in the official sample layout; supplies conditions and prompts")
    p.add_argument("--out", type=Path, default=Path("outputs/generate"), help="output folder")
    p.add_argument("--steps", type=int, help="sampler steps (default: 50 for cogvideox-2b, 8 for tiny)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=16, help="frames per layer (multiple of 4)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--guidance", type=float, default=6.0, help="CFG weight (1 disables guidance)")
    p.add_argument("--guidance-schedule", default="dynamic", choices=("dynamic", "monotone", "constant"))
    p.add_argument("--sampler", default=None, choices=("official", "dpm", "ddim"),
                   help="official: the official checkpoints' sampler (model/official_sampler.py); dpm, ddim: "
                   "diffusers' CogVideoXDPMScheduler, CogVideoXDDIMScheduler (default: the model folder's scheduler/, "
                   "official for a converted official checkpoint; else dpm)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"))
    p.add_argument("--vae-tiling", action="store_true", help="decode/encode the VAE in tiles (less memory)")
    p.add_argument("--vae-slicing", action="store_true", help="run the VAE one sample at a time")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks (full size on an H100: 50-step generation 52 s -> 45 s)")
    p.add_argument("--fuse-lora", action="store_true",
                   help="fold the Content LoRA into the base weights before sampling (same output up to float32 "
                   "rounding, one matmul per projection instead of three)")
    p.add_argument("--formats", default=",".join(RGBA_FORMATS),
                   help=f"RGBA outputs, comma-separated from {RGBA_FORMATS}")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.config is not None:
        config = config_path("generate", args.config)
        if not config.is_file():
            raise GenerateError(f"--config {config}: no such file")
        defaults = yaml.safe_load(config.read_text()) or {}
        if not isinstance(defaults, dict):
            raise GenerateError(f"--config {config}: expected a mapping of option: value")
        known = {a.dest for a in parser._actions}
        unknown = sorted(k for k in (k.replace("-", "_") for k in defaults) if k not in known)
        if unknown:
            raise GenerateError(f"--config {config}: unknown option(s) {unknown}")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in defaults.items()})
    args = parser.parse_args(argv)
    if isinstance(args.fg_prompt, str):  # a config's single prompt
        args.fg_prompt = [args.fg_prompt]
    if str(args.model_dir).lower() == "none":  # overrides a config's model-dir: the built-in preset
        args.model_dir = None
    for name in ("model_dir", "prompts", "foreground", "alpha", "background", "blend", "sample", "out"):
        value = getattr(args, name)
        if value is not None and not isinstance(value, Path):
            setattr(args, name, Path(value))
    return args


def load_prompts(path: Path) -> Captions:
    if not path.is_file():
        raise GenerateError(f"--prompts {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise GenerateError(f"--prompts {path}: not valid JSON/YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise GenerateError(f"--prompts {path}: expected a mapping with fg/bg/blend prompts")
    pick = lambda *keys: next((str(data[k]).strip() for k in keys if data.get(k)), "")  # noqa: E731
    more = {k: str(v).strip() for k, v in data.items() if k.startswith("fg_") and k != "fg_prompt"}
    try:
        extra = Captions.from_dict(more).more_fg
    except ValueError as exc:
        raise GenerateError(f"--prompts {path}: {exc}") from None
    return Captions(fg=pick("fg", "fg_prompt"), bg=pick("bg", "bg_prompt"), blend=pick("blend", "bl_prompt", "prompt"),
                    more_fg=extra)


def layer_flags(items: list[str]) -> dict[str, Path]:
    """--layer NAME=PATH flags as {layer: path}."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise GenerateError(f"--layer {item!r}: expected NAME=PATH, e.g. fg_1=fg1.mp4")
        out[name.strip()] = Path(path.strip())
    return out


def read_frames(path: Path, grey: bool) -> np.ndarray:
    """A video file or a folder of frames -> uint8 [T, H, W, 3] (grey: [T, H, W])."""
    if path.is_dir():
        return read_frame_folder(path, grey=grey)
    if not path.exists():
        raise GenerateError(f"{path}: no such file or folder")
    return decode_video(path, grey=grey)


def fit(frames: np.ndarray, count: int, height: int, width: int, name: str) -> np.ndarray:
    """The first `count` frames, resized to cover height x width and centre-cropped (as the official loader)."""
    if frames.shape[0] < count:
        raise GenerateError(f"{name} has {frames.shape[0]} frames; --frames {count} needs at least {count}")
    return resize_crop(frames[:count], cover_geometry(frames.shape[1], frames.shape[2], height, width))


def load_samples(root: Path) -> list[LayeredClip]:
    try:
        sequences = find_sequences(root)
        if not sequences:
            raise GenerateError(f"--sample {root}: no sequence with fg/ mask/ bg/ bl/ (or JPEGImages/ mask/) found")
        return [read_sequence(seq) for seq in sequences]
    except OfficialLayoutError as exc:
        raise GenerateError(f"--sample: {exc}") from exc


# The flag of each condition layer of the paper's K = 1 clip (other layers: --layer NAME=PATH).
CONDITION_FLAGS: dict[str, str] = {"fg": "foreground", "alpha": "alpha", "bg": "background", "blend": "blend"}


@dataclass
class Job:
    name: str
    captions: Captions
    conditions: dict[str, np.ndarray]


def layer_flag(layer: str) -> str:
    """The flag that gives `layer`: --foreground, --alpha, --background, --blend, or --layer NAME=PATH."""
    return f"--{CONDITION_FLAGS[layer]}" if layer in CONDITION_FLAGS else f"--layer {layer}=PATH"


def given_layers(args: argparse.Namespace) -> dict[str, Path]:
    """Every layer the command line gives: --foreground/--alpha/--background/--blend and --layer NAME=PATH."""
    given = {layer: getattr(args, flag) for layer, flag in CONDITION_FLAGS.items() if getattr(args, flag) is not None}
    for name, path in layer_flags(args.layer).items():
        if name in given:
            raise GenerateError(f"layer {name} given twice (--layer {name}= and --{CONDITION_FLAGS.get(name, name)})")
        given[name] = path
    return given


def build_jobs(args: argparse.Namespace, spec: TaskSpec) -> list[Job]:
    flag_captions = load_prompts(args.prompts) if args.prompts else Captions()
    fg_flags = list(args.fg_prompt or [])
    if len(fg_flags) > spec.num_foregrounds:
        raise GenerateError(f"{len(fg_flags)} --fg-prompt flags for {spec.num_foregrounds} foreground(s); "
                            f"pass --foregrounds {len(fg_flags)}")
    given = given_layers(args)
    stray = [layer_flag(k) for k in given if k not in spec.conditions]
    if stray:
        raise GenerateError(f"task {spec.task.value} does not take {', '.join(stray)}; it is given "
                            f"{', '.join(map(layer_flag, spec.conditions)) or 'nothing'}")

    def captions_for(base: Captions, label: str) -> Captions:
        def pick(layer: str, flag: str | None) -> str | None:
            """The flag's prompt (an explicit "" included), else the --prompts file's, else the sample's; None
            where none gives one."""
            sources = (flag_captions.as_dict(), base.as_dict())
            return flag if flag is not None else next((d[layer] for d in sources if d.get(layer)), None)
        fgs = [pick(fg_name(k), fg_flags[k] if k < len(fg_flags) else None) for k in range(spec.num_foregrounds)]
        unprompted = [fg_name(k) for k, prompt in enumerate(fgs) if prompt is None]
        # With several foregrounds a missing prompt leaves the model no way to tell which object a layer holds.
        if spec.num_foregrounds > 1 and unprompted:
            raise GenerateError(
                f"--foregrounds {spec.num_foregrounds} needs a prompt for each foreground, but {label} gives none "
                f"for {', '.join(unprompted)}; repeat --fg-prompt once per foreground, front first (--fg-prompt \"\" "
                "leaves one empty), or give them in --prompts")
        return Captions(fg=fgs[0] or "", bg=pick("bg", args.bg_prompt) or "",
                        blend=pick("blend", args.blend_prompt) or "", more_fg=tuple(p or "" for p in fgs[1:]))

    def conditions_for(source: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
        out = {}
        for layer in spec.conditions:
            if layer not in source:
                raise GenerateError(f"task {spec.task.value} needs {layer_flag(layer)} (or --sample)")
            out[layer] = fit(source[layer], args.frames, args.height, args.width, f"{label} {layer}")
        return out

    if args.sample is not None:
        jobs = []
        for clip in load_samples(args.sample):
            layers = {layer: clip.layer(layer) for layer in spec.conditions if layer in clip.layer_names}
            layers.update({k: read_frames(v, is_alpha(k)) for k, v in given.items()})
            name = clip.source_id and Path(clip.source_id).name or clip.key
            jobs.append(Job(name, captions_for(clip.captions, f"sample {name}"), conditions_for(layers, name)))
        return jobs
    files = {k: read_frames(v, is_alpha(k)) for k, v in given.items()}
    return [Job(spec.task.value, captions_for(Captions(), "the command line"), conditions_for(files, "input"))]


def pipeline_for(args: argparse.Namespace, spec: TaskSpec):
    """The pipeline the command line asks for, on its device with its speed options."""
    from model.pipeline import load_pipeline

    if args.model_dir is not None and not args.model_dir.exists():
        raise GenerateError(
            f"--model-dir {args.model_dir} does not exist; for the tiny path train it first (`make train "
            "STAGE=1|2|3 ARGS=--tiny`, in that order), or pass --model-dir none for the tiny random model")
    if args.model_dir is None and args.preset != "tiny":
        raise GenerateError(
            f"--preset {args.preset} needs --model-dir: a local folder with vae/ text_encoder/ tokenizer/ "
            "transformer/ (an official checkpoint becomes one with `layerflow convert sat2ours CKPT OUT --base "
            "COGVIDEOX_2B_DIR`)"
        )
    pipe = load_pipeline(args.model_dir, spec, torch_dtype=getattr(torch, args.dtype), sampler=args.sampler)
    pipe.to(args.device)
    if args.vae_tiling:
        pipe.vae.enable_tiling()
    if args.vae_slicing:
        pipe.vae.enable_slicing()
    if args.fuse_lora:  # before compiling, so the blocks compile once, already fused
        pipe.fuse_lora()
    if args.compile:
        pipe.transformer.compile_repeated_blocks()
    return pipe


def run(args: argparse.Namespace) -> list[Path]:
    try:
        given = tuple(given_layers(args)) if args.sample is None else None
        spec = task_spec(args.task, args.foregrounds, given if str(args.task) == "given" else None)
    except (LayoutError, ValueError) as exc:
        raise GenerateError(f"--task {args.task} --foregrounds {args.foregrounds}: {exc}") from exc
    defaults = PRESET_DEFAULTS[args.preset]
    args.height = args.height or defaults.height
    args.width = args.width or defaults.width
    args.steps = args.steps or defaults.steps
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or (defaults.dtype if args.device.startswith("cuda") else "float32")
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    options = ExportOptions(rgba_formats=formats)
    jobs = build_jobs(args, spec)
    pipe = pipeline_for(args, spec)
    written = []
    for job in jobs:
        start = time.perf_counter()
        generator = torch.Generator(device="cpu").manual_seed(args.seed)
        out = pipe(
            captions=job.captions,
            task=spec,
            layers=job.conditions,
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            guidance_schedule=args.guidance_schedule,
            generator=generator,
            fps=args.fps,
        )
        result = export_clip(out.clips[0], args.out / job.name, options)
        written.append(result.folder)
        seconds = time.perf_counter() - start
        print(f"[{spec.task.value}] {job.name}: {len(result.files)} outputs in {result.folder} ({seconds:.1f} s)")
        for key, path in result.files.items():
            print(f"  {key:<13} {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    quiet_weight_bars()
    try:
        run(parse_args(argv))
    except (ValueError, FileNotFoundError) as exc:  # our input errors are ValueErrors with one-line messages
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
