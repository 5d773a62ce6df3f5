"""How a setting is declared: its type with a range (pydantic checks it), its help, its resume policy and its flag,
read by the command line, the config files and the report alike; the device check every vision study shares."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from typing import Annotated, Any

from pydantic import Field


# The range of every numeric setting, declared with its type (pydantic checks it whenever a value is set). Every range
# has an
# upper end too: the largest value a real run can use, so that a typo (an extra zero or three) is refused, not saved and
# run.
def IntRange(low: int, high: int) -> Any:
    """An int in [low, high], as a type: ``dim: IntRange(1, 4096)``."""
    return Annotated[int, Field(ge=low, le=high)]


def FloatRange(low: float, high: float, *, open_low: bool = True) -> Any:
    """A finite float in (low, high] (or [low, high] with ``open_low=False``), as a type."""
    return Annotated[
        float, Field(gt=low, le=high, allow_inf_nan=False) if open_low else Field(ge=low, le=high, allow_inf_nan=False)
    ]


#: The resume policy of a setting: "apply" — it says where or how (a folder, a device), so a resumed run takes the
#: new value; "refuse" — it changes results, so a resumed run keeps its saved value and the flag is an error.
RESUME_POLICIES = ("apply", "refuse")


def setting(
    default: Any,
    *,
    help: str,
    resume: str = "refuse",
    flag: str | None = None,
    run: bool = False,
    follows: str | None = None,
    repeat: bool = False,
) -> Any:
    """One setting, declared once: its default, its help text and how the command line and ``--resume`` treat it.

    The type and range are the field's annotation (pydantic checks them); everything else derives from this:
    the flag (``--`` + the name with dashes, or ``flag``), its ``--help`` line, whether ``--resume`` applies or
    refuses it (``resume``), whether ``embedlab run`` offers it for every study that has it (``run``), a setting
    that takes another's value when only that one is given (``follows``), and a list given by repeating the flag
    (``repeat``) instead of as comma-separated values. A list or dict default is copied for every config.
    """
    if resume not in RESUME_POLICIES:
        raise ValueError(f"resume must be one of {RESUME_POLICIES}")
    meta = {"help": help, "resume": resume, "flag": flag, "run": run, "follows": follows, "repeat": repeat}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def settings_of(cls: type) -> list[dataclasses.Field]:
    """The declared settings of a config class, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def with_followers(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` plus each setting of ``cls`` that follows a given one and was not given itself (``--seed`` sets the
    held-out seed too)."""
    out = dict(given)
    for f in settings_of(cls):
        leader = f.metadata["follows"]
        if leader in given and f.name not in given:
            out[f.name] = given[leader]
    return out


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (None if it can): checked before any data is loaded."""
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        return f"--device must be auto, cpu, cuda, cuda:N or mps (got {device!r})"
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"--device {device}: this machine has no CUDA device visible to torch; use --device cpu (or auto)"
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        return "--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)"
    return None
