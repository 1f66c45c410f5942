"""Config values checked against the type their dataclass field declares, before the dataclass sees them.

`--set` parses values as YAML, so `steps=abc` arrives as the string 'abc'; an option's own checks would then fail
with Python's words (`'<' not supported between instances of 'str' and 'int'`). This names the key and the type
it wants instead. Types this does not know (Any, a class) are left to the dataclass.
"""
from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any

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
