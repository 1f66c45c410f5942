"""Raw video inputs: a local file, folder or glob, a list file, or any pyarrow filesystem URI (`s3://`, `gs://`,
`file://`...); and the built-in synthetic videos, whose true layers the model-free stages can recover.

Inputs are returned as strings: local paths stay paths, remote ones stay URIs; `open_video` gives PyAV something
it can read for either, without copying the file to local disk first.
"""
from __future__ import annotations

import glob as globlib
import json
import os
from dataclasses import asdict
from fnmatch import fnmatch
from pathlib import Path
from typing import BinaryIO

from data_engine.sources.base import SourceError
from data_engine.sources.synthetic import SyntheticConfig, SyntheticTruth, synthetic_clip, synthetic_truth
from data_engine.video_io import VideoDecodeError, encode_video

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
LIST_EXTENSIONS = (".txt", ".list", ".lst")
LAYERS_SIDECAR = ".layers.json"
_GLOB_CHARS = "*?["


def is_uri(spec: str) -> bool:
    return "://" in spec


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in _GLOB_CHARS)


def _filesystem(uri: str):
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{uri}: not a filesystem URI pyarrow can open ({exc})") from exc


def _list_uri(uri: str, extensions: tuple[str, ...]) -> list[str]:
    from pyarrow import fs

    scheme = uri.split("://", 1)[0]
    filesystem, path = _filesystem(uri)
    pattern = None
    if _has_glob(path):
        pattern = path
        path = path[: min(path.find(c) for c in _GLOB_CHARS if c in path)].rsplit("/", 1)[0]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise SourceError(f"{uri}: does not exist")
    if info.type == fs.FileType.File:
        return [uri]
    found = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    paths = sorted(
        f.path for f in found
        if f.type == fs.FileType.File
        and f.path.lower().endswith(extensions)
        and (pattern is None or fnmatch(f.path, pattern))
    )
    return [f"{scheme}://{p}" for p in paths]


def _read_list_file(path: Path) -> list[str]:
    """One video per line (path or URI); blank lines and `#` comments skipped; relative paths are relative to the list."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(line if is_uri(line) or os.path.isabs(line) else str((path.parent / line).resolve()))
    return entries


def _is_file_or_link(p: Path) -> bool:
    """Files, and symlinks whatever they point at: a dangling link is listed so that it is quarantined with its
    reason instead of vanishing from the run."""
    return p.is_symlink() or p.is_file()


def _listed(p: Path) -> str:
    return str(p.resolve()) if p.exists() else str(p.absolute())


def list_videos(spec: str | list[str], extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Expand a folder, glob, list file, single file or URI (or a list of those) into video inputs, sorted."""
    if isinstance(spec, (list, tuple)):
        out: list[str] = []
        for s in spec:
            out.extend(list_videos(s, extensions))
        return out
    spec = str(spec)
    exts = tuple(e.lower() for e in extensions)
    if is_uri(spec):
        return _list_uri(spec, exts)
    path = Path(spec).expanduser()
    if _has_glob(spec):
        return sorted(_listed(Path(p)) for p in globlib.glob(str(path), recursive=True)
                      if p.lower().endswith(exts) and _is_file_or_link(Path(p)))
    if path.is_dir():
        return sorted(_listed(p) for p in path.rglob("*") if p.suffix.lower() in exts and _is_file_or_link(p))
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        return _read_list_file(path)
    if path.is_file():
        return [str(path.resolve())]
    raise SourceError(f"{spec}: no such file or folder (give a folder of videos, a glob, a list file or a URI)")


def open_video(uri: str) -> str | BinaryIO:
    """Something PyAV opens: the local path, or a seekable pyarrow stream for a remote URI."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if not is_uri(uri):
        return uri
    filesystem, path = _filesystem(uri)
    try:
        return filesystem.open_input_file(path)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise VideoDecodeError(f"{uri}: cannot open ({exc})") from exc


# -- built-in synthetic videos -------------------------------------------------------------------------------------
def synthetic_video_name(cfg: SyntheticConfig, index: int) -> str:
    return f"synthetic_s{cfg.seed}_{index:05d}.mp4"


def write_synthetic_video(cfg: SyntheticConfig, index: int, folder: str | Path) -> Path:
    """The blend of synthetic clip `index` as an mp4, plus a sidecar naming how to regenerate its true layers.

    Idempotent and crash-safe: the sidecar is written first and the mp4 appears by rename, so an existing mp4
    always has its sidecar.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / synthetic_video_name(cfg, index)
    if path.exists():
        return path
    clip = synthetic_clip(cfg, index)
    sidecar = {"generator": "synthetic", "config": asdict(cfg), "index": index}
    Path(str(path) + LAYERS_SIDECAR).write_text(json.dumps(sidecar, indent=1))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_video(clip.blend, clip.fps))
    os.replace(tmp, path)
    return path


def has_known_layers(uri: str) -> bool:
    return not is_uri(uri) and Path(uri + LAYERS_SIDECAR).is_file()


def known_layers(uri: str) -> SyntheticTruth | None:
    """The true layers of a whole video written by `write_synthetic_video` (all frames, its own size), or None.

    Only what the video cannot give back (the matte, the background, the captions) is rendered, not the composites.
    """
    if not has_known_layers(uri):
        return None
    sidecar = Path(uri + LAYERS_SIDECAR)
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("generator") != "synthetic":
            raise SourceError(f"{sidecar}: unknown generator {meta.get('generator')!r} (expected 'synthetic')")
        return synthetic_truth(SyntheticConfig(**meta["config"]), int(meta["index"]))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SourceError(f"{sidecar}: not a valid layers sidecar ({exc})") from exc


# -- folders of frames as raw videos ---------------------------------------------------------------------------------
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_frame_folders(spec: str | list[str]) -> list[str]:
    """Folders (or a glob of folders) that hold a frame sequence, sorted; folders without frames are left out."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    found: list[str] = []
    for s in specs:
        matches = globlib.glob(str(Path(s).expanduser()), recursive=True) if _has_glob(s) else [s]
        for m in sorted(matches):
            p = Path(m)
            if p.is_dir() and any(f.suffix.lower() in FRAME_EXTENSIONS for f in p.iterdir()):
                found.append(str(p.resolve()))
    return found


def frame_video_name(folder: str | Path) -> str:
    """`<sequence>_<folder>.mp4`, e.g. `dog_bl.mp4` for `.../dog/bl`."""
    p = Path(folder)
    return f"{p.parent.name}_{p.name}.mp4"


def write_frames_video(folder: str | Path, fps: float, out_folder: str | Path) -> Path:
    """Encode a folder of frames as an mp4 (crash-safe: appears by rename); a bad frame raises naming the file."""
    from data_engine.video_io import read_image

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / frame_video_name(folder)
    if path.exists():
        return path
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in FRAME_EXTENSIONS)
    try:
        frames = [read_image(f) for f in files]
    except VideoDecodeError as exc:
        raise SourceError(str(exc)) from exc
    if len({f.shape for f in frames}) != 1:
        raise SourceError(f"{folder}: frames differ in size")
    import numpy as np

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_video(np.stack(frames), fps))
    os.replace(tmp, path)
    return path
