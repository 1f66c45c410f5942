"""What a malicious pickle carries, for the tests of the restricted unpickler and the importers that use it."""
from __future__ import annotations

import os


class RunsACommand:
    """Unpickling this calls os.system, which creates `marker`: a test sees whether it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ReadsAFile:
    """Unpickling this builds Pillow's PngImageFile on `path`, an allowed class that would open and read that file:
    a pickle reaching outside itself without running code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        from PIL.PngImagePlugin import PngImageFile

        return PngImageFile, (str(self.path),)


def zlib_bomb(size: int) -> bytes:
    """zlib data that inflates to `size` zero bytes (a thousandth of that on disk)."""
    import zlib

    stream, chunk = zlib.compressobj(9), bytes(1 << 20)
    return b"".join(stream.compress(chunk) for _ in range(size >> 20)) + stream.flush()


class FileOpens:
    """Records the paths this process opens inside `with FileOpens() as opens:` (through an audit hook: every
    `open` raises the "open" event)."""

    recording: FileOpens | None = None
    _hooked = False

    def __init__(self):
        self.paths: list[str] = []

    def __enter__(self):
        import sys

        if not FileOpens._hooked:
            sys.addaudithook(FileOpens._event)  # hooks stay for the process's life: one, reporting to the recorder
            FileOpens._hooked = True
        FileOpens.recording = self
        return self

    def __exit__(self, *exc):
        FileOpens.recording = None

    @staticmethod
    def _event(event, args):
        if event == "open" and FileOpens.recording is not None:
            FileOpens.recording.paths.append(str(args[0]))
