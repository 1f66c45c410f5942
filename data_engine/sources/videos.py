"""Raw video inputs: a local file, folder or glob, a list file, or any pyarrow filesystem URI (`s3://`, `gs://`,
`file://`...).

Inputs are returned as strings: local paths stay paths, remote ones stay URIs; `data_engine.uri.open_video` gives
PyAV something it can read for either, without copying the file to local disk first.
"""
from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from data_engine.layers_sidecar import sidecar_of
from data_engine.sources.base import Source, SourceError
from data_engine.uri import UriError, filesystem, is_uri

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
LIST_EXTENSIONS = (".txt", ".list", ".lst")
_GLOB_CHARS = "*?["


def has_glob(spec: str) -> bool:
    return any(c in spec for c in _GLOB_CHARS)


def _list_uri(uri: str, extensions: tuple[str, ...]) -> list[str]:
    from pyarrow import fs

    scheme = uri.split("://", 1)[0]
    try:
        remote, path = filesystem(uri)
    except UriError as exc:
        raise SourceError(str(exc)) from exc
    pattern = None
    if has_glob(path):
        pattern = path
        path = path[: min(path.find(c) for c in _GLOB_CHARS if c in path)].rsplit("/", 1)[0]
    info = remote.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise SourceError(f"{uri}: does not exist")
    if info.type == fs.FileType.File:
        return [uri]
    found = remote.get_file_info(fs.FileSelector(path, recursive=True))
    paths = sorted(
        f.path for f in found
        if f.type == fs.FileType.File
        and f.path.lower().endswith(extensions)
        and (pattern is None or fnmatch(f.path, pattern))
    )
    return [f"{scheme}://{p}" for p in paths]


def _read_list_file(path: Path) -> list[str]:
    """One video per line (path or URI); blank lines and `#` comments skipped; relative paths are relative to the
    list."""
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
    if has_glob(spec):
        return sorted(_listed(Path(p)) for p in globlib.glob(str(path), recursive=True)
                      if p.lower().endswith(exts) and _is_file_or_link(Path(p)))
    if path.is_dir():
        return sorted(_listed(p) for p in path.rglob("*") if p.suffix.lower() in exts and _is_file_or_link(p))
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        return _read_list_file(path)
    if path.is_file():
        return [str(path.resolve())]
    raise SourceError(f"{spec}: no such file or folder (give a folder of videos, a glob, a list file or a URI)")


@dataclass(frozen=True)
class VideosOptions:
    input: str | list[str] = ""
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))  # YAML gives a list


class VideoFileSource(Source):
    """Your videos: each row points at one file or URI. Videos with a layers sidecar (synthetic videos written
    elsewhere) also carry `known_layers`, so the model-free stages can take them."""

    name = "videos"
    Options = VideosOptions
    required = ("input",)

    def __init__(self, opts: VideosOptions) -> None:
        self.opts = opts

    @classmethod
    def from_options(cls, opts: VideosOptions, work_dir: Path) -> VideoFileSource:
        return cls(opts)

    def list_inputs(self) -> list[str]:
        uris = list_videos(self.opts.input, self.opts.extensions)
        if not uris:
            raise SourceError(f"{self.opts.input!r} matches no video files (extensions "
                              f"{', '.join(self.opts.extensions)}); check the path or pattern")
        return uris

    def provides(self, items: list[str]) -> frozenset[str]:
        return self.writes | ({"known_layers"} if any(sidecar_of(u) for u in items) else set())

    def rows(self, item: str) -> list[dict[str, Any]]:
        return [{"key": item, "source_id": item}]
