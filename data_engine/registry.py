"""The lazy registry of engine stages and sources: a name -> "package.module:Class", imported on first use.

Listing a registry imports nothing, so naming stages never loads a perception model. `load` also takes an import
path `package.module:Class` itself, which plugs in a class of your own without touching a registry (it must be
importable on every Ray worker). Every string is an import the architecture test counts (tests/test_architecture.py).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping


class UnknownEntryError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Mapping[str, str]):
    """`kind` names what it holds in its errors ("stage", "source type")."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind, self._entries = kind, dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, name: str) -> type:
        """The class registered under `name`, or the class at `package.module:Class` (imports its module now)."""
        target = self._entries.get(name) or (name if ":" in name else None)
        if target is None:
            raise UnknownEntryError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self)} "
                                    "(or a class as 'package.module:Class')")
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, TypeError) as exc:
            raise UnknownEntryError(f"{self.kind} {name!r} ({target}) cannot be imported: {exc}") from exc
