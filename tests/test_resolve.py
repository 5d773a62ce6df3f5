"""One resolver for every command's settings on --resume: saved < --config (run alone) < the flags that do not
change results; the flags that would are refused, and a folder another command made is refused. Folders hold only a
config.json written here; nothing runs."""

import json

import pytest

from embedlab.cli import build_parser
from embedlab.config import FinetuneConfig, MoviesConfig
from embedlab.errors import InputError
from embedlab.overrides import to_dict
from embedlab.resolve import resumed, study_settings


def folder(tmp_path, name, config):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


@pytest.fixture
def study(tmp_path):
    """A study's config.json as a smoke run writes it: the study section and every step's settings."""
    cfg = study_settings(parse("run", "--profile", "smoke", "--epochs", "3"))
    saved = {"study": {"profile": cfg.profile, "steps": cfg.steps}}
    saved |= {name: to_dict(getattr(cfg, name)) for name in ("probe", "finetune", "movies")}
    return folder(tmp_path, "study", saved), cfg


def test_each_command_resumes_its_saved_settings_with_the_flags_that_do_not_change_results(tmp_path, study):
    movies = folder(tmp_path, "movies", {"movies": to_dict(MoviesConfig(dim=7, iterations=11))})
    run, cfg = resumed(parse("movies", "--resume", movies, "--data-dir", tmp_path / "moved"), "movies")
    assert run.path == movies and (cfg.dim, cfg.iterations, cfg.data_dir) == (7, 11, str(tmp_path / "moved"))

    finetune = folder(tmp_path, "finetune", {"finetune": {**to_dict(FinetuneConfig(epochs=4)), "resolved": {}}})
    _, cfg = resumed(parse("vision", "finetune", "--resume", finetune, "--device", "cpu"), "finetune")
    assert (cfg.epochs, cfg.device) == (4, "cpu")  # the derived values are not settings

    path, saved = study
    _, cfg = resumed(parse("run", "--resume", path, "--offline"), "run")
    assert (cfg.profile, cfg.steps) == ("smoke", saved.steps)
    for name in ("probe", "finetune", "movies"):  # every setting as saved, --offline applied to every step
        assert to_dict(getattr(cfg, name)) == {**to_dict(getattr(saved, name)), "offline": True}


def test_a_run_resumed_with_a_config_file_changes_the_steps_not_yet_done(tmp_path, study):
    path, _ = study
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"movies": {"iterations": 9}}))
    _, cfg = resumed(parse("run", "--resume", path, "--config", fix), "run")
    assert cfg.movies.iterations == 9 and cfg.finetune.epochs == 3


@pytest.mark.parametrize(
    "argv, says",
    [
        (["movies", "--dim", "8"], "which --dim would change"),
        (["movies", "--profile", "smoke", "--out", "x"], "which --out, --profile would change"),
        (["movies", "--lrs", "adam=0.5"], "which --lrs would change"),
        (["vision", "finetune", "--lr", "0.1"], "which --lr would change"),
        (["vision", "finetune", "--config", "c.json"], "which --config would change"),
        (["run", "--epochs", "1", "--seed", "3"], "which --seed, --epochs would change"),
        (["run", "--steps", "movies"], "which --steps would change"),
    ],
)
def test_a_flag_that_would_change_results_is_refused_before_the_folder_is_read(tmp_path, argv, says):
    missing = tmp_path / "not-read"  # the refusal comes first: the folder is never opened
    command = {"movies": "movies", "vision": "finetune", "run": "run"}[argv[0]]
    split = 2 if argv[0] == "vision" else 1
    with pytest.raises(InputError, match=says.replace("-", r"\-")) as info:
        resumed(parse(*argv[:split], "--resume", missing, *argv[split:]), command)
    assert "start a new run instead" in str(info.value)


@pytest.mark.parametrize(
    "made_by, command, argv",
    [
        ("movies", "finetune", ["vision", "finetune"]),
        ("finetune", "movies", ["movies"]),
        ("study", "movies", ["movies"]),
        ("study", "finetune", ["vision", "finetune"]),  # a study resumes as a study: its steps ledger is there
        ("movies", "run", ["run"]),
        ("empty", "run", ["run"]),
    ],
)
def test_a_folder_made_by_another_command_is_refused_and_names_the_command(tmp_path, study, made_by, command, argv):
    configs = {
        "movies": {"movies": to_dict(MoviesConfig())},
        "finetune": {"finetune": to_dict(FinetuneConfig())},
        "empty": {},
    }
    path = study[0] if made_by == "study" else folder(tmp_path, made_by, configs[made_by])
    name = {"movies": "movies", "finetune": "vision finetune", "run": "run"}[command]
    with pytest.raises(InputError, match=f"was not made by 'embedlab {name}'"):
        resumed(parse(*argv, "--resume", path), command)
