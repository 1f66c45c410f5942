"""Train the tiny model a few steps of each stage on a shard directory (CPU), as the demo does."""
from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from trainer.cli import run


def train_all_stages(shards: str | Path, out: str | Path, steps: int | Mapping[int, int] = 2, *,
                     base: str | Path | None = None, overrides: Sequence[str] = (),
                     stage_overrides: Mapping[int, Sequence[str]] | None = None,
                     log: Callable[[str], None] | None = None) -> dict[int, Path]:
    """Stages 1 -> 2 -> 3, each starting from the previous stage's exported model; returns each stage's export
    (a `LayerFlowPipeline.from_pretrained` folder).

    `steps`: optimizer steps of every stage, or per stage ({1: ..., 2: ..., 3: ...}). Stage 1 starts from `base`
    (a model folder, e.g. the tiny preset with a trained VAE) or, when None, a fresh tiny model. `overrides` are
    more `layerflow train` arguments for every stage, `stage_overrides` more for one stage (after them); `log`
    receives each stage's command line before it runs."""
    out = Path(out)
    exports: dict[int, Path] = {}
    for stage in (1, 2, 3):
        root = out / f"stage{stage}"
        stage_steps = steps[stage] if isinstance(steps, Mapping) else steps
        args = ["--stage", str(stage), "--tiny", f"--data.stream.shards={shards}",
                f"--trainer.max_steps={stage_steps}", f"--trainer.default_root_dir={root}",
                f"--trainer.logger.init_args.save_dir={root}", "--trainer.enable_progress_bar=false", *overrides,
                *(stage_overrides or {}).get(stage, ())]
        start = exports.get(stage - 1, base)
        if start is not None:
            args.append(f"--model.network.pretrained={start}")
        if log is not None:
            log(f"layerflow train {shlex.join(args)}")
        run(args)
        exports[stage] = root / "final"
    return exports
