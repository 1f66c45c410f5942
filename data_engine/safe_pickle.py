"""Pickles from the internet, read without running them: an unpickler that builds only the types a format needs.

`pickle.load` calls whatever a pickle names (a `__reduce__` can name `os.system`), so a downloaded dataset's
pickles go through `restricted_loads` with the allow-list of its format: any other global is refused before it is
imported or called, with `UnsafePickleError` naming it. NumPy arrays are allowed by name (`NUMPY_ARRAYS`): NumPy 1
pickles `numpy.core.multiarray._reconstruct`, NumPy 2 `numpy._core.multiarray._reconstruct`.

PIL images (`PIL_IMAGES`) load as `PickledImage`, built only from the mode, size and bytes the pickle holds: the
real classes would also open what a pickle names (`PngImageFile("/some/file")` reads that file), and Pillow would
allocate whatever size the pickle claims before it checks the bytes.
"""
from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Iterable
from typing import Any

from PIL import Image

# What a pickled numpy.ndarray of plain dtypes names (protocols < 3 write its bytes through _codecs.encode, which
# only turns a str into bytes).
NUMPY_ARRAYS: frozenset[tuple[str, str]] = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
})


# What a pickled PIL image names: its class (Image.open's subclasses pickle under their own), and under protocol 2
# _codecs.encode for its bytes.
_PIL_CLASSES = frozenset({
    ("PIL.Image", "Image"), ("PIL.PngImagePlugin", "PngImageFile"), ("PIL.JpegImagePlugin", "JpegImageFile"),
})
PIL_IMAGES: frozenset[tuple[str, str]] = _PIL_CLASSES | {("_codecs", "encode")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the format's allow-list (nothing it names was imported or called), or
    uses an allowed one other than as the format does."""


class PickledImage(Image.Image):
    """A PIL image from a pickle's own bytes: made empty (pickle's NEWOBJ), then given [info, mode, size, palette,
    data, ...] (BUILD). A call with arguments, as a pickle that names a file would make, is refused."""

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError("a pickled image may only be built from bytes inside the pickle, not from "
                                    f"arguments ({len(args) + len(kwargs)} given, e.g. a file to open)")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, (list, tuple)) or len(state) < 5:
            raise UnsafePickleError("a pickled image's state is [info, mode, size, palette, data]")
        info, mode, size, palette, data = state[:5]
        if not (isinstance(info, dict) and isinstance(mode, str) and isinstance(data, bytes)
                and isinstance(size, tuple) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size)):
            raise UnsafePickleError(f"a pickled image holds info, mode, size and bytes; got {type(mode).__name__} "
                                    f"mode, size {size!r}, {type(data).__name__} data")
        try:
            pixel = len(Image.new(mode, (1, 1)).tobytes())
        except ValueError:
            raise UnsafePickleError(f"a pickled image of unknown mode {mode!r}") from None
        row = (size[0] + 7) // 8 if mode == "1" else size[0] * pixel  # "1" packs 8 pixels a byte
        if len(data) != row * size[1]:
            raise UnsafePickleError(f"a pickled {mode} image of {size[0]}x{size[1]} needs {row * size[1]} bytes, "
                                    f"it holds {len(data)}")
        super().__setstate__([info, mode, size, palette, data])


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise UnsafePickleError(f"refused to load {module}.{name}, which this format does not use (a pickle "
                                    "that names it may run code)")
        if (module, name) in _PIL_CLASSES:
            return PickledImage
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = _numpy_core(module.split(".", 2)[2])  # pickles of either NumPy major read under the installed one
        return getattr(importlib.import_module(module), name)


def _numpy_core(submodule: str) -> str:
    try:
        importlib.import_module("numpy._core")
        return f"numpy._core.{submodule}"
    except ImportError:  # NumPy 1.x
        return f"numpy.core.{submodule}"


def restricted_loads(data: bytes, allowed: Iterable[tuple[str, str]], what: str = "pickle"):
    """Unpickle `data`, allowing only the globals in `allowed` ((module, name) pairs); `what` names the input in
    errors. Raises UnsafePickleError for any other global, pickle.UnpicklingError for a corrupt pickle."""
    try:
        return _RestrictedUnpickler(data, frozenset(allowed)).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise pickle.UnpicklingError(f"{what}: not a readable pickle ({exc})") from None
