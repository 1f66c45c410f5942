"""Config values into typed dataclasses: one helper, `from_mapping`, for every config reader of the project.

`from_mapping(cls, data, where)` is `cls(**data)` with one-line errors: a value that is not a mapping, unknown keys
(named, with the valid ones), a value whose type is not its field's, and the dataclass's own checks, each line
starting with `where`. It lives in data_engine's shared surface, so every package may import it.

`--set` parses values as YAML, so `steps=abc` arrives as the string 'abc'; an option's own checks would then fail
with Python's words (`'<' not supported between instances of 'str' and 'int'`). `wrong_type` names the key and the
type it wants instead. Types it does not know (Any, a class) are left to the dataclass.
"""
from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
              list: "a list", tuple: "a list", type(None): "null"}


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether `value` has the type `hint` names; None where the hint is not one this module checks."""
    outer = typing.get_origin(hint) or hint
    if outer is bool:
        return isinstance(value, bool)
    if outer is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if outer is float:  # YAML reads `8` as an int: a whole number is a number
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if outer is str or outer is dict or outer is type(None):
        return isinstance(value, outer)
    if outer in (list, tuple):  # YAML has lists only; a tuple field takes one
        items = typing.get_args(hint)[:1]
        return isinstance(value, (list, tuple)) and all(_fits(v, items[0]) is not False for v in value if items)
    return None


def describe(hint: Any) -> str:
    words = [TYPE_WORDS.get(typing.get_origin(h) or h, getattr(h, "__name__", str(h))) for h in _alternatives(hint)]
    return " or ".join(dict.fromkeys(words))


def wrong_type(cls: type, values: dict[str, Any], where: str) -> str | None:
    """The one-line error for the first value in `values` whose type is not its field's (`where.key` names it),
    or None; keys that are not fields are left to the caller's unknown-key check."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # a plugin's annotation names what its module imports for type checkers only
        return None
    for f in fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        verdicts = [_fits(value, h) for h in _alternatives(hint)]
        if None in verdicts or any(verdicts):
            continue
        return f"{where}.{f.name} must be {describe(hint)}, got {value!r} ({type(value).__name__})"
    return None


def from_mapping(cls: type[T], data: Any, where: str, *, unknown: str = "unknown key(s)",
                 typed_where: str | None = None, taken: tuple[str, ...] = (),
                 error: type[Exception] = ValueError) -> T:
    """`cls(**data)`, or `error` with one line that starts with `where`: data that is not a mapping (None reads as
    {}), `{unknown} [...]; valid: [...]`, a value of the wrong type (`{typed_where or where}.key must be ...`), or
    what the dataclass itself refuses. `taken`: keys the caller reads itself (valid, not passed to `cls`)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    data = {k: v for k, v in data.items() if k not in taken}
    known = sorted(f.name for f in fields(cls))
    extra = sorted(set(data) - set(known))
    known = sorted([*known, *taken])
    if extra:
        raise error(f"{where}: {unknown} {extra}; valid: {known}")
    mistyped = wrong_type(cls, data, typed_where or where)
    if mistyped:
        raise error(mistyped)
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: {exc}") from exc
