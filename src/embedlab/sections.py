"""How one typed result is stored as its section of metrics.json and read back: ``to_section`` and its inverse
``from_section``, by the storage rules ``results`` describes (``INLINE`` results side by side, ``spread`` mappings item
by item). ``store`` is the one module that writes and reads the sections; this is its codec, pure functions."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import fields
from typing import Any, TypeVar

import pydantic

from embedlab import reader
from embedlab.errors import InputError

METRICS = "metrics.json"

T = TypeVar("T")


def _inline(cls: type) -> tuple[str, ...]:
    return getattr(cls, "INLINE", ())


def to_section(result: Any) -> dict[str, Any]:
    """The JSON object one result is stored as (nested ``INLINE`` results side by side, ``spread`` mappings item by
    item)."""
    out: dict[str, Any] = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name in _inline(type(result)) and dataclasses.is_dataclass(value):
            out.update(to_section(value))
            continue
        if f.metadata.get("spread"):
            out.update({k: _plain(v) for k, v in value.items()})
        elif value is None and f.default is None:
            continue  # left at its None default: not stored, as a step that does not measure it writes nothing
        else:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_section(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _claimed(cls: type) -> set[str]:
    """The keys of a section that a result's non-spread fields (inline ones included) read."""
    out: set[str] = set()
    types = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("spread"):
            continue
        if f.name in _inline(cls):
            out |= _claimed(types[f.name])
        else:
            out.add(f.name)
    return out


def _nest(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``to_section``: the constructor arguments of ``cls`` from its stored section."""
    types = typing.get_type_hints(cls)
    claimed = _claimed(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("spread"):
            out[f.name] = {k: v for k, v in section.items() if k not in claimed}
        elif f.name in _inline(cls):
            out[f.name] = _nest(types[f.name], section)
        elif f.name in section:
            out[f.name] = section[f.name]
    return out


def from_section(cls: type[T], section: dict[str, Any]) -> T | None:
    """The result stored in ``section``; None when the step has not finished (a field without default is missing).
    A value of the wrong type means the file was edited: an error that says so."""
    if not isinstance(section, dict):
        raise InputError(
            f"{METRICS}: a section is not a JSON object; the file was edited. Restore it, or start a new run"
        )
    args = _nest(cls, section)
    name = getattr(cls, "SECTION", cls.__name__)
    try:
        value = pydantic.TypeAdapter(cls).validate_python(args)
    except pydantic.ValidationError as exc:
        if all(e["type"] == "missing" for e in exc.errors()):
            return None
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise InputError(
            f"{METRICS} has an unreadable {name!r} section ({where}); it was edited. Restore it, or start a new run"
        ) from None
    # as strictly as config.json: a value is read only as written ("610" or true for a count, NaN for a fraction:
    # edited), so the section the result would be written as must be the one that was read
    for key, written in to_section(value).items():
        if key in section and not reader.same_json(section[key], written):
            raise InputError(
                f"{METRICS} has an unreadable {name!r} section ({key}: {json.dumps(section[key])} is not what "
                f"embedlab writes there); it was edited. Restore it, or start a new run"
            )
    return value
