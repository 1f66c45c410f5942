"""Pickles from the internet, read without running them: an unpickler that builds only the types a format needs.

`pickle.load` calls whatever a pickle names (a `__reduce__` can name `os.system`), so a downloaded dataset's
pickles go through `restricted_loads` with the allow-list of its format: any other global is refused before it is
imported or called, with `UnsafePickleError` naming it. NumPy arrays are allowed by name (`NUMPY_ARRAYS`): NumPy 1
pickles `numpy.core.multiarray._reconstruct`, NumPy 2 `numpy._core.multiarray._reconstruct`.
"""
from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Iterable

# What a pickled numpy.ndarray of plain dtypes names (protocols < 3 write its bytes through _codecs.encode, which
# only turns a str into bytes).
NUMPY_ARRAYS: frozenset[tuple[str, str]] = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the format's allow-list (nothing it names was imported or called)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: frozenset[tuple[str, str]], what: str) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed, self.what = allowed, what

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise UnsafePickleError(f"{self.what}: refused to load {module}.{name}, which this format does not use "
                                    "(a pickle that names it may run code)")
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
        return _RestrictedUnpickler(data, frozenset(allowed), what).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise pickle.UnpicklingError(f"{what}: not a readable pickle ({exc})") from None
