"""`layerflow dataset | weights` (or `python -m data_engine.cli`): build datasets and manage model weights.

    dataset  [--config FILE|NAME] [--input PATH|URI] [--out DIR] [--limit N] [--dry-run [--cluster YAML]]
             [--set KEY=VALUE]...
    weights  check | download NAME... | download --all
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

from data_engine.defaults import config_path, installed_configs

EXIT_USAGE = 2
DATASET_EXAMPLES = """examples:
  layerflow dataset --limit 4 --dry-run            # print inputs, resources and the stage plan; start nothing
  layerflow dataset --config perception_full --dry-run --cluster infra/ray/cluster.yaml   # GPU placement
  layerflow dataset --input /path/to/mp4s --out outputs/mine
  layerflow dataset --config synthetic_videos      # an installed config by name, or any YAML path
  layerflow dataset --config perception_full --input /path/to/mp4s --set stages.tag.num_gpus=0.5
"""
WEIGHTS_EXAMPLES = """examples:
  layerflow weights check                          # what is present under $LAYERFLOW_WEIGHTS
  layerflow weights download cogvideox-2b layerflow
  layerflow weights download --all                 # every model; --endpoint URL for a hub mirror
"""


def _dataset(args: argparse.Namespace, console: Console) -> int:
    from data_engine.engine.config import load_config
    from data_engine.engine.runner import run

    config = config_path("engine", args.config) if args.config else None
    cfg = load_config(config, args.set, input=args.input, out=args.out, limit=args.limit)
    if args.no_progress:
        import dataclasses

        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=False))
    run(cfg, dry_run=args.dry_run, console=console, cluster_file=args.cluster)
    return 0


def _weights(args: argparse.Namespace, console: Console) -> int:
    from data_engine import weights

    registry = weights.load_registry()
    if args.action == "check":
        missing_any = False
        for name, spec in sorted(registry.items()):
            try:
                missing = weights.missing_files(name)
                status = "present" if not missing else f"missing ({len(missing)} file(s), first: {missing[0]})"
            except weights.MissingWeightsError as exc:
                missing, status = [exc], f"unreadable ({exc})"
            missing_any |= bool(missing)
            print(f"{name}: {status}; expected at {weights.model_dir(name)}; hub id {spec.hub_id}")
        print(f"weights root: {weights.weights_root()} (set {weights.ENV_VAR} to change it)")
        return 1 if missing_any else 0
    from data_engine.weights_download import download

    names = sorted(registry) if args.all else args.names
    if not names:
        raise ValueError("weights download: name one or more models, or pass --all")
    for name in names:
        spec = weights.spec(name)
        console.print(f"downloading {name} ({spec.hub_id}) -> {weights.model_dir(name)}")
        download(name, endpoint=args.endpoint, report=console.print)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="layerflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dataset", help="build layered shards with the Ray data engine", epilog=DATASET_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--config", default=None, help="engine YAML, or an installed one by name: "
                   f"{', '.join(installed_configs('engine'))} (default: perception_tiny)")
    d.add_argument("--input", default=None, help="what to read: a config with one dataset source (mulan, "
                   "image_matting, video_matting, official, ...) reads it from PATH; any other config gets a videos "
                   "source (folder, glob, list file, file or URI) in place of its sources")
    d.add_argument("--out", default=None, help="output folder (run.out)")
    d.add_argument("--limit", type=int, default=None, help="process at most N inputs not yet done")
    d.add_argument("--dry-run", action="store_true", help="print the inputs, resources and stage plan; start nothing")
    d.add_argument("--cluster", default=None, metavar="CLUSTER_YAML",
                   help="with --dry-run: plan on the node types of a Ray cluster YAML (e.g. infra/ray/cluster.yaml) "
                        "and print where each GPU actor goes")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stages.split.num_cpus=0.5 (repeatable)")
    d.add_argument("--no-progress", action="store_true", help="no live display (the closing summary still prints)")
    w = sub.add_parser("weights", help="check or download model weights", epilog=WEIGHTS_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("action", choices=("check", "download"))
    w.add_argument("names", nargs="*", help="models to download (see `weights check`)")
    w.add_argument("--all", action="store_true", help="download every model in the registry")
    w.add_argument("--endpoint", default=None,
                   help="hub address, e.g. an internal mirror (default $HF_ENDPOINT or the hub)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    from data_engine.engine.config import ConfigError
    from data_engine.engine.resources import PlanError
    from data_engine.sources.base import SourceError
    from data_engine.weights_download import DownloadError

    try:
        return _dataset(args, console) if args.command == "dataset" else _weights(args, console)
    except (ConfigError, PlanError, SourceError, DownloadError, KeyError, ValueError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
