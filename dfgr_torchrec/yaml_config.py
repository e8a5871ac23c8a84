"""The one YAML loader of train, data and study configs: read, compose, override, type-check, build.

Every config file goes the same way (torch-free, so a mistake answers at once):

1. the file is read with ``yaml.safe_load`` (a syntax error names the file and the line);
2. its ``defaults:`` (a path or a list of paths, relative to the file) are loaded the same way and
   merged first, in order; the file's own keys then win (mappings merge key by key);
3. ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``true``, ``[1, 2]``) come last;
4. the tree is type-checked against the config dataclass (:func:`check_types`) and built by
   :func:`~dfgr_torchrec.config.from_dict` (unknown keys, then each dataclass's own checks).

Every error is one line, ``<file>: <key>: expected <what>, got <value>``; where a dataclass checks
a mistyped key itself, its own words are kept (``source.header: expected a boolean (true or false,
unquoted)``), else the type check's (``train.epochs: expected an integer, got 'abc'``), never a
``TypeError`` from a comparison deep in a ``__post_init__``.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
import typing
from typing import Any, Dict, List, Mapping, Sequence, Type, TypeVar

from dfgr_torchrec.config import from_dict, parse_yaml

T = TypeVar("T")
DEFAULTS = "defaults"  # the key that lists the files a config is composed from


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else is replaced (deep copies)."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _defaults_of(raw: Mapping[str, Any], path: str) -> List[str]:
    listed = raw.get(DEFAULTS) or []
    listed = [listed] if isinstance(listed, str) else listed
    if not isinstance(listed, list) or not all(isinstance(p, str) and p for p in listed):
        raise ValueError(f"{path}: {DEFAULTS}: expected a path or a list of paths, got {raw.get(DEFAULTS)!r}")
    return listed


def load_raw(path: str, seen: Sequence[str] = ()) -> Dict[str, Any]:
    """One YAML file with its ``defaults:`` merged in (recursively): a cycle, a missing file or a
    top level that is not a mapping is a one-line error naming the file (and what listed it)."""
    path = os.path.normpath(path)
    if path in seen:
        raise ValueError(f"{path}: {DEFAULTS} form a cycle: {' -> '.join([*seen, path])}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such config file" + (f" (a default of {seen[-1]})" if seen else ""))
    with open(path) as f:
        raw = parse_yaml(f, path)
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    merged: Dict[str, Any] = {}
    for default in _defaults_of(raw, path):
        merged = merge(merged, load_raw(os.path.join(os.path.dirname(path), default), [*seen, path]))
    return merge(merged, {k: v for k, v in raw.items() if k != DEFAULTS})


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Applies ``a.b.c=value`` overrides; the value is parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = parse_yaml(value, f"override {item!r}")
    return out


def load_yaml_tree(path: str, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """A config file as plain data: its ``defaults:`` merged in, then ``overrides`` applied."""
    return apply_overrides(load_raw(path), overrides)


def _key_of(message: str) -> str:
    return message.split(": ", 1)[0]


def checked_from_dict(cls: Type[T], tree: Mapping[str, Any], where: str = "") -> T:
    """The dataclass ``cls`` from a mapping: type checks, unknown keys, the dataclass's own checks; a
    ``ValueError`` names the first bad key, below the key path ``where`` (``model``)."""
    try:
        check_types(cls, tree, where)
    except ValueError as mistyped:
        try:
            from_dict(cls, tree, where)
        except Exception as own:  # the dataclass's own words for the same key are the more precise
            if isinstance(own, ValueError) and _key_of(str(own)) == _key_of(str(mistyped)):
                raise own from None
        raise mistyped from None
    return from_dict(cls, tree, where)


def config_from_tree(cls: Type[T], tree: Mapping[str, Any], where: str = "") -> T:
    """The dataclass ``cls`` from a composed tree (:func:`checked_from_dict`); a ``ValueError``
    prefixed with ``where`` (the file) names the first bad key."""
    try:
        return checked_from_dict(cls, tree)
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from None


def load_config(cls: Type[T], path: str, overrides: Sequence[str] = ()) -> T:
    """Reads, composes (``defaults:``), overrides and builds a config file into ``cls``."""
    return config_from_tree(cls, load_yaml_tree(path, overrides), path)


# --------------------------------------------------------------------------
# Type checks of a raw tree against its dataclasses, before they are built
# --------------------------------------------------------------------------

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_types(cls: type, raw: Any, where: str = "") -> None:
    """Raises ``ValueError("<key path>: expected <type>, got <value>")`` for the first mistyped value.

    Runs before the dataclasses are built, so ``train.epochs=abc`` is ``train.epochs: expected an
    integer, got 'abc'`` rather than a ``TypeError`` from a comparison in a ``__post_init__``.
    Unknown keys are left to :func:`~dfgr_torchrec.config.from_dict`."""
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


__all__ = ["load_yaml_tree", "load_config", "config_from_tree", "check_types", "apply_overrides", "load_raw", "merge"]
