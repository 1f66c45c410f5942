"""Sources as the engine sees them: typed options per source type, the list of work items (one per input, with a
stable input id for resume), and the `source` stage that turns a work item into rows on a Ray actor.

Source types:
    videos            raw videos: `input` is a folder, glob, list file, file or URI (or a list of those)
    synthetic_videos  the built-in synthetic videos: blends written as mp4 into the work dir, true layers known
    frames            folders of frames as raw videos (e.g. the official samples' `bl/`), encoded into the work dir
    synthetic         synthetic layered clips, straight to shards
    official          the official sample layout (DAVIS / YouTube-VOS style folders)
    layered_images    folders of fg/alpha/bg(/blend) PNGs -> image samples
    copy_paste        fg+alpha of one clip over the bg of another, drawn from existing shards
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from data_engine.engine.config import ConfigError, EngineConfig, SourceSpec
from data_engine.sources.base import Source, SourceError
from data_engine.sources.synthetic import SyntheticConfig
from data_engine.sources.videos import (
    VIDEO_EXTENSIONS,
    list_frame_folders,
    list_videos,
    synthetic_video_name,
    write_frames_video,
    write_synthetic_video,
)
from data_engine.stages.base import Resources, Row, Stage


@dataclass(frozen=True)
class VideosOptions:
    input: str | list[str] = ""
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS


@dataclass(frozen=True)
class FramesOptions:
    input: str | list[str] = ""  # a folder or a glob of folders, each holding one frame sequence
    fps: float = 8.0
    optional: bool = False  # when nothing matches, contribute no inputs instead of failing


@dataclass(frozen=True)
class FolderOptions:
    root: str = ""


@dataclass(frozen=True)
class OfficialOptions:
    root: str = ""
    fps: float = 8.0


@dataclass(frozen=True)
class CopyPasteOptions:
    shards: str = ""  # a shard folder to draw clips from
    num: int = 8
    seed: int = 0


SOURCE_TYPES: dict[str, type] = {
    "videos": VideosOptions,
    "synthetic_videos": SyntheticConfig,
    "frames": FramesOptions,
    "synthetic": SyntheticConfig,
    "official": OfficialOptions,
    "layered_images": FolderOptions,
    "copy_paste": CopyPasteOptions,
}
VIDEO_TYPES = ("videos", "synthetic_videos", "frames")


def source_options(spec: SourceSpec, index: int) -> Any:
    where = f"sources[{index}] ({spec.type})"
    if spec.type not in SOURCE_TYPES:
        raise ConfigError(f"{where}: unknown source type; valid: {sorted(SOURCE_TYPES)}")
    cls = SOURCE_TYPES[spec.type]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(spec.options) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(known)}")
    opts = dict(spec.options)
    if "extensions" in opts:
        opts["extensions"] = tuple(opts["extensions"])
    try:
        parsed = cls(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    required = {"videos": "input", "frames": "input", "official": "root", "layered_images": "root", "copy_paste": "shards"}.get(spec.type)
    if required and not getattr(parsed, required):
        raise ConfigError(f"{where}: '{required}' is required")
    return parsed


def layered_source(kind: str, opts: Any) -> Source:
    """The model-free Source object of a layered source type (built on the actor that loads from it)."""
    if kind == "synthetic":
        from data_engine.sources.synthetic import SyntheticSource

        return SyntheticSource(opts)
    if kind == "official":
        from data_engine.sources.official import OfficialSampleSource

        return OfficialSampleSource(opts.root, fps=opts.fps)
    if kind == "layered_images":
        from data_engine.sources.layered_images import LayeredImageSource

        return LayeredImageSource(opts.root)
    if kind == "copy_paste":
        from data_engine.shards import read_clips
        from data_engine.sources.copy_paste import CopyPasteSource

        return CopyPasteSource(list(read_clips(opts.shards)), num=opts.num, seed=opts.seed)
    raise ConfigError(f"{kind}: not a layered source type")


@dataclass(frozen=True)
class WorkItem:
    """One input: its source (index into the config's sources), the item string the source understands, and the
    input id its completion record is filed under."""

    source: int
    kind: str
    item: str
    input_id: str


def work_items(cfg: EngineConfig) -> list[WorkItem]:
    """All inputs of all sources, in config order; cheap (lists files, never decodes or generates)."""
    items: list[WorkItem] = []
    for index, spec in enumerate(cfg.sources):
        opts = source_options(spec, index)
        if spec.type == "videos":
            try:
                uris = list_videos(opts.input, opts.extensions)
            except SourceError as exc:
                raise ConfigError(f"sources[{index}] (videos): {exc}") from exc
            if not uris:
                raise ConfigError(f"sources[{index}] (videos): {opts.input!r} matches no video files (extensions "
                                  f"{', '.join(opts.extensions)}); check the path or pattern")
            items += [WorkItem(index, spec.type, u, u) for u in uris]
        elif spec.type == "synthetic_videos":
            folder = cfg.work_dir / "synthetic_videos"
            items += [
                WorkItem(index, spec.type, str(i), str((folder / synthetic_video_name(opts, i)).resolve()))
                for i in range(opts.num_clips)
            ]
        elif spec.type == "frames":
            folders = list_frame_folders(opts.input)
            if not folders and not opts.optional:
                raise ConfigError(f"sources[{index}] (frames): no folder of frames matches {opts.input!r}")
            items += [WorkItem(index, spec.type, f, f) for f in folders]
        elif spec.type == "synthetic":
            items += [WorkItem(index, spec.type, str(i), f"synthetic:seed={opts.seed}:index={i}") for i in range(opts.num_clips)]
        else:
            try:
                listed = layered_source(spec.type, opts).list_inputs()
            except (SourceError, FileNotFoundError) as exc:
                raise ConfigError(f"sources[{index}] ({spec.type}): {exc}") from exc
            prefix = f"copy_paste:{opts.shards}:seed={opts.seed}:" if spec.type == "copy_paste" else ""
            items += [WorkItem(index, spec.type, it, prefix + it) for it in listed]
    return items


@dataclass(frozen=True)
class SourceStageOptions:
    sources: tuple[dict[str, Any], ...] = ()  # the config's source specs as {type, options}
    work_dir: str = ""  # where synthetic videos and encoded frame folders are written


class SourceStage(Stage):
    """The first stage: a work item -> a row pointing at a video (video sources) or finished clips (layered ones)."""

    name = "source"
    default_resources = Resources(num_cpus=0.25, batch_size=1, retries=1)
    Options = SourceStageOptions

    def setup(self) -> None:
        specs = [SourceSpec(s["type"], s["options"]) for s in self.opts.sources]
        self.specs = specs
        self.opts_by_index = [source_options(s, i) for i, s in enumerate(specs)]
        self.layered: dict[int, Source] = {}

    def _layered(self, index: int) -> Source:
        if index not in self.layered:
            self.layered[index] = layered_source(self.specs[index].type, self.opts_by_index[index])
        return self.layered[index]

    def load(self, row: Row) -> list[Row]:
        index, kind, item = row["source"], row["kind"], row["item"]
        if kind == "videos":
            return [{**row, "key": row["_input"], "source_id": item}]
        if kind == "synthetic_videos":
            folder = Path(self.opts.work_dir) / "synthetic_videos"
            path = write_synthetic_video(self.opts_by_index[index], int(item), folder)
            # Keyed by generator settings, not by path: the same synthetic video gets the same keys anywhere.
            return [{**row, "key": row["_input"], "source_id": str(path.resolve()), "source_name": path.stem}]
        if kind == "frames":
            path = write_frames_video(item, self.opts_by_index[index].fps, Path(self.opts.work_dir) / "frames")
            return [{**row, "key": row["_input"], "source_id": str(path.resolve()), "source_name": path.stem}]
        clips = self._layered(index).load(item)
        return [{**row, "key": c.key, "source_id": c.source_id, "clip": c} for c in clips]

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out: list[Row] = []
        for row in rows:
            try:
                out += self.load(row)
            except (SourceError, OSError, ValueError) as exc:
                out.append(self.failed({**row, "source_id": row["_input"]}, exc))
        return out


def source_stage_options(cfg: EngineConfig) -> dict[str, Any]:
    return {
        "sources": [{"type": s.type, "options": dict(s.options)} for s in cfg.sources],
        "work_dir": str(cfg.work_dir.resolve()),
    }


def describe_sources(cfg: EngineConfig) -> list[str]:
    return [f"{s.type}: {asdict(source_options(s, i))}" for i, s in enumerate(cfg.sources)]
