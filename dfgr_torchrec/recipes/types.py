"""Type-checks a raw config (YAML and overrides) against its dataclasses, naming each key's full path.

Runs before the dataclasses are built, so ``train.epochs=abc`` is ``train.epochs: expected an
integer, got 'abc'`` rather than a ``TypeError`` from a comparison deep in a ``__post_init__``
(or, worse, later in the run). Unknown keys are left to :func:`~dfgr_torchrec.config.from_dict`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any, Mapping

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_types(cls: type, raw: Any, where: str = "") -> None:
    """Raises ``ValueError("<key path>: expected <type>, got <value>")`` for the first mistyped value."""
    if not isinstance(raw, Mapping):
        return  # from_dict names the node that is not a mapping
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in raw:
            _check(hints[f.name], raw[f.name], f"{where}.{f.name}" if where else f.name)


def _check(hint: Any, value: Any, key: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, Mapping):
            check_types(hint, value, key)
        elif not dataclasses.is_dataclass(value):
            raise ValueError(f"{key}: expected a section (a mapping of keys), got {value!r}")
        return
    if origin is typing.Union:
        if not any(_matches(arg, value) for arg in args):
            raise ValueError(f"{key}: expected {' or '.join(_describe(a) for a in args)}, got {value!r}")
        return
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ValueError(f"{key}: expected {_describe(hint)}, got {value!r}")
        items = value.items() if origin is dict else enumerate(value)
        for name, item in items:
            _check(args[-1], item, f"{key}.{name}" if origin is dict else f"{key}[{name}]")
        return
    if not _matches(hint, value):
        raise ValueError(f"{key}: expected {_describe(hint)}, got {value!r}")


def _matches(hint: Any, value: Any) -> bool:
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML reads 1e-6 as a string: from_dict converts those
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _float_string(value)
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return isinstance(value, str) or isinstance(value, enum.Enum)
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) in (list, dict):
        return isinstance(value, (Mapping, list)) or dataclasses.is_dataclass(value)
    return True  # a type this checker does not know: the dataclass checks it


def _float_string(value: Any) -> bool:
    try:
        return isinstance(value, str) and (float(value) == float(value))
    except ValueError:
        return False


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if hint in _NAMES:
        return _NAMES[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"one of {', '.join(repr(e.value) for e in hint)}"
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
