"""Command-line flags generated from the settings' declarations: one flag per setting, its spelling, type, choices
and help (with its default, its profiles' values and its range) all read from ``embedlab.config``."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from embedlab.config import DEFAULT_GRID, FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.overrides import flag_of, range_text
from embedlab.profiles import PROFILE_ALIASES, PROFILE_NAMES, PROFILES
from embedlab.schema import settings_of


def _scalar(hint: Any) -> tuple[Callable[[str], Any] | None, list[str] | None]:
    """How one flag value is read: (converter, choices) from a field's type hint, ranges left to pydantic."""
    if typing.get_origin(hint) is Annotated:
        return _scalar(typing.get_args(hint)[0])
    if typing.get_origin(hint) is Literal:
        return str, [str(a) for a in typing.get_args(hint)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _scalar(next(a for a in typing.get_args(hint) if a is not type(None)))
    return {int: int, float: float, str: str}.get(hint, str), None


def _comma_list(convert: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [convert(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def add_setting_flags(p: argparse.ArgumentParser, cls: type, names: Sequence[str] | None = None) -> None:
    """One flag per setting of ``cls`` (or of ``names``), all derived from its declaration: spelling, type, choices,
    help."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in settings_of(cls):
        if names is not None and f.name not in names:
            continue
        if f.name == "grid":  # one setting, two flags: which optimisers, and the rates of one of them
            _add_grid_flags(p)
            continue
        meta, hint, default = f.metadata, hints[f.name], _default_of(f)
        help_text = _help_of(f, cls, hint, default)
        flag = flag_of(f)
        metavar = flag.lstrip("-").upper().replace("-", "_")
        bare = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint  # the type without its range
        if hint is bool:
            p.add_argument(
                flag,
                dest=f.name,
                action=once(argparse.BooleanOptionalAction),
                default=None,
                help=help_text + f" (default: {'on' if default else 'off'})",
            )
        elif typing.get_origin(bare) is list:
            convert, choices = _scalar(typing.get_args(bare)[0])
            if meta["repeat"]:
                p.add_argument(flag, dest=f.name, action="append", metavar=metavar, help=help_text)
            else:
                what = "integers" if convert is int else "numbers" if convert is float else "names"
                p.add_argument(
                    flag,
                    dest=f.name,
                    type=_comma_list(convert, what),
                    metavar="A,B,...",
                    help=help_text + (f"; from {', '.join(choices)}" if choices else ""),
                )
        else:
            convert, choices = _scalar(hint)
            p.add_argument(
                flag, dest=f.name, type=convert, choices=choices, metavar=None if choices else metavar, help=help_text
            )


def _help_of(f: dataclasses.Field, cls: type, hint: Any, default: Any) -> str:
    """A setting's help: its declared text, then its default, the profiles that change it and its range."""
    meta = f.metadata
    shown = (
        []
        if "default" in meta["help"] or default in (None, [], {}) or isinstance(default, (bool, dict))
        else [f"default {_shown(default)}"]
    )
    shown += [
        f"profile {name}: {_shown(over[f.name])}"
        for name, sections in PROFILES.items()
        for section, over in sections.items()
        if STUDY_CLASSES.get(section) is cls and f.name in over and f.name != "grid"
    ]
    shown += [r for r in [range_text(hint)] if r]
    return (meta["help"] + (f" ({'; '.join(shown)})" if shown else "")).replace("%", "%%")


def _add_grid_flags(p: argparse.ArgumentParser) -> None:
    """The movie sweep's grid as two flags: which optimisers, and the learning rates of one of them."""
    p.add_argument(
        "--optimizers",
        metavar="OPT,OPT",
        help=f"comma-separated subset of the sweep's optimisers, e.g. adam,sgd (default: {','.join(DEFAULT_GRID)})",
    )
    p.add_argument(
        "--lrs",
        type=_lr_spec,
        action="append",
        metavar="OPT=LR,...",
        help="learning rates of one optimiser (repeatable), e.g. adam=0.1,0.3",
    )


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]


def _shown(value: Any) -> str:
    return (
        ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, list)
        else (f"{value:g}" if isinstance(value, float) else str(value))
    )


def _lr_spec(text: str) -> tuple[str, list[float]]:
    name, sep, lrs = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected OPTIMISER=LR1,LR2,... (e.g. adam=0.01,0.1), got {text!r}")
    return name.strip(), _comma_list(float, "numbers")(lrs)


def add_run_folder_args(p: argparse.ArgumentParser, study: str, resume: str | None) -> None:
    p.add_argument("--out", type=Path, help=f"run folder to create (default: runs/<timestamp>-{study})")
    if resume:
        p.add_argument("--resume", type=Path, metavar="RUN", help=resume)
    p.add_argument(
        "--config",
        metavar="FILE.json",
        help="one JSON file of settings (a key given twice is refused): a run's config.json works ("
        + ("its probe, finetune and movies sections)" if study == "study" else f"its {study!r} section is read)"),
    )
    p.add_argument(
        "--profile",
        choices=[*PROFILE_NAMES, *PROFILE_ALIASES],
        metavar="{" + ",".join(PROFILE_NAMES) + "}",
        help="preset sizes: auto (default) is gpu on CUDA, else cpu; smoke: small subsets, for checks",
    )


def once(action: type[argparse.Action]) -> type[argparse.Action]:
    """``action`` refusing a second use of its flag in one command line (``--top 2 --top 3``, ``--map --no-map``):
    a repeated single-valued flag would otherwise keep its last value without a word. Lists that are given by
    repeating a flag (``--query``, ``--lrs``) use ``append`` and stay repeatable."""

    class Once(action):  # type: ignore[valid-type, misc]
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            seen = namespace.__dict__.setdefault("_flags_seen", {})
            if self.dest in seen:
                both = [
                    " ".join([str(o), _shown(v)]) if v not in (None, []) else str(o)
                    for o, v in (seen[self.dest], (option_string, values))
                ]
                raise argparse.ArgumentError(self, f"given twice ({both[0]}, then {both[1]}); give it once")
            seen[self.dest] = (option_string, values)
            super().__call__(parser, namespace, values, option_string)

    Once.__name__ = f"Once{action.__name__}"
    return Once


#: The study settings that `embedlab run` offers as flags: those declared with ``run=True``, each applied to every study
#: that has it.
STUDY_CLASSES = {"probe": ProbeConfig, "finetune": FinetuneConfig, "movies": MoviesConfig}


def run_settings() -> dict[str, dataclasses.Field]:
    """The settings of `embedlab run`, by name: one declaration each (a setting that several studies share is declared
    once)."""
    out: dict[str, dataclasses.Field] = {}
    for cls in STUDY_CLASSES.values():
        for f in settings_of(cls):
            if f.metadata["run"]:
                out.setdefault(f.name, f)
    return out
