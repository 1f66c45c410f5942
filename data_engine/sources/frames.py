"""Folders of frames as raw videos (e.g. the official samples' `bl/`): each folder encoded as an mp4 into the work
dir, which the video stages then take like any other video."""
from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.sources.base import Source, SourceError
from data_engine.sources.videos import has_glob
from data_engine.video_io import VideoDecodeError, encode_video, frame_files, read_frame_folder


def list_frame_folders(spec: str | list[str]) -> list[str]:
    """Folders (or a glob of folders) that hold a frame sequence, sorted; folders without frames are left out."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    found: list[str] = []
    for s in specs:
        matches = globlib.glob(str(Path(s).expanduser()), recursive=True) if has_glob(s) else [s]
        for m in sorted(matches):
            p = Path(m)
            if p.is_dir() and frame_files(p):
                found.append(str(p.resolve()))
    return found


def frame_video_name(folder: str | Path) -> str:
    """`<sequence>_<folder>.mp4`, e.g. `dog_bl.mp4` for `.../dog/bl`."""
    p = Path(folder)
    return f"{p.parent.name}_{p.name}.mp4"


def write_frames_video(folder: str | Path, fps: float, out_folder: str | Path) -> Path:
    """Encode a folder of frames as an mp4 (crash-safe: appears by rename); a bad frame raises naming the file."""
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / frame_video_name(folder)
    if path.exists():
        return path
    try:
        frames = read_frame_folder(folder)
    except VideoDecodeError as exc:
        raise SourceError(str(exc)) from exc
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_video(frames, fps))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class FramesOptions:
    input: str | list[str] = ""  # a folder or a glob of folders, each holding one frame sequence
    fps: float = 8.0
    optional: bool = False  # when nothing matches, contribute no inputs instead of failing


class FrameFolderSource(Source):
    name = "frames"
    Options = FramesOptions
    required = ("input",)
    writes = frozenset({"key", "source_id", "source_name"})

    def __init__(self, opts: FramesOptions, folder: Path) -> None:
        self.opts, self.folder = opts, folder

    @classmethod
    def from_options(cls, opts: FramesOptions, work_dir: Path) -> FrameFolderSource:
        return cls(opts, work_dir / "frames")

    def list_inputs(self) -> list[str]:
        folders = list_frame_folders(self.opts.input)
        if not folders and not self.opts.optional:
            raise SourceError(f"no folder of frames matches {self.opts.input!r}")
        return folders

    def rows(self, item: str) -> list[dict[str, Any]]:
        path = write_frames_video(item, self.opts.fps, self.folder)
        return [{"key": item, "source_id": str(path.resolve()), "source_name": path.stem}]
