"""Settings read into the schema of ``embedlab.config``: overrides from profiles, config files, flags and saved run
folders applied to a config, each bad key or value refused with one line that names it; a config back to JSON."""

from __future__ import annotations

import dataclasses
import functools
import stat
import types
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.errors import InputError
from embedlab.files import DuplicateKeyError, parse_json
from embedlab.schema import settings_of

C = TypeVar("C")


class ConfigError(InputError):
    """A config section, key or value that cannot be used: one line for the user, naming the key."""


@functools.cache
def _field_types(cls: type) -> dict[str, TypeAdapter]:
    """A pydantic validator per dataclass field, from the field's type hint with its range (the dataclass stays
    plain)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


def flag_of(f: dataclasses.Field) -> str:
    """A setting's flag: the one its declaration names, else ``--`` + its name with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def flag_name(key: str, cls: type | None = None) -> str:
    """The command-line flag of setting ``key`` (of ``cls``, else of whichever study declares it)."""
    for c in [cls] if cls is not None else [MoviesConfig, ProbeConfig, FinetuneConfig]:
        for f in settings_of(c):
            if f.name == key:
                return flag_of(f)
    return "--" + key.replace("_", "-")


def _expected(hint: Any) -> str:
    """A type hint as a reader would write it: 'int', 'list[float]', "'sgd' or 'adamw'"."""
    if typing.get_origin(hint) is Annotated:
        return _expected(typing.get_args(hint)[0])
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type):
        return hint.__name__
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _expected(a) for a in args)
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(_expected(a) for a in args)}]" if args else name


def range_text(hint: Any) -> str:
    """A setting's declared range as its --help shows it: "range [1, 100,000]", "range (0, 1)", "each in [1, 4,096]"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((t for t in map(range_text, typing.get_args(hint)) if t), "")
    if typing.get_origin(hint) is list:
        inner = range_text(typing.get_args(hint)[0])
        return inner.replace("range ", "each in ") if inner else ""
    if typing.get_origin(hint) is not Annotated:
        return ""
    base, *extras = typing.get_args(hint)
    if typing.get_origin(base) is list:  # a list with a length rule around typed items
        return range_text(base)
    bounds: dict[str, float] = {}
    for extra in extras:
        for rule in getattr(extra, "metadata", []):
            bounds.update({k: getattr(rule, k) for k in ("ge", "gt", "le", "lt") if getattr(rule, k, None) is not None})
    if not ({"ge", "gt"} & set(bounds) and {"le", "lt"} & set(bounds)):
        return ""

    def num(x: float) -> str:
        return f"{x:,}" if isinstance(x, int) else f"{x:g}"

    low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    return f"range {'[' if 'ge' in bounds else '('}{num(low)}, {num(high)}{']' if 'le' in bounds else ')'}"


def apply_overrides(cfg: C, overrides: Any, section: str = "", flags: bool = False) -> C:
    """A copy of ``cfg`` with ``overrides``, each value checked against its field's type hint and range.

    Strict: "64" is not an int, "no" not a bool, "Toy Story" not a list, 8.5 not an int (an int is a
    fine float), and 0 is not a dimension. pydantic does the checking, so the rules are its documented
    ones, not ours. ``flags``: the values came from the command line, so the message names the flag.
    """
    where = f"{section}." if section else ""
    if not isinstance(overrides, dict):
        raise ConfigError(f"config section {section or 'root'!r} must be a JSON object of settings, got {overrides!r}")
    types_ = _field_types(type(cfg))
    unknown = sorted(set(overrides) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[where + k for k in unknown]}; valid keys: {', '.join(sorted(types_))}"
        )
    clean, problems = {}, []
    for key, value in overrides.items():  # every bad value is named at once, not one per try
        try:
            clean[key] = types_[key].validate_python(value, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            at = "".join(f"[{p!r}]" for p in err["loc"] if p != "[key]")  # a bad dict key is named by its own path
            hint = typing.get_type_hints(type(cfg), include_extras=True)[key]
            name = (
                f"{flag_name(key, type(cfg))} {value!r}" + (f", at {at}" if at else "")
                if flags
                else f"config value {where}{key}{at} = {value!r}"
            )
            range_error = err["type"] in (
                "greater_than",
                "greater_than_equal",
                "less_than",
                "less_than_equal",
                "too_short",
                "too_long",
                "finite_number",
                "literal_error",
            )
            problems.append(f"{name}: {err['msg'].lower()}" + ("" if range_error else f" (expected {_expected(hint)})"))
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


#: The settings sections of a study's config file (a run's config.json); "study" and "steps" say what ran.
STUDY_SECTIONS = ("probe", "finetune", "movies")
CONFIG_KEYS = ("study", "steps", *STUDY_SECTIONS)


def check_sections(data: dict[str, Any], source: object) -> dict[str, Any]:
    """``data`` if every top-level key is a section embedlab reads, each of its shape: a misspelt section, or one that
    is
    not an object of settings (``"study": "vision"``), is an error whichever command reads the file, never ignored."""
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {unknown} in {source}; a study's config file has {', '.join(CONFIG_KEYS)}"
        )
    for name, value in data.items():
        if name == "steps":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ConfigError(f"section 'steps' of {source} must be a list of step names, got {value!r}")
        elif not isinstance(value, dict):
            raise ConfigError(f"section {name!r} of {source} must be a JSON object of settings, got {value!r}")
    return data


#: The largest config file read: a run's config.json is a few kB; anything near this is not one.
MAX_CONFIG_BYTES = 1_000_000


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON object of config overrides (the format ``config.json`` is saved in): a regular file of at most
    ``MAX_CONFIG_BYTES`` (a device such as /dev/zero, a named pipe or a folder is refused before any byte is read)."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"--config {p} is not a regular file (a device, a named pipe or a socket); pass a JSON file (a run's "
                "config.json, for example)"
            )
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"--config {p} is {st.st_size:,} bytes, more than the {MAX_CONFIG_BYTES:,} a config file can be; pass "
                "a JSON file of settings (a run's config.json is a few kB)"
            )
        data = parse_json(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {p} is a directory; pass a JSON file (a run's config.json, for example)") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"config file {p}: {exc}; keep the one you mean") from None
    except (ValueError, UnicodeDecodeError) as exc:  # not JSON, nested too deeply, not UTF-8
        raise ConfigError(f"config file {p} is not valid JSON: {exc}") from None
    except OSError as exc:  # no permission, a device that cannot be read, ...
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a JSON object of settings")
    return data


#: The key of a saved section that holds what a run derived (device, size, ...), not settings: never read back as one.
DERIVED = "resolved"


def without_derived(section: Any) -> Any:
    """A saved or given section of settings without what a run derived; anything but an object is left for
    ``apply_overrides`` to refuse."""
    return {k: v for k, v in section.items() if k != DERIVED} if isinstance(section, dict) else section


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-ready data."""
    return asdict(cfg)
