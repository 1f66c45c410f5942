"""Generation benchmark: a prompt set (JSON lines: id, fg, bg, blend, and fg_1, fg_2 ... for more foregrounds)
-> LayerFlowPipeline -> scores per layer."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_engine.schema import Captions
from evaluation.errors import EvaluationError
from evaluation.layered_io import LayerSet
from evaluation.results import EvalRun
from evaluation.runners.common import console, finish, keep_thumbs
from evaluation.suite import GENERATION_LAYERS, SuiteConfig, build_suite, score_samples

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "default.jsonl"


@dataclass(frozen=True)
class Prompt:
    id: str
    captions: Captions


@dataclass(frozen=True)
class GenerationConfig:
    prompts: Path = DEFAULT_PROMPTS
    pipeline: Path | None = None  # a LayerFlowPipeline folder; None with the tiny preset builds the tiny one
    num_frames: int = 16
    height: int = 480
    width: int = 720
    steps: int = 50
    seed: int = 0
    fps: float = 8.0
    limit: int | None = None


def read_prompts(path: str | Path) -> list[Prompt]:
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{p}: prompt file not found; "
                              "pass --prompts FILE.jsonl (one {id, fg, bg, blend} per line)")
    prompts = []
    for n, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvaluationError(f"{p}:{n}: not a JSON object ({exc.msg})") from exc
        missing = [k for k in ("id", "fg", "bg", "blend") if not str(row.get(k, "")).strip()]
        if missing:
            raise EvaluationError(f"{p}:{n}: missing {', '.join(missing)}; each line needs id, fg, bg and blend")
        try:
            captions = Captions.from_dict({k: str(v).strip() for k, v in row.items() if k != "id"})
        except ValueError as exc:
            raise EvaluationError(f"{p}:{n}: {exc}") from None
        prompts.append(Prompt(str(row["id"]), captions))
    if not prompts:
        raise EvaluationError(f"{p}: no prompts")
    if len({q.id for q in prompts}) != len(prompts):
        raise EvaluationError(f"{p}: prompt ids repeat; every id must be unique")
    return prompts


def pipeline_to_evaluate(folder: Path | None, preset: str, seed: int, task: str = "generate"):
    """The pipeline of a local folder, or (tiny preset, no folder) the tiny random one for `task`."""
    from model.pipeline import load_pipeline

    if folder is None and preset != "tiny":
        raise EvaluationError("the full preset needs --pipeline DIR (a LayerFlowPipeline folder with local weights)")
    return load_pipeline(folder, task, seed=seed)


def run_generation(cfg: GenerationConfig, out: str | Path,
                   suite_cfg: SuiteConfig = SuiteConfig()) -> tuple[EvalRun, dict[str, Path]]:
    import torch

    from model.export import ExportOptions, export_clip
    from model.layout import task_spec

    prompts = read_prompts(cfg.prompts)[: cfg.limit]
    pipe = pipeline_to_evaluate(cfg.pipeline, suite_cfg.preset, cfg.seed)
    suite = build_suite(suite_cfg, GENERATION_LAYERS)
    out = Path(out)

    def generated() -> Iterator[LayerSet]:
        for i, p in enumerate(prompts):
            spec = task_spec("generate", p.captions.num_foregrounds)  # K: the prompts file's foregrounds
            clip = pipe(captions=p.captions, task=spec, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                        num_inference_steps=cfg.steps, generator=torch.Generator().manual_seed(cfg.seed + i),
                        fps=cfg.fps).clips[0]
            export_clip(clip, out / "samples" / p.id, ExportOptions(rgba_formats=(), preview=False))
            yield LayerSet(p.id, {k: clip.layer(k) for k in clip.layer_names}, p.captions, clip.fps,
                           str(out / "samples" / p.id))

    thumbs: list[LayerSet] = []
    run = score_samples(keep_thumbs(generated(), thumbs), suite, GENERATION_LAYERS, "generation", total=len(prompts))
    run.meta.update(prompts=str(cfg.prompts), preset=suite_cfg.preset, seed=cfg.seed, steps=cfg.steps,
                    size=[cfg.num_frames, cfg.height, cfg.width])
    console.print(f"generated clips: {out / 'samples'}")
    return run, finish(run, out, thumbs)
