"""`layerflow precompute --stage N [--tiny] [--cache DIR] [overrides]` (or `python -m trainer.precompute`): encode
every sample once.

Reads the same config as `layerflow train` (so frames, size, stage framing and encoders match the run), frames
each sample deterministically (a window and a centred crop drawn from the sample key; images and stage 2 static),
and writes VAE latents and T5 embeddings to a latent cache (`trainer.cache`), by default `<shards>/latent_cache`,
which training then reads instead of the pixels. Errors are one line on stderr and exit status 2.

Examples:
  layerflow precompute --stage 3 --tiny             # outputs/dataset -> outputs/dataset/latent_cache
  layerflow precompute --stage 1 --cache /scratch/cache --data.stream.shards=DIR
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from safetensors.torch import save as save_tensors

from data_engine.shards import decode_sample, shard_urls
from trainer.cache import (
    CACHE_FORMAT,
    CACHE_META,
    TENSORS_MEMBER,
    config_hash,
    data_parts,
    encode_examples,
    encoder_parts,
    resolve_cache_dir,
)
from trainer.config import TrainConfigError
from trainer.data import frame_clip, tar_samples
from trainer.seeding import stable_seed


def _groups(samples, size: int):
    group = []
    for sample in samples:
        group.append(sample)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def precompute(module, datamodule, cache_dir: str | Path | None = None, encode_batch: int = 16) -> Path:
    """Encode the datamodule's shards with the module's (built) VAE and T5 into a cache folder; returns it.
    `encode_batch` samples go through the encoders together (a sample's tensors do not depend on the others)."""
    cfg = datamodule.cfg
    root = Path(cache_dir) if cache_dir else resolve_cache_dir(cfg)
    parts = {**data_parts(cfg, datamodule.static_videos),
             **encoder_parts(module.vae, module.text_encoder, module.text_tokens)}
    # The crop is centred; the frame window comes from the key, so a cache is the same however often it is made.
    framing = replace(cfg, crop="center")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = []
    for url in shard_urls(cfg.shards):
        names.append(Path(url).name)
        with wds.TarWriter(str(tmp / Path(url).name)) as sink:
            for group in _groups(wds.DataPipeline(wds.SimpleShardList([url]), tar_samples()),
                                 encode_batch):
                clips = [decode_sample(raw) for raw in group]
                examples = []
                for clip in clips:
                    rng = np.random.default_rng(stable_seed(cfg.seed, clip.key, "frames"))
                    layers, _ = frame_clip(clip, framing, datamodule.static_videos, rng, random_crop=False)
                    generator = torch.Generator().manual_seed(stable_seed(cfg.seed, clip.key, "vae"))
                    examples.append((layers, clip.captions.as_dict(), generator))
                by_k: dict[int, list[int]] = {}
                for i, clip in enumerate(clips):
                    by_k.setdefault(clip.num_foregrounds, []).append(i)
                tensors: dict[int, dict[str, torch.Tensor]] = {}
                for k, members in by_k.items():
                    encoded = encode_examples([examples[i] for i in members], cfg.frames_per_layer, module.vae,
                                              module.text_encoder, module.tokenizer, module.text_tokens, k)
                    tensors.update(zip(members, encoded))
                for i, (raw, clip) in enumerate(zip(group, clips)):
                    meta = {"key": clip.key, "origin": clip.origin, "kind": clip.kind,
                            "captions": clip.captions.as_dict(), "num_foregrounds": clip.num_foregrounds}
                    sink.write({"__key__": raw["__key__"], TENSORS_MEMBER: save_tensors(tensors[i]),
                                "json": json.dumps(meta).encode()})
    # cache.json last, then the rename: a reader never sees a half-written cache as complete.
    (tmp / CACHE_META).write_text(json.dumps({"format": CACHE_FORMAT, "config_hash": config_hash(parts),
                                              "parts": parts, "shards": names}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> int:
    from trainer.cli import first_line, run

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cache", default=None)
    ours, rest = pre.parse_known_args(argv)
    try:
        # The cache is being (re)made: the run must not read, or refuse, an old one.
        cli = run([*rest, "--data.stream.use_cache=false"], fit=False)
        cli.model.configure_model()
        root = precompute(cli.model, cli.datamodule, ours.cache or resolve_cache_dir(cli.datamodule.cfg))
    except (TrainConfigError, FileNotFoundError, argparse.ArgumentError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
    print(f"latent cache written: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
