"""Where an input lives: a local path, or a URI of any filesystem pyarrow opens (`s3://`, `gs://`, `file://`...).

Shared by the sources, which list inputs, and the video stages, which open them: a remote video is streamed to
PyAV, never copied to local disk first.
"""
from __future__ import annotations

from typing import BinaryIO

from data_engine.video_io import VideoDecodeError


class UriError(ValueError):
    """A URI no pyarrow filesystem opens; the message names it."""


def is_uri(spec: str) -> bool:
    return "://" in spec


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a URI."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise UriError(f"{uri}: not a filesystem URI pyarrow can open ({exc})") from exc


def open_video(uri: str) -> str | BinaryIO:
    """Something PyAV opens: the local path, or a seekable pyarrow stream for a remote URI."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if not is_uri(uri):
        return uri
    try:
        remote, path = filesystem(uri)
    except UriError as exc:
        raise VideoDecodeError(str(exc)) from exc
    try:
        return remote.open_input_file(path)
    except OSError as exc:
        raise VideoDecodeError(f"{uri}: cannot open ({exc})") from exc
