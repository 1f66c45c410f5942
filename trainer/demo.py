"""Train the tiny model a few steps of each stage on a shard directory (CPU), as the demo does."""
from __future__ import annotations

from pathlib import Path

from trainer.cli import run


def train_all_stages(shards: str | Path, out: str | Path, steps: int = 2) -> dict[int, Path]:
    """Stages 1 -> 2 -> 3, each starting from the previous stage's exported model; returns each stage's export
    (a `LayerFlowPipeline.from_pretrained` folder)."""
    out = Path(out)
    exports: dict[int, Path] = {}
    for stage in (1, 2, 3):
        root = out / f"stage{stage}"
        args = ["--stage", str(stage), "--tiny", f"--data.stream.shards={shards}", f"--trainer.max_steps={steps}",
                f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
                "--trainer.enable_progress_bar=false"]
        if stage > 1:
            args.append(f"--model.network.pretrained={exports[stage - 1]}")
        run(args)
        exports[stage] = root / "final"
    return exports
