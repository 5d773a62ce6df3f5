"""One declaration per setting: the flags, their help, the profiles and the --resume policy all derive from it."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from embedlab import cli, resolve
from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.errors import InputError
from embedlab.overrides import apply_overrides
from embedlab.profiles import PROFILES
from embedlab.schema import RESUME_POLICIES, setting, settings_of

README = Path(__file__).resolve().parents[1] / "README.md"
CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMANDS = {MoviesConfig: ["movies"], ProbeConfig: ["vision", "probe"], FinetuneConfig: ["vision", "finetune"]}


def subparser(*path: str) -> argparse.ArgumentParser:
    p = cli.build_parser()
    for name in path:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = action.choices[name]
    return p


def flags_of(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def flags_for(f: dataclasses.Field) -> list[str]:
    flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
    return flag.split("/")


@pytest.mark.parametrize("cls", list(COMMANDS), ids=lambda c: c.__name__)
def test_every_setting_is_declared_once_with_a_flag_help_and_a_resume_policy(cls):
    fields = dataclasses.fields(cls)
    assert [f.name for f in settings_of(cls)] == [f.name for f in fields]  # nothing declared outside the schema
    parser_flags = flags_of(subparser(*COMMANDS[cls]))
    for f in fields:
        assert f.metadata["help"].strip() and f.metadata["resume"] in RESUME_POLICIES, f.name
        assert set(flags_for(f)) <= parser_flags, f.name
    # a setting several studies share is the same declaration in each, not a copy with its own help
    for other in COMMANDS:
        for f in settings_of(other):
            mine = next((g for g in fields if g.name == f.name), None)
            if mine is not None and f.name in {
                "data_dir",
                "offline",
                "seed",
                "backbone",
                "weights",
                "device",
                "cache_dir",
            }:
                assert mine.metadata is f.metadata, f.name


def test_the_main_job_offers_every_setting_declared_for_it():
    run_flags = flags_of(subparser("run"))
    for cls in COMMANDS:
        for f in settings_of(cls):
            offered = any(g.metadata["run"] for c in COMMANDS for g in settings_of(c) if g.name == f.name)
            assert (set(flags_for(f)) <= run_flags) == offered, (cls.__name__, f.name)
    for flag in ("--seed", "--epochs", "--dim", "--top", "--backbone", "--data-dir"):
        assert flag in run_flags


def test_a_main_job_flag_reaches_every_study_that_has_the_setting():
    from embedlab.study import study_config

    args = cli.build_parser().parse_args(
        ["run", "--seed", "7", "--epochs", "3", "--dim", "12", "--top", "5", "--offline"]
    )
    cfg = study_config("cpu", False, {**resolve.run_flags(args)})
    # the held-out seed follows
    assert cfg.probe.seed == cfg.finetune.seed == cfg.movies.seed == cfg.movies.holdout_seed == 7
    assert (cfg.finetune.epochs, cfg.movies.dim, cfg.movies.top_k) == (3, 12, 5)
    assert cfg.probe.offline and cfg.finetune.offline and cfg.movies.offline


def _sample(parser: argparse.ArgumentParser, flag: str) -> list[str]:
    """A value argparse accepts for ``flag`` (the refusal comes before any range check)."""
    action = next(a for a in parser._actions if flag in a.option_strings)
    if action.nargs == 0:
        return [flag]
    if action.choices:
        return [flag, next(iter(action.choices))]
    if flag == "--lrs":
        return [flag, "adam=0.1"]
    return [flag, "1"]


@pytest.mark.parametrize("cls", [MoviesConfig, FinetuneConfig], ids=lambda c: c.__name__)
def test_resume_refuses_each_setting_that_changes_results_and_applies_the_others(cls, tmp_path, capsys):
    parser = subparser(*COMMANDS[cls])
    refused = [flag for f in settings_of(cls) if f.metadata["resume"] == "refuse" for flag in flags_for(f)]
    applied = [flag for f in settings_of(cls) if f.metadata["resume"] == "apply" for flag in flags_for(f)]
    assert refused and applied
    for flag in refused:
        code = cli.main([*COMMANDS[cls], "--resume", str(tmp_path / "nowhere"), *_sample(parser, flag)])
        err = capsys.readouterr().err
        assert code == 2 and f"which {flag} would change" in err, (flag, err)
    for flag in applied:  # accepted: the error is then about the folder, not the flag
        code = cli.main([*COMMANDS[cls], "--resume", str(tmp_path / "nowhere"), *_sample(parser, flag)])
        err = capsys.readouterr().err
        assert code == 2 and "would change" not in err and "nowhere" in err, (flag, err)


def test_main_job_resume_refuses_its_result_flags(tmp_path, capsys):
    for flag in ("--seed", "--epochs", "--dim", "--top", "--backbone", "--weights"):
        assert cli.main(["run", "--resume", str(tmp_path / "nowhere"), flag, "1"]) == 2
        assert f"which {flag} would change" in capsys.readouterr().err
    for flag in ("--data-dir", "--cache-dir", "--device"):
        assert cli.main(["run", "--resume", str(tmp_path / "nowhere"), flag, "x"]) == 2
        assert "would change" not in capsys.readouterr().err


def test_adding_a_setting_is_one_declaration():
    """A new field with ``setting(...)`` gets its flag, help, type and range check and resume policy with no other
    edit."""

    @dataclasses.dataclass
    class WithNew(MoviesConfig):
        shortlist: Annotated[int, Field(ge=1, le=50)] = setting(20, help="candidates kept before re-ranking")

    p = cli._Parser(prog="t")
    cli.add_setting_flags(p, WithNew)
    assert "--shortlist" in flags_of(p) and "candidates kept before re-ranking (default 20; range [1, 50])" in " ".join(
        p.format_help().split()
    )
    args = p.parse_args(["--shortlist", "7"])
    cfg = apply_overrides(WithNew(), resolve.setting_flags(args, WithNew), flags=True)
    assert cfg.shortlist == 7 and resolve.given_flags(args, WithNew, "refuse") == ["--shortlist"]
    with pytest.raises(InputError, match="--shortlist 99: input should be less than or equal to 50"):
        apply_overrides(WithNew(), resolve.setting_flags(p.parse_args(["--shortlist", "99"]), WithNew), flags=True)


def test_profiles_name_only_declared_settings():
    for name, sections in PROFILES.items():
        for section, overrides in sections.items():
            cls = cli.STUDY_CLASSES[section]
            assert set(overrides) <= {f.name for f in settings_of(cls)}, (name, section)
            apply_overrides(cls(), overrides)  # and each value passes its declared type and range


def _readme_commands(doc: Path = README, heading: str = "## Command line") -> dict[str, set[str]]:
    """The flags a document's command-line block lists for each command."""
    text = doc.read_text()
    block = text[text.index(heading) :]
    block = block[block.index("```text") + 7 : block.index("```", block.index("```text") + 7)]
    out: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"embedlab ((?:vision )?\w+)", line)
        if m:
            current = m.group(1)
        elif not line.startswith(" "):
            current = None
        if current:
            out.setdefault(current, set()).update(re.findall(r"--[a-z][a-z0-9-]*", line))
    return out


@pytest.mark.parametrize(
    "doc, heading, commands",
    [
        (README, "## Command line", {"run", "recommend", "report"}),
        (CLI_DOC, "# The command line", {"run", "movies", "recommend", "report", "vision probe", "vision finetune"}),
    ],
)
def test_the_documented_command_line_and_help_agree(doc, heading, commands):
    listed = _readme_commands(doc, heading)
    assert commands <= set(listed)
    for command, flags in listed.items():
        actual = flags_of(subparser(*command.split()))
        assert flags <= actual, (command, sorted(flags - actual))  # nothing the document shows is missing
    run = flags_of(subparser("run")) - {"-h", "--help"}
    # -q is --quiet; --no-X is --X's other half
    shown = {f for f in run if f.startswith("--") and not f.startswith("--no-")}
    assert shown <= listed["run"], sorted(shown - listed["run"])  # and the main job's every flag is shown


def _unbounded_numbers(schema: dict, where: str, defs: dict) -> list[str]:
    """The places in a JSON schema where an integer or a number has no upper bound."""
    out = []
    if "$ref" in schema:
        return _unbounded_numbers(defs[schema["$ref"].split("/")[-1]], where, defs)
    if schema.get("type") in ("integer", "number") and "maximum" not in schema and "exclusiveMaximum" not in schema:
        out.append(where)
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            out += _unbounded_numbers(sub, where, defs)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += _unbounded_numbers(schema[key], f"{where}[{key}]", defs)
    return out


def test_every_numeric_setting_has_a_range_with_an_upper_end():
    """Declared beside its type: a value no real run could finish with (an extra zero or three) is refused, not
    saved."""
    import typing

    from pydantic import TypeAdapter

    from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
    from embedlab.schema import settings_of

    unbounded = []
    for cls in (MoviesConfig, ProbeConfig, FinetuneConfig):
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in settings_of(cls):
            schema = TypeAdapter(hints[f.name]).json_schema()
            unbounded += _unbounded_numbers(schema, f"{cls.__name__}.{f.name}", schema.get("$defs", {}))
    assert unbounded == []


def test_help_states_every_numeric_settings_range(capsys):
    """The range each numeric setting declares is printed by --help beside its default."""
    import typing

    from embedlab.overrides import range_text

    hints = typing.get_type_hints(MoviesConfig, include_extras=True)
    assert (
        range_text(hints["iterations"]) == "range [1, 100,000]"
        and range_text(hints["holdout_fraction"]) == "range (0, 1)"
    )
    assert range_text(hints["dim_sweep"]) == "each in [1, 4,096]" and range_text(hints["metric"]) == ""
    with pytest.raises(SystemExit):
        cli.main(["movies", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    numeric = [f for f in dataclasses.fields(MoviesConfig) if range_text(hints[f.name])]
    assert len(numeric) >= 25
    for f in numeric:
        if f.name != "grid":
            assert range_text(hints[f.name]) in text, f.name
