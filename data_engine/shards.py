"""The shard sink (writer) and reader for layered clips.

Layout of an output directory:

    shard-000000.tar            complete WebDataset shard (written as .tar.tmp, renamed when closed)
    shard-000000.parquet        the shard's rows (one per sample); written before the rename
    shard-000000_stats.json     per-shard stats; written before the rename
    manifest.parquet            all rows of all complete shards (rebuilt on close)
    index.wids.json             wids index (`wids-shard-index-v1`, urls relative to this folder)
    stats.json                  run-level stats
    quarantine.parquet          inputs that failed, with stage and reason (rebuilt on close from quarantine.jsonl;
                                an engine input whose latest record is from a later run than a row drops the row)

A `.tar` exists only once its sidecars are on disk, so "the .tar exists" is the completion record: on reopen the
sink deletes any `.tmp` left by a crash and treats the keys in complete shards as done (writes are idempotent by key).
"""
from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_engine.pixels import Untagged
from data_engine.schema import Captions, LayeredClip, is_alpha, layer_names
from data_engine.video_io import (
    DEFAULT_CRF,
    OWN_UNTAGGED_ALPHA,
    decode_png,
    decode_video,
    encode_alpha,
    encode_png,
    encode_video,
)

SHARD_PREFIX = "shard"
TMP_SUFFIX = ".tmp"
INDEX_NAME = "index.wids.json"
MANIFEST_NAME = "manifest.parquet"
QUARANTINE_NAME = "quarantine.parquet"
QUARANTINE_LOG = "quarantine.jsonl"
RUN_STATS_NAME = "stats.json"
WRITE_BUFFER = 16 << 20
# The newest `layer_format` this reader knows: 1 (absent: fg, alpha, bg, blend), 2 (adds fg_k, alpha_k members).
LAYER_FORMAT = 2


def member_names(kind: str, num_foregrounds: int = 1) -> tuple[str, ...]:
    """The members of a sample in layer order, then json: `{layer}.mp4` (`.png` for images) per layer."""
    ext = "png" if kind == "image" else "mp4"
    return tuple(f"{name}.{ext}" for name in layer_names(num_foregrounds)) + ("json",)


MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("kind", pa.string()),
        ("origin", pa.string()),
        ("source_id", pa.string()),
        ("frame_start", pa.int64()),
        ("frame_end", pa.int64()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("num_foregrounds", pa.int64()),
        ("caption_fg", pa.string()),
        ("caption_bg", pa.string()),
        ("caption_blend", pa.string()),
        ("captions_more_fg", pa.string()),  # JSON list: the prompts of fg_1 .. fg_K-1
        ("alpha_lossless", pa.bool_()),
        ("scores", pa.string()),
        ("engine_version", pa.string()),
        ("bytes", pa.int64()),
    ]
)
# The values of a one-foreground sample, for the columns that shard manifests written before them lack.
MANIFEST_DEFAULTS = {"num_foregrounds": 1, "captions_more_fg": "[]"}
QUARANTINE_SCHEMA = pa.schema(
    [
        ("input", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("attempts", pa.int64()),
        ("time", pa.float64()),
    ]
)


class ShardFormatError(ValueError):
    """A sample or directory that does not follow the shard format; the message names it."""


@dataclass(frozen=True)
class EncodeOptions:
    crf: int = DEFAULT_CRF
    lossless_alpha: bool = False


def encode_clip(clip: LayeredClip, options: EncodeOptions = EncodeOptions()) -> tuple[dict[str, Any], dict[str, Any]]:
    """A LayeredClip as (its json metadata, the WebDataset sample dict: bytes members, keys without dots).

    The metadata travels beside the sample so the sink never parses json it was handed, nor needs the pixels.
    Every foreground k >= 1 is encoded exactly as foreground 0 (fg_k as fg, alpha_k as alpha)."""
    meta = clip.metadata()
    meta["alpha_lossless"] = options.lossless_alpha if clip.kind == "video" else True
    sample: dict[str, Any] = {"__key__": clip.key}
    for name in clip.layer_names:
        if clip.kind == "image":
            sample[f"{name}.png"] = encode_png(clip.layer(name)[0])
        elif is_alpha(name):
            sample[f"{name}.mp4"] = encode_alpha(clip.layer(name), clip.fps, lossless=options.lossless_alpha)
        else:
            sample[f"{name}.mp4"] = encode_video(clip.layer(name), clip.fps, crf=options.crf)
    sample["json"] = json.dumps(meta, sort_keys=True).encode()
    return meta, sample


def decode_sample(sample: dict[str, Any]) -> LayeredClip:
    """A raw WebDataset sample (bytes members, as plain `webdataset`/`wids` yield them) back to a LayeredClip."""
    key = sample.get("__key__", "<unknown>")
    raw_meta = sample.get("json") or sample.get(".json")
    if raw_meta is None:
        raise ShardFormatError(f"sample {key}: no json member")
    meta = json.loads(raw_meta) if isinstance(raw_meta, (bytes, str)) else raw_meta
    ext = "png" if meta.get("kind") == "image" else "mp4"
    count = _num_foregrounds(meta, key)
    layers: dict[str, np.ndarray] = {}
    for name in layer_names(count):
        member = sample.get(f"{name}.{ext}", sample.get(f".{name}.{ext}"))
        if member is None:
            raise ShardFormatError(f"sample {key}: member {name}.{ext} missing (its json says {count} foreground(s))")
        if isinstance(member, io.IOBase):
            member = member.read()
        grey = is_alpha(name)
        label = f"{key}.{name}.{ext}"
        if ext == "png":
            layers[name] = decode_png(member, grey=grey, name=label)[None]
        else:
            untagged = OWN_UNTAGGED_ALPHA if grey else Untagged()  # shards of engine 0.1.0 tag no alpha range
            layers[name] = decode_video(member, grey=grey, name=label, untagged=untagged)
    return LayeredClip.from_layers(meta, _crop_to_meta(layers, meta))


def _num_foregrounds(meta: dict[str, Any], key: str) -> int:
    """How many foregrounds a sample's json declares (1 when absent: a format-1 sample)."""
    version = meta.get("layer_format", 1)
    if not isinstance(version, int) or version > LAYER_FORMAT:
        raise ShardFormatError(f"sample {key}: layer_format {version!r} is newer than this reader's "
                               f"{LAYER_FORMAT}; update LayerFlow to read it")
    count = meta.get("num_foregrounds", 1)
    if not isinstance(count, int) or count < 1:
        raise ShardFormatError(f"sample {key}: num_foregrounds must be an integer >= 1, got {count!r}")
    return count


def _crop_to_meta(layers: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """H.264 needs even sizes; undo the encoder's edge padding for odd-sized clips."""
    h, w = meta.get("height"), meta.get("width")
    if h is None or w is None:
        return layers
    return {k: v[:, :h, :w] for k, v in layers.items()}


def manifest_row(meta: dict[str, Any], shard: str, nbytes: int) -> dict[str, Any]:
    """The manifest row of a sample from its json metadata (`encode_clip`)."""
    captions = meta["captions"]
    return {
        "key": meta["key"],
        "shard": shard,
        "kind": meta["kind"],
        "origin": meta["origin"],
        "source_id": meta["source_id"],
        "frame_start": int(meta["frame_range"][0]),
        "frame_end": int(meta["frame_range"][1]),
        "fps": float(meta["fps"]),
        "num_frames": int(meta["num_frames"]),
        "height": int(meta["height"]),
        "width": int(meta["width"]),
        "num_foregrounds": int(meta.get("num_foregrounds", 1)),
        "caption_fg": captions["fg"],
        "caption_bg": captions["bg"],
        "caption_blend": captions["blend"],
        "captions_more_fg": json.dumps(Captions.from_dict(captions).more_fg),
        "alpha_lossless": meta["alpha_lossless"],
        "scores": json.dumps(meta["scores"], sort_keys=True, default=float),
        "engine_version": meta["engine_version"],
        "bytes": int(nbytes),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    _atomic_write(path, buf.getvalue().to_pybytes())


def complete_shards(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob(f"{SHARD_PREFIX}-[0-9]*.tar"))


@dataclass
class _OpenShard:
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)


class ShardSink:
    """Writes LayeredClips into size-limited WebDataset shards, idempotent by sample key, crash-safe.

    Use as a context manager; `close()` finalises the manifest, index, run stats and quarantine table.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        maxcount: int = 1000,
        maxsize: float = 1e9,
        options: EncodeOptions = EncodeOptions(),
        durable: bool = True,
        run_id: str | None = None,
    ) -> None:
        """`durable=False` skips fsync of finished shards (faster on scratch disks; a power loss may then lose a
        shard that was already renamed). `run_id`: the engine run this sink writes for, kept with each quarantine
        row so a later run's outcome for the same input can supersede it (`finalize`)."""
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.durable = durable
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.maxcount, self.maxsize = maxcount, maxsize
        self._cleanup_partial()
        self.done_keys: set[str] = self._load_done_keys()
        self._current = _OpenShard()
        self._writer = None
        self._written_this_run = 0
        self._skipped_this_run = 0
        self._bytes_this_run = 0
        self._started = time.time()
        self.summary: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def _cleanup_partial(self) -> None:
        """Delete what a crash left: `.tmp` files and sidecars whose shard never got renamed."""
        for tmp in self.out_dir.glob(f"*{TMP_SUFFIX}"):
            tmp.unlink()
        for side in self.out_dir.glob(f"{SHARD_PREFIX}-[0-9]*.parquet"):
            if not side.with_suffix(".tar").exists():
                side.unlink()
                stats = side.with_name(side.stem + "_stats.json")
                if stats.exists():
                    stats.unlink()

    def _load_done_keys(self) -> set[str]:
        keys: set[str] = set()
        for shard in complete_shards(self.out_dir):
            side = shard.with_suffix(".parquet")
            if side.exists():
                keys.update(pq.read_table(side, columns=["key"]).column("key").to_pylist())
        return keys

    def _next_shard_index(self) -> int:
        existing = [int(p.stem.split("-")[1]) for p in complete_shards(self.out_dir)]
        return max(existing, default=-1) + 1

    def _open_writer(self):
        # webdataset imports torch (seconds); only a process that writes pays for it.
        import webdataset as wds

        pattern = str(self.out_dir / f"{SHARD_PREFIX}-%06d.tar{TMP_SUFFIX}")
        return wds.ShardWriter(
            pattern,
            maxcount=self.maxcount,
            maxsize=self.maxsize,
            post=self._finish_shard,
            start_shard=self._next_shard_index(),
            verbose=0,
            mtime=0.0,
            opener=self._open_stream,
        )

    def _open_stream(self, name: str):
        # tarfile's stream mode writes 10 KiB blocks; a large buffer turns them into few syscalls.
        self._stream = open(name, "wb", buffering=WRITE_BUFFER)
        return self._stream

    def _finish_shard(self, tmp_name: str) -> None:
        # webdataset closes the tar stream but not a file its opener gave it: unflushed, the shard would be sized
        # and renamed complete with its last samples still in this process's buffer (empty, after a kill).
        self._stream.close()
        tmp = Path(tmp_name)
        final = tmp.with_name(tmp.name[: -len(TMP_SUFFIX)])
        rows, self._current = self._current.rows, _OpenShard()
        if not rows:
            tmp.unlink(missing_ok=True)
            return
        for row in rows:
            row["shard"] = final.name
        _write_parquet_atomic(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), final.with_suffix(".parquet"))
        stats = shard_stats(rows, final.name, tmp.stat().st_size)
        _atomic_write(final.with_name(final.stem + "_stats.json"), json.dumps(stats, indent=1).encode())
        if self.durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        self.done_keys.update(r["key"] for r in rows)

    # -- writing ---------------------------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """True when the key is in a complete shard or in the shard being written."""
        return key in self.done_keys or key in self._current.keys

    def write(self, clip: LayeredClip) -> bool:
        """Encode and write one clip; returns False (and writes nothing) when its key is already in the output."""
        if self.has(clip.key):
            self._skipped_this_run += 1
            return False
        return self.write_encoded(*encode_clip(clip, self.options))

    def write_encoded(self, meta: dict[str, Any], sample: dict[str, Any]) -> bool:
        """Write a sample already encoded by `encode_clip` (encoding can then run in parallel workers, and only
        its metadata and bytes travel to the writer)."""
        key = meta["key"]
        if self.has(key):
            self._skipped_this_run += 1
            return False
        if self._writer is None:
            self._writer = self._open_writer()
        nbytes = sum(len(v) for k, v in sample.items() if not k.startswith("__"))
        # The writer may roll over to a new shard before this sample, which flushes the rows collected so far.
        self._writer.write(sample)
        self._current.rows.append(manifest_row(meta, "", nbytes))
        self._current.keys.add(key)
        self._written_this_run += 1
        self._bytes_this_run += nbytes
        return True

    def quarantine(self, input_id: str, stage: str, error: BaseException | str, attempts: int = 1, *,
                   engine_input: str | None = None) -> None:
        """Record a failed input (appended and flushed at once, so a crash loses no record). `input_id` is what
        the table shows (an input, or one clip of it); `engine_input` the engine's id of the input it came from."""
        error_type = type(error).__name__ if isinstance(error, BaseException) else "Rejected"
        row = {
            "input": str(input_id),
            "stage": stage,
            "error_type": error_type,
            "message": str(error).splitlines()[0] if str(error) else error_type,
            "attempts": int(attempts),
            "time": time.time(),
        }
        if engine_input is not None:
            row |= {"engine_input": engine_input, "run": self.run_id}
        with open(self.out_dir / QUARANTINE_LOG, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish_shard(self) -> None:
        """Complete the open shard (its keys join `done_keys`) without rebuilding the directory-level files."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self, settled: dict[str, str | None] | None = None) -> dict[str, Any]:
        """Finish the open shard and rebuild the directory-level files; returns the run stats. Idempotent.
        `settled`: {engine input: the run of its latest record} (see `finalize`)."""
        if self.summary is not None:
            return self.summary
        self.finish_shard()
        self.summary = finalize(self.out_dir, settled=settled, run_info={
            "written_this_run": self._written_this_run,
            "skipped_existing_this_run": self._skipped_this_run,
            "bytes_this_run": self._bytes_this_run,
            "seconds_this_run": round(time.time() - self._started, 3),
        })
        return self.summary

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            # Leave the partial shard as .tmp: the next run deletes it and rewrites its samples.
            self._writer.tarstream.close()
            self._writer = None


def shard_stats(rows: list[dict[str, Any]], shard: str, nbytes: int) -> dict[str, Any]:
    return {
        "shard": shard,
        "samples": len(rows),
        "bytes": int(nbytes),
        "frames": int(sum(r["num_frames"] for r in rows)),
        "kinds": dict(Counter(r["kind"] for r in rows)),
        "origins": dict(Counter(r["origin"] for r in rows)),
    }


def finalize(out_dir: str | Path, run_info: dict[str, Any] | None = None,
             settled: dict[str, str | None] | None = None) -> dict[str, Any]:
    """(Re)build manifest, wids index, quarantine table and run stats from the complete shards on disk.

    `settled` maps an engine input to the run that wrote its latest completion record: that run's outcome is the
    input's, so its quarantine rows from other runs (an input retried and fixed, or redone after a crash) are
    dropped. The stats count what the tables then hold."""
    out = Path(out_dir)
    shards = complete_shards(out)
    tables = [_conform_manifest(pq.read_table(s.with_suffix(".parquet"))) for s in shards]
    manifest = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    _write_parquet_atomic(manifest, out / MANIFEST_NAME)
    shardlist = []
    for s, t in zip(shards, tables):
        shardlist.append({"url": s.name, "nsamples": t.num_rows, "filesize": s.stat().st_size})
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": out.name, "shardlist": shardlist}
    _atomic_write(out / INDEX_NAME, json.dumps(index, indent=1).encode())
    quarantine_rows = _read_quarantine_log(out, settled or {})
    _write_parquet_atomic(pa.Table.from_pylist(quarantine_rows, schema=QUARANTINE_SCHEMA), out / QUARANTINE_NAME)
    rows = manifest.to_pylist()
    stats = {
        "samples": len(rows),
        "shards": len(shards),
        "bytes": int(sum(s["filesize"] for s in shardlist)),
        "frames": int(sum(r["num_frames"] for r in rows)),
        "kinds": dict(Counter(r["kind"] for r in rows)),
        "origins": dict(Counter(r["origin"] for r in rows)),
        "quarantined": len(quarantine_rows),
        "quarantined_by_stage": dict(Counter(r["stage"] for r in quarantine_rows)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if run_info:
        stats["last_run"] = run_info
    _atomic_write(out / RUN_STATS_NAME, json.dumps(stats, indent=1).encode())
    return stats


def _conform_manifest(table: pa.Table) -> pa.Table:
    """A shard's manifest rows in `MANIFEST_SCHEMA`: a folder may hold shards written before the newest columns,
    and one manifest must still concatenate them all."""
    for name, value in MANIFEST_DEFAULTS.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, MANIFEST_SCHEMA.field(name).type))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def _read_quarantine_log(out: Path, settled: dict[str, str | None]) -> list[dict[str, Any]]:
    """Latest record per (input, stage), less the rows a later run settled (`finalize`); a half-written last
    line from a crash is ignored."""
    log = out / QUARANTINE_LOG
    if not log.exists():
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        engine_input = row.get("engine_input")
        if engine_input in settled and row.get("run") != settled[engine_input]:
            continue
        latest[(row["input"], row["stage"])] = row
    return list(latest.values())


# -- reading -----------------------------------------------------------------------------------------------------------
def shard_urls(path: str | Path) -> list[str]:
    """Complete shards of a directory (or a single .tar). Raises a clear error when there are none."""
    p = Path(path)
    if p.is_file() and p.suffix == ".tar":
        return [str(p)]
    if not p.exists():
        raise FileNotFoundError(f"shard directory {p} does not exist; build it with `make dataset` first")
    urls = [str(s) for s in complete_shards(p)]
    if not urls:
        raise FileNotFoundError(f"no complete shards (shard-*.tar) in {p}; build them with `make dataset` first")
    return urls


def iter_raw_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Raw samples (bytes members) with plain webdataset, in shard order."""
    import webdataset as wds

    yield from wds.WebDataset(shard_urls(path), shardshuffle=False, empty_check=False)


def read_clips(path: str | Path) -> Iterator[LayeredClip]:
    for sample in iter_raw_samples(path):
        yield decode_sample(sample)
