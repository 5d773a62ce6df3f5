"""The typed results and their one persistence layer: what is saved is what is loaded, field for field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from embedlab.cli import main
from embedlab.errors import InputError
from embedlab.results import ColdStart, Comparison, Holdout, MoviesRun, RunResults, StepStatus
from embedlab.runs import RunDir
from embedlab.store import load, mark_stopped, save, save_step, to_section


def test_a_saved_result_loads_back_equal(tmp_path: Path, make_result):
    run = RunDir.create(tmp_path / "run")
    probe, ft = make_result.probe(0.81), make_result.finetune(0.9)
    cold = ColdStart(
        {
            "< 10 likes": {
                "most popular": {"hit_rate@10": 0.5, "queries": 7.0},
                "embedding cosine (d=4)": {"hit_rate@10": None},
            }
        }
    )
    hold = Holdout(
        refit_status="converged",
        queries_total=12,
        anchor_notes=["a note"],
        methods={"most popular": {"hit_rate@10": 0.25, "queries": 12.0}},
    )
    for r in (probe, ft, cold, hold, Comparison(0.09, 0.6, 10)):
        save(run, r)
    back = load(run)
    assert (back.probe, back.finetune, back.movies_cold_start, back.movies_holdout) == (probe, ft, cold, hold)
    assert back.comparison == Comparison(0.09, 0.6, 10) and back.movies_fit is None


def test_metrics_json_keeps_its_flat_shape(tmp_path: Path, make_result):
    """Nested results are stored side by side (``probe.test_accuracy``, not ``probe.fit.evaluation.test_accuracy``) and
    a held-out method is a key of its section, as users' scripts read them."""
    run = RunDir.create(tmp_path / "run")
    save(run, make_result.probe(0.81, extract_train_seconds=None))
    save(
        run,
        Holdout(
            refit_status="converged", queries_total=3, anchor_notes=[], methods={"most popular": {"recall@10": 0.5}}
        ),
    )
    m = json.loads((run.path / "metrics.json").read_text())
    assert (
        m["probe"]["test_accuracy"] == 0.81
        and m["probe"]["backbone"] == "efficientnet_lite0"
        and "fit" not in m["probe"]
    )
    assert "extract_train_seconds" not in m["probe"]  # a None left at its default is not written, as before
    assert (
        m["movies_holdout"]["most popular"] == {"recall@10": 0.5} and m["movies_holdout"]["refit_status"] == "converged"
    )


def test_an_unfinished_step_is_none_and_an_edited_one_is_one_error(tmp_path: Path, make_result):
    run = RunDir.create(tmp_path / "run")
    save(run, make_result.probe())
    m = json.loads((run.path / "metrics.json").read_text())
    del m["probe"]["test_accuracy"]  # as a step that stopped before its last value
    run.write_json("metrics.json", m)
    assert load(run).probe is None
    m["probe"]["test_accuracy"] = "high"
    run.write_json("metrics.json", m)
    with pytest.raises(InputError, match=r"unreadable 'probe' section \(.*test_accuracy"):
        load(run)


def test_step_statuses_and_the_stop_mark(tmp_path: Path):
    run = RunDir.create(tmp_path / "run")
    save_step(run, "probe", StepStatus("running"))
    save_step(run, "probe", StepStatus("done", seconds=1.5))
    save_step(run, "movies", StepStatus("failed", error="boom"))
    steps = json.loads((run.path / "metrics.json").read_text())["steps"]
    assert steps == {"probe": {"status": "done", "seconds": 1.5}, "movies": {"status": "failed", "error": "boom"}}
    assert load(run).steps.done() == {"probe"}
    save(run, MoviesRun(total_seconds=3.0, processes=1, peak_rss_gib=0.5))
    mark_stopped(run, "failed: out of memory")
    assert load(run).movies_run == MoviesRun(3.0, 1, 0.5, "failed: out of memory")
    mark_stopped(run, None)
    assert load(run).movies_run.status is None and load(run).movies_run.total_seconds == 3.0


def test_a_movie_run_folder_round_trips_every_section(movielens_root: Path, tmp_path: Path):
    """What the study wrote, loaded as typed results and stored again, is metrics.json to the last key and digit."""
    out = tmp_path / "movies"
    assert (
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(out),
                "--profile",
                "smoke",
                "--dim",
                "4",
                "--iterations",
                "30",
                "--min-likes",
                "2",
                "--offline",
                "--no-map",
                "--allow-modified-data",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    results = load(RunDir.open(out))
    found = {
        f.name for f in dataclasses.fields(RunResults) if getattr(results, f.name) is not None and f.name != "steps"
    }
    assert found == set(metrics)  # every section written is read back as its type
    for name in found:
        assert to_section(getattr(results, name)) == metrics[name], name
    assert list(results.movies_recommend.top) == list(results.movies_recommend.query_titles.values())
    import embedlab

    assert embedlab.load_run(out) == results  # the notebook's way in reads the same
