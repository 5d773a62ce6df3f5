"""Each command's settings, resolved in one place: defaults < profile < --config file < flags for a new run folder; the
saved settings < the flags that do not change results for --resume (the others are refused)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedlab.config import DEFAULT_GRID, FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.errors import InputError
from embedlab.flags import run_settings
from embedlab.overrides import (
    CONFIG_KEYS,
    STUDY_SECTIONS,
    apply_overrides,
    check_sections,
    flag_of,
    load_config_file,
    without_derived,
)
from embedlab.profiles import PROFILE_ALIASES, PROFILE_NAMES, profile_overrides
from embedlab.runs import RunDir
from embedlab.schema import settings_of, with_followers


def given(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def setting_flags(args: argparse.Namespace, cls: type, policy: str | None = None) -> dict[str, Any]:
    """The settings of ``cls`` given on the command line (those of one resume ``policy`` only, when given), with their
    followers."""
    names = [
        f.name for f in settings_of(cls) if f.name != "grid" and (policy is None or f.metadata["resume"] == policy)
    ]
    return with_followers(cls, given(args, names))


def given_flags(args: argparse.Namespace, cls: type, policy: str) -> list[str]:
    """The flags given on the command line for the settings of ``cls`` under one resume ``policy``."""
    out = []
    for f in settings_of(cls):
        if f.metadata["resume"] != policy:
            continue
        if f.name == "grid":
            out += [
                flag
                for flag, key in (("--optimizers", "optimizers"), ("--lrs", "lrs"))
                if getattr(args, key, None) is not None
            ]
        elif getattr(args, f.name, None) is not None:
            out.append(flag_of(f))
    return out


def layered(default: Any, profile: dict[str, Any], config_path: str | None, section: str, flags: dict[str, Any]) -> Any:
    """defaults < profile < --config file (its ``section`` or the whole object) < flags, then validated."""
    cfg = apply_overrides(default, profile)
    if config_path:
        data = load_config_file(config_path)
        if set(data) & set(CONFIG_KEYS):  # a study's file (a run's config.json): take this command's section
            section_data = check_sections(data, config_path).get(section, {})
        else:  # a file of this command's settings alone
            section_data = data
        cfg = apply_overrides(cfg, without_derived(section_data), section)
    cfg = apply_overrides(cfg, flags, flags=True)
    cfg.validate()
    return cfg


def movies_config(args: argparse.Namespace) -> MoviesConfig:
    """defaults < profile < --config file < flags."""
    flags = setting_flags(args, MoviesConfig)
    profile = profile_overrides(args.profile or "auto", "movies", False)
    if args.optimizers is not None or args.lrs:
        base = layered(MoviesConfig(), profile, args.config, "movies", {})
        grid = dict(base.grid)
        if args.optimizers is not None:
            names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
            if not names:
                raise InputError(
                    f"--optimizers {args.optimizers!r} names no optimiser; give one or more, e.g. adam,sgd (of "
                    f"{', '.join(DEFAULT_GRID)}), or leave the flag out for the profile's grid"
                )
            # an optimiser the profile's grid leaves out gets the default grid's rates (the smoke grid has two
            # optimisers)
            grid = {n: grid.get(n) or DEFAULT_GRID.get(n, []) for n in names}
        for name, lrs in args.lrs or []:
            grid[name] = lrs
        flags["grid"] = grid
    return layered(MoviesConfig(), profile, args.config, "movies", flags)


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    """defaults < profile < --config file < flags."""
    return layered(
        ProbeConfig(),
        profile_overrides(args.profile or "auto", "probe", wants_cuda(args.device)),
        args.config,
        "probe",
        setting_flags(args, ProbeConfig),
    )


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """defaults < profile (auto: by device) < --config file < flags."""
    return layered(
        FinetuneConfig(),
        profile_overrides(args.profile or "auto", "finetune", wants_cuda(args.device)),
        args.config,
        "finetune",
        setting_flags(args, FinetuneConfig),
    )


def refuse_with_resume(args: argparse.Namespace, refused: Sequence[str]) -> None:
    """--resume continues with the saved settings: any of the ``refused`` flags given on the command line is an error,
    not ignored."""
    if refused:
        raise InputError(
            f"--resume continues {args.resume} with its saved settings, which {', '.join(refused)} would change; "
            f"start a new run instead (--config {args.resume}/config.json repeats it with your changes)"
        )


def command_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags of the command itself (not settings) given on the command line."""
    return [f"--{n}" for n in names if getattr(args, n, None) is not None]


def wants_cuda(device: str | None) -> bool:
    """Whether ``--device`` (unset, auto, cuda or cuda:N) will run on CUDA here: the gpu profile and the nccl
    backend."""
    import torch

    return torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))


def backend_device(device: str | None) -> str:
    """ "cuda" (nccl) when the run will train on CUDA, else "cpu" (gloo)."""
    return "cuda" if wants_cuda(device) else "cpu"


def run_flags(args: argparse.Namespace, policy: str | None = None) -> dict[str, Any]:
    return given(args, [n for n, f in run_settings().items() if policy is None or f.metadata["resume"] == policy])


#: What each command that can resume saved in config.json: the section holding its settings, and its settings' class.
RESUMABLE: dict[str, tuple[type, ...]] = {
    "movies": (MoviesConfig,),
    "finetune": (FinetuneConfig,),
    "run": (ProbeConfig, FinetuneConfig, MoviesConfig),
}


def resumed(args: argparse.Namespace, command: str) -> tuple[RunDir, Any]:
    """The run folder ``--resume`` names and its exact settings: saved < ``--config`` (``run`` alone: a fix for the
    steps not done yet) < the flags that do not change results. Flags that would change results are refused."""
    from embedlab.store import Store
    from embedlab.study import study_config

    classes = RESUMABLE[command]
    own = ("out", "profile", "steps") if command == "run" else ("out", "config", "profile")
    refused = [flag for cls in classes for flag in given_flags(args, cls, "refuse")] + command_flags(args, own)
    refuse_with_resume(args, list(dict.fromkeys(refused)))
    run = RunDir.open(args.resume)  # claimed by rank 0 in on_ranks
    saved = Store(run).saved_config()
    section = "study" if command == "run" else command
    made_here = isinstance(saved.get(section), dict) and bool(saved[section])
    if command == "run":
        made_here = (
            made_here
            and isinstance(saved["study"].get("profile"), str)
            and isinstance(saved["study"].get("steps"), list)
        )
    elif "study" in saved:
        made_here = False
    if not made_here:
        raise InputError(
            f"{run.path} was not made by 'embedlab {COMMAND_NAMES[command]}' (its config.json has no {section!r}"
            " section); resume it with the command that made it"
        )
    if command == "run":
        sections = {k: saved.get(k, {}) for k in STUDY_SECTIONS}
        if args.config:  # a fix for the steps not yet done, e.g. a lower learning rate after a divergence
            extra = check_sections(load_config_file(args.config), args.config)
            sections = {
                k: {**as_section(v, k, run.path / "config.json"), **as_section(extra.get(k, {}), k, args.config)}
                for k, v in sections.items()
            }
        study = saved["study"]
        cfg = study_config(study["profile"], False, run_flags(args, "apply"), {**sections, "steps": study["steps"]})
    else:
        (cls,) = classes
        flags = setting_flags(args, cls, "apply")
        cfg = apply_overrides(cls(), {**without_derived(saved[command]), **flags}, command)
        cfg.validate()
    return run, cfg


def study_settings(args: argparse.Namespace) -> Any:
    """A new main job's settings: defaults < profile < --config file (a run's config.json repeats its profile and
    steps too) < flags."""
    from embedlab.study import study_config

    shared = {**run_flags(args), **given(args, ("steps",))}
    sections = check_sections(load_config_file(args.config), args.config) if args.config else {}
    saved_study = as_section(sections.get("study", {}), "study", args.config)
    if "steps" in saved_study and "steps" not in sections:  # a run's config.json: repeat its steps too
        sections["steps"] = saved_study["steps"]
    profile = args.profile or saved_study.get("profile", "auto")
    if not isinstance(profile, str) or profile not in (*PROFILE_NAMES, *PROFILE_ALIASES):
        raise InputError(f"study.profile in {args.config} is {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
    return study_config(profile, wants_cuda(args.device), shared, sections)


#: How the user types each command.
COMMAND_NAMES = {"movies": "movies", "finetune": "vision finetune", "run": "run"}


def as_section(value: Any, name: str, source: str | Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(f"section {name!r} of {source} must be a JSON object of settings, got {value!r}")
    return value
