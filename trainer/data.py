"""The training sample stream over our shards (webdataset), deterministic from (seed, rank, worker, position).

One webdataset pipeline per source group (`origin`): resampled shards -> tar samples -> that origin only ->
shuffle buffer. The groups are mixed by configured weights, then each raw sample is decoded, framed (a window of
`frames_per_layer` frames; images and stage-2 samples become one frame repeated, motion scale 1; videos get 0),
resized to cover the training size and cropped. Samples are batched and each micro-batch draws one task, packed
in that task's layout (`model.layout`). Prompts are dropped independently with `prompt_dropout`.

With a latent cache (`python -m trainer.precompute`, see `trainer.cache`) the same stream reads the cache's
shards, which mirror the data shards, and yields VAE latents and T5 embeddings instead of pixels.

Every random choice is seeded from (seed, rank, worker, position in the stream), so the stream is a pure function
of the configuration and the training step: resuming at step S skips the raw samples already consumed (tar reads
only, nothing is decoded) and continues with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import torch
import webdataset as wds
from safetensors.torch import load as load_tensors
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_engine.schema import LayeredClip, alpha_name, captioned_layer_names, fg_name
from data_engine.shards import MANIFEST_NAME, decode_sample, shard_urls
from data_engine.video_io import Geometry, cover_geometry, resize_crop
from model.layout import CONDITIONAL_TASKS, SequenceLayout, Task, is_static, motion_scale, task_spec
from model.text import indexed_prompts
from trainer.cache import TENSORS_MEMBER, LatentCache, cond_latents_name, data_parts
from trainer.config import DataConfig, TrainConfigError, stage_spec, task_weights
from trainer.seeding import stable_seed


@dataclass(frozen=True)
class SourceGroup:
    """The shards holding samples of one origin, and the origin's sampling weight."""

    origin: str
    urls: tuple[str, ...]
    weight: float


def source_groups(shards: str | Path, mix: dict[str, float] | None) -> list[SourceGroup]:
    """Group the shards of a directory by sample origin, from its manifest. Fails clearly on missing data."""
    urls = shard_urls(shards)
    manifest = Path(shards) / MANIFEST_NAME
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing; shard directories written by ShardSink have one")
    table = pq.read_table(manifest, columns=["shard", "origin"]).to_pylist()
    by_origin: dict[str, set[str]] = {}
    for row in table:
        by_origin.setdefault(row["origin"], set()).add(row["shard"])
    counts = {o: sum(r["origin"] == o for r in table) for o in by_origin}
    weights = dict(mix) if mix is not None else {o: float(n) for o, n in counts.items()}
    missing = [o for o, w in weights.items() if w > 0 and o not in by_origin]
    if missing:
        raise TrainConfigError(f"data.mix names origin(s) {missing} that {shards} does not hold; "
                               f"it holds {sorted(by_origin)}")
    by_name = {Path(u).name: u for u in urls}
    groups = [
        SourceGroup(o, tuple(by_name[s] for s in sorted(by_origin[o]) if s in by_name), float(w))
        for o, w in sorted(weights.items())
        if w > 0
    ]
    return [g for g in groups if g.urls]


def _fixed_worker_seed(rank: int, worker: int, group: int) -> int:
    return stable_seed(rank, worker, group)


def _closing_shards(urls: Iterator[dict[str, Any]], handler=wds.reraise_exception) -> Iterator[dict[str, Any]]:
    """webdataset's `url_opener`, but each shard is closed once its samples are read or the stream is dropped
    (webdataset 1.0 leaves its files to the garbage collector: a ResourceWarning per shard under `-W default`)."""
    for sample in urls:
        try:
            stream = wds.gopen(sample["url"])
        except Exception as exn:
            exn.args = exn.args + (sample["url"],)
            if handler(exn):
                continue
            break
        with stream:
            yield {**sample, "stream": stream}


def _tar_samples(urls: Iterator[dict[str, Any]], handler=wds.reraise_exception) -> Iterator[dict[str, Any]]:
    files = wds.tariterators.tar_file_expander(_closing_shards(urls, handler), handler=handler)
    return wds.tariterators.group_by_keys(files, handler=handler)


# `wds.tarfile_to_samples()` with the shards closed as they are done (`_closing_shards`).
tar_samples = wds.pipelinefilter(_tar_samples)


def _has_origin(origin: str, sample: dict[str, Any]) -> bool:
    return json.loads(sample["json"]).get("origin") == origin


def _mix(streams: Sequence[Iterator], weights: Sequence[float], rng: random.Random) -> Iterator:
    """Pick the next sample's group by weight (webdataset's RandomMix, but from a seeded generator)."""
    iters = [iter(s) for s in streams]
    indices = range(len(iters))
    while True:
        yield next(iters[rng.choices(indices, weights=weights)[0]])


def pick_frames(num_frames: int, want: int, static: bool, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one training sample: a random window, or one random frame repeated (static)."""
    if static:
        return np.full(want, rng.integers(num_frames))
    if num_frames >= want:
        start = rng.integers(num_frames - want + 1)
        return np.arange(start, start + want)
    # Shorter clips are stretched over the window (frames repeat) rather than dropped.
    return np.linspace(0, num_frames - 1, want).round().astype(int)


def at_random_offset(geo: Geometry, rng: np.random.Generator) -> Geometry:
    """The same scaling, cropped at a random place."""
    return replace(geo, top=int(rng.integers(geo.scaled_h - geo.height + 1)),
                   left=int(rng.integers(geo.scaled_w - geo.width + 1)))


def frame_clip(clip: LayeredClip, cfg: DataConfig, static_videos: bool, rng: np.random.Generator,
               random_crop: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """A decoded clip as training layers at the configured frames and size, and its motion-LoRA scale."""
    static = is_static(clip.kind, static_videos)
    idx = pick_frames(clip.num_frames, cfg.frames_per_layer, static, rng)
    geo = cover_geometry(clip.height, clip.width, cfg.height, cfg.width)
    if random_crop and cfg.crop == "random":
        # One draw of the sample's generator seeds the offsets: a seed keeps drawing the samples (crops, then
        # prompt dropout) it always has.
        geo = at_random_offset(geo, np.random.default_rng(int(rng.integers(2**31))))
    # One geometry for all the layers: they stay aligned.
    return {name: resize_crop(clip.layer(name)[idx], geo) for name in clip.layer_names}, motion_scale(static)


def prompt_keep(rng: np.random.Generator, p_drop: float, num_foregrounds: int = 1) -> dict[str, bool]:
    return {layer: bool(rng.random() >= p_drop) for layer in captioned_layer_names(num_foregrounds)}


def sample_given(rng: random.Random, num_foregrounds: int) -> tuple[str, ...]:
    """A uniform non-empty proper subset of a clip's parts (each foreground's fg and alpha together, the bg,
    the blend): the layers a `Task.GIVEN` batch is given."""
    parts = [(fg_name(k), alpha_name(k)) for k in range(num_foregrounds)] + [("bg",), ("blend",)]
    mask = rng.randrange(1, 2 ** len(parts) - 1)
    return tuple(layer for i, part in enumerate(parts) if mask >> i & 1 for layer in part)


def sample_task(rng: random.Random, weights: dict[Task, float]) -> Task:
    tasks = list(weights)
    return rng.choices(tasks, weights=[weights[t] for t in tasks])[0]


def collate(examples: list[dict[str, Any]], task: Task | str, frames_per_layer: int,
            given: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Examples of one micro-batch (all with the same number K of foregrounds) packed in `task`'s layout
    (`Task.GIVEN`: the layers `given`).

    video [B, T, 3, H, W] in [-1, 1] (or pre-encoded latents [B, T', C, h, w] and T5 embeddings); prompts of
    all captioned layers (fg, bg, blend, fg_1 ...) with prompt_keep [B, K + 2]: the module keeps the ones its
    model reads.
    """
    counts = {e.get("num_foregrounds", 1) for e in examples}
    if len(counts) != 1:
        raise ValueError(f"a micro-batch mixes clips with {sorted(counts)} foregrounds; batches are grouped by K")
    count = counts.pop()
    spec = task_spec(task, count, given)
    task = spec.task
    out: dict[str, Any] = {
        "task": task.value,
        "num_foregrounds": count,
        "given": list(spec.conditions),
        "frames_per_layer": frames_per_layer,
        "keys": [e["key"] for e in examples],
        "origins": [e["origin"] for e in examples],
        "motion_scale": torch.tensor([e["motion_scale"] for e in examples], dtype=torch.float32),
        "prompt_keep": torch.tensor([[e["keep"][layer] for layer in spec.captioned] for e in examples]),
    }
    conditional = bool(spec.conditions)
    if "latents" in examples[0]:
        if task is Task.GIVEN:
            raise ValueError("the latent cache holds the paper's four tasks; train task 'given' (other subsets "
                             "of given layers) from pixels (--data.stream.use_cache=false)")
        which = "latents_dup" if spec.duplicate_first_frame else "latents"
        out["latents"] = torch.stack([e[which] for e in examples])
        if conditional:
            out["cond_latents"] = torch.stack([e[cond_latents_name(task)] for e in examples])
        out["prompt_embeds"] = torch.stack([e["prompt_embeds"] for e in examples])
    else:
        layout = SequenceLayout(spec, frames_per_layer)
        out["video"] = torch.stack([layout.pack(e["layers"]) for e in examples])
        if conditional:  # what the pipeline encodes for the conditions: `SequenceLayout.pack_conditions`
            out["cond_video"] = torch.stack([layout.pack_conditions(e["layers"]) for e in examples])
        out["prompts"] = [indexed_prompts(e["captions"], spec.captioned) for e in examples]
    return out


class TrainStream(IterableDataset):
    """This rank's batches; each DataLoader worker produces every `num_workers`-th batch of the rank's stream."""

    def __init__(
        self,
        cfg: DataConfig,
        groups: Sequence[SourceGroup],
        *,
        static_videos: bool,
        rank: int = 0,
        start_batch: int = 0,
        num_batches: int = 1 << 40,
        decode=None,
    ) -> None:
        super().__init__()
        self.cfg, self.groups = cfg, list(groups)
        self.static_videos = static_videos
        self.rank, self.start_batch, self.num_batches = rank, start_batch, num_batches
        self.tasks = task_weights(cfg.tasks)
        self.decode = decode or partial(decode_example, cfg=cfg, static_videos=static_videos)

    def _group_pipeline(self, index: int, group: SourceGroup, worker: int) -> wds.DataPipeline:
        seed = self.cfg.seed
        return wds.DataPipeline(
            wds.ResampledShards(list(group.urls), seed=seed, deterministic=True,
                                worker_seed=partial(_fixed_worker_seed, self.rank, worker, index)),
            tar_samples(),
            wds.select(partial(_has_origin, group.origin)),
            wds.shuffle(self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer,
                        rng=random.Random(stable_seed(seed, self.rank, worker, index, "shuffle"))),
        )

    def _raw(self, worker: int) -> Iterator[dict[str, Any]]:
        """This worker's raw samples: the source groups' streams mixed by weight."""
        streams = [self._group_pipeline(i, g, worker) for i, g in enumerate(self.groups)]
        rng = random.Random(stable_seed(self.cfg.seed, self.rank, worker, "mix"))
        return _mix(streams, [g.weight for g in self.groups], rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.cfg.batch_size
        # Batch s of this rank comes from worker s % workers as its (s // workers)-th batch (the DataLoader
        # reads workers round-robin), so worker w resumes after the batches s < start_batch it owned.
        first = -(-(self.start_batch - worker) // workers) if self.start_batch > worker else 0
        mine = -(-(self.start_batch + self.num_batches - worker) // workers) - first
        if mine <= 0:
            return
        raw = itertools.islice(self._raw(worker), first * b, None)
        yield from wds.DataPipeline(lambda: self._batches(raw, worker, first)).with_epoch(mine)

    def _batches(self, raw: Iterator[dict[str, Any]], worker: int, first: int) -> Iterator[dict[str, Any]]:
        b = self.cfg.batch_size
        examples = self._examples(raw, worker, first * b)
        # Examples wait by their number of foregrounds: a batch never mixes K, so none is padded. (A run resumed
        # mid-way starts these empty: with one K, as all paper data, it resumes exactly.)
        waiting: dict[int, list[dict[str, Any]]] = {}
        for batch_no in itertools.count(first):
            while True:
                example = next(examples)
                count = example["num_foregrounds"]
                waiting.setdefault(count, []).append(example)
                if len(waiting[count]) == b:
                    batch = waiting.pop(count)
                    break
            rng = random.Random(stable_seed(self.cfg.seed, self.rank, worker, batch_no, "task"))
            task = sample_task(rng, self.tasks)
            given = sample_given(rng, count) if task is Task.GIVEN else None
            yield collate(batch, task, self.cfg.frames_per_layer, given)

    def _examples(self, raw: Iterator[dict[str, Any]], worker: int, position: int) -> Iterator[dict[str, Any]]:
        for n in itertools.count(position):
            yield self.decode(next(raw), rng=np.random.default_rng([self.cfg.seed, self.rank, worker, n]))

    def first_examples(self, n: int) -> list[dict[str, Any]]:
        """The first `n` decoded examples of worker 0's stream (fixed inputs for validation)."""
        return list(itertools.islice(self._examples(self._raw(0), 0, 0), n))


def decode_example(raw: dict[str, Any], *, cfg: DataConfig, static_videos: bool, rng: np.random.Generator) -> dict:
    clip = decode_sample(raw)
    layers, scale = frame_clip(clip, cfg, static_videos, rng)
    return {
        "key": clip.key,
        "origin": clip.origin,
        "num_foregrounds": clip.num_foregrounds,
        "layers": layers,
        "captions": clip.captions.as_dict(),
        "motion_scale": scale,
        "keep": prompt_keep(rng, cfg.prompt_dropout, clip.num_foregrounds),
    }


def decode_cached(raw: dict[str, Any], *, static_videos: bool, prompt_dropout: float,
                  rng: np.random.Generator) -> dict[str, Any]:
    """A latent-cache entry (`trainer.cache`) as a training example, as `decode_example` decodes a data sample."""
    meta = json.loads(raw["json"])
    tensors = load_tensors(raw[TENSORS_MEMBER])
    return {
        "key": meta["key"],
        "origin": meta["origin"],
        "num_foregrounds": int(meta.get("num_foregrounds", 1)),
        "latents": tensors["latents"],
        "latents_dup": tensors["latents_dup"],
        **{name: tensors[name] for name in map(cond_latents_name, CONDITIONAL_TASKS)},
        "prompt_embeds": tensors["prompt_embeds"],
        "captions": meta["captions"],
        "motion_scale": motion_scale(is_static(meta["kind"], static_videos)),
        "keep": prompt_keep(rng, prompt_dropout, int(meta.get("num_foregrounds", 1))),
    }


class LayerFlowDataModule(L.LightningDataModule):
    """Shards -> this rank's micro-batches. The shard directory is checked here, before any model loads."""

    def __init__(self, stream: DataConfig | None = None, stage: int = 1) -> None:
        super().__init__()
        self.cfg = stream or DataConfig()
        self.cfg.validate()
        spec = stage_spec(stage)
        if spec.text_to_video and set(task_weights(self.cfg.tasks)) != {Task.GENERATE}:
            raise TrainConfigError(f"stage {stage} trains text-to-video on the blend of each sample, from the "
                                   f"generation layout; set data.stream.tasks={{generate: 1}}, not {self.cfg.tasks}")
        self.static_videos = spec.static_videos if self.cfg.static_videos is None else self.cfg.static_videos
        self.groups = source_groups(self.cfg.shards, self.cfg.mix)
        self.cache = LatentCache.open(self.cfg) if self.cfg.use_cache else None
        if self.cache is not None and Task.GIVEN in task_weights(self.cfg.tasks):
            raise TrainConfigError("data.tasks has 'given', which the latent cache does not hold (it holds the paper's "
                                   "four tasks); set --data.stream.use_cache=false or drop 'given'")
        if self.cache is not None:
            # Settings the latents depend on are checked here, the encoders once they are built (the module).
            self.cache.check(data_parts(self.cfg, self.static_videos))
            self.groups = [replace(g, urls=tuple(self.cache.urls(list(g.urls)))) for g in self.groups]

    def stream(self, rank: int = 0, start_batch: int = 0, num_batches: int = 1 << 40) -> TrainStream:
        decode = None
        if self.cache is not None:
            decode = partial(decode_cached, static_videos=self.static_videos, prompt_dropout=self.cfg.prompt_dropout)
        return TrainStream(self.cfg, self.groups, static_videos=self.static_videos, rank=rank,
                           start_batch=start_batch, num_batches=num_batches, decode=decode)

    def loader(self, rank: int = 0, start_batch: int = 0, num_batches: int = 1 << 40) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(self.stream(rank, start_batch, num_batches), batch_size=None, num_workers=workers,
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches
        start = trainer.global_step * accumulate
        total = trainer.max_steps * accumulate if trainer.max_steps > 0 else start + (1 << 40)
        return self.loader(trainer.global_rank, start, total - start)
