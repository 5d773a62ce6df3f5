"""The command line end to end on a synthetic MovieLens folder written by the test."""

import json

import pytest

from embedlab.cli import main
from embedlab.report.common import MISSING

# the test's own ratings are not the official release: used on purpose
FAST = [
    "--profile",
    "smoke",
    "--dim",
    "4",
    "--iterations",
    "40",
    "--min-likes",
    "2",
    "--offline",
    "--no-map",
    "--allow-modified-data",
]


@pytest.fixture
def finished_run(movielens_root, tmp_path_factory, capsys):
    """A finished movie study, run with --quiet: the console gets the results, run.log every progress line."""
    out = tmp_path_factory.mktemp("runs") / "movies"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, "--quiet"]) == 0
    printed, log = capsys.readouterr().out, (out / "run.log").read_text()
    assert "best run:" in printed and "[2B]" not in printed and "[2A]" not in printed
    recs = json.loads((out / "metrics.json").read_text())["movies_recommend"]
    # each query's list, as metrics.json holds it
    for title in ("Apollo 13 (1995)", "Toy Story (1995)", "Home Alone (1990)"):
        assert f"top10[{title}]: " + "; ".join(recs["top"][title]) in printed
    assert "INFO    [2A]" in log and "INFO    [2B] best:" in log and "[eval] held-out users" in log
    return out


def test_movies_run_folder_holds_what_its_saved_numbers_say(finished_run):
    """Each saved table agrees with a recomputation from the other saved files, not just exists."""
    import numpy as np
    import pandas as pd
    import torch

    from embedlab.movies.recommend import eligible_items, similar_items

    out = finished_run
    cfg = json.loads((out / "config.json").read_text())["movies"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert cfg["dim"] == 4 and cfg["iterations"] == 40 and metrics["movies_data"]["users"] == 60
    # 2B: one sweep row per grid setting; each run's loss history ends at the cost its row reports
    sweep = pd.read_csv(out / "tables" / "sweep.csv")
    assert sorted(zip(sweep["optimizer"], sweep["lr"])) == sorted(
        (o, lr) for o, lrs in cfg["grid"].items() for lr in lrs
    )
    hist = pd.read_csv(out / "artefacts" / "loss_histories.csv")
    for row in sweep.itertuples():
        costs = hist[(hist["optimizer"] == row.optimizer) & (hist["lr"] == row.lr)]["cost"]
        assert costs.iloc[-1] == pytest.approx(row.final_cost, rel=1e-12)
        assert len(costs) == row.iterations + 1 or row.status == "diverged"
    ok = sweep[sweep["status"] != "diverged"]
    assert metrics["movies_fit"]["best_cost"] == pytest.approx(ok["final_cost"].min(), rel=1e-12)
    # 2C: each query's table is the top of the saved embedding under the run's metric and like floor
    z, items = np.load(out / "artefacts" / "embeddings.npz"), pd.read_csv(out / "artefacts" / "items.csv")
    v = torch.from_numpy(z["v"])
    eligible = eligible_items(items["likes"].to_numpy(), cfg["min_likes"])
    for query, slug in [
        ("Toy Story (1995)", "toy_story"),
        ("Apollo 13 (1995)", "apollo_13"),
        ("Home Alone (1990)", "home_alone"),
    ]:
        row = int(np.flatnonzero(items["title"] == query)[0])
        idx, scores = similar_items(v, row, cfg["top_k"], eligible, cfg["metric"])
        table = pd.read_csv(out / "tables" / f"recs_{slug}.csv")
        assert list(table["title"]) == list(items["title"].iloc[idx]) == metrics["movies_recommend"]["top"][query]
        assert np.allclose(table["similarity"], scores, atol=5e-5) and (np.diff(table["similarity"]) <= 0).all()
        assert list(table["likes"]) == list(items["likes"].iloc[idx]) and (table["likes"] >= cfg["min_likes"]).all()
    # held-out: one row per method, rates in [0, 1], and metrics.json holds the same numbers
    holdout = pd.read_csv(out / "tables" / "holdout.csv")
    assert {"co-likes raw X_ij", "most popular"} <= set(holdout["method"]) and any(
        "EASE" in m for m in holdout["method"]
    )
    assert any("ALS" in m for m in holdout["method"])  # the field's anchors, tuned on validation users
    for rec in holdout.to_dict("records"):
        assert 0 <= rec["hit_rate@10"] <= 1 and 0 <= rec["recall@10"] <= rec["hit_rate@10"] + 1e-9
        assert metrics["movies_holdout"][rec["method"]]["hit_rate@10"] == pytest.approx(rec["hit_rate@10"])
    chosen = pd.read_csv(out / "tables" / "anchor_tuning.csv").query("chosen")
    # one chosen setting each
    assert sorted(chosen["method"]) == sorted(m for m in holdout["method"] if "EASE" in m or "ALS" in m)
    report = (out / "report.md").read_text()
    assert MISSING not in report  # every table and figure a section names was saved by its step


def test_report_renders_again_from_the_folder_alone(finished_run, capsys):
    (finished_run / "report.html").unlink()
    assert main(["report", str(finished_run)]) == 0
    html = (finished_run / "report.html").read_text()
    assert 'id="movie-explorer"' in html and 'id="explorer-data"' in html and "movie-explorer-placeholder" not in html
    assert main(["report", str(finished_run / "nope")]) == 2


def test_recommend_from_saved_run(finished_run, capsys):
    assert main(["recommend", "toy story", "--run", str(finished_run), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "Top 3 for Toy Story (1995)" in out


def test_recommend_a_typo_is_a_message_not_a_traceback(finished_run, capsys):
    assert main(["recommend", "Toy Storyy", "--run", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and "Traceback" not in err


def test_recommend_a_title_two_films_share_answers_with_the_most_liked_and_names_the_other(finished_run, capsys):
    assert main(["recommend", "Hamlet", "--run", str(finished_run), "--min-likes", "0"]) == 0
    out, err = capsys.readouterr()
    assert "2 titles match; the most-liked is shown (add the year to choose: Hamlet (" in err
    assert out.startswith("Top 10 for Hamlet (")


def test_existing_out_and_missing_data_are_clear_errors(finished_run, tmp_path, capsys):
    assert main(["movies", "--data-dir", str(tmp_path), "--out", str(finished_run), *FAST]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main(["movies", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "EMBEDLAB_DATA_DIR" in err and "ratings.csv" in err


def test_bad_flags_are_clear_errors(movielens_root, tmp_path, capsys):
    assert (
        main(["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--lrs", "lbfgs=0.1"])
        == 2
    )
    assert (
        "'lbfgs': [0.1]}, at ['lbfgs']: input should be 'sgd', 'nesterov', 'adagrad', 'rmsprop' or 'adam'"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "movies",
                "--data-dir",
                str(movielens_root),
                "--out",
                str(tmp_path / "o2"),
                *FAST,
                "--query",
                "Nonexistent Film",
            ]
        )
        == 2
    )
    assert "no movie titled" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # rejected before a run folder was made


def test_smoke_profile_on_the_real_data(real_data, tmp_path, capsys):
    out = tmp_path / "smoke"
    assert (
        main(["movies", "--data-dir", str(real_data), "--out", str(out), "--profile", "smoke", "--offline", "--no-map"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["movies_data"]["movies_with_likes"] == 6298
    assert "Toy Story 2 (1999)" in (out / "tables" / "recs_toy_story.csv").read_text()
    assert main(["recommend", "Apollo 13", "--run", str(out)]) == 0
    assert "Apollo 13 (1995)" in capsys.readouterr().out


def test_config_layers_defaults_profile_file_flags(tmp_path):
    from embedlab.cli import build_parser
    from embedlab.resolve import movies_config, probe_config

    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"movies": {"dim": 7, "iterations": 11, "min_likes": 3}}))
    args = build_parser().parse_args(
        ["movies", "--profile", "smoke", "--config", str(cfg_file), "--iterations", "5", "--lrs", "adam=0.5"]
    )
    cfg = movies_config(args)
    assert (cfg.dim, cfg.iterations, cfg.min_likes) == (7, 5, 3)  # file over profile, flag over file
    assert cfg.grid == {"sgd": [3e-5, 1e-4], "adam": [0.5]}  # smoke grid with adam's rates replaced
    cfg_file.write_text(json.dumps({"movies": {"dimm": 7}}))
    with pytest.raises(ValueError, match="unknown config key"):
        movies_config(build_parser().parse_args(["movies", "--config", str(cfg_file)]))
    p = probe_config(build_parser().parse_args(["vision", "probe", "--profile", "smoke", "--size", "96"]))
    assert p.size == 96 and p.train_per_class == 100


def test_synthetic_dataset_runs_the_same_pipeline(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["movies", "--synthetic", "0.1x", "--out", str(out), *FAST, "--dim-sweep", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["movies_data"]["source"].startswith("synthetic 0.1x")
    assert len(metrics["movies_recommend"]["query_titles"]) == 3  # the three most-liked synthetic movies
    assert (out / "tables" / "cold_start.csv").is_file() and (out / "tables" / "dim_sweep.csv").is_file()
    report = (out / "report.md").read_text()
    assert MISSING not in report  # the 2C section shows the queries the run used, not the configured titles it lacks
    assert all(f"#### {title}" in report for title in metrics["movies_recommend"]["query_titles"].values())


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--synthetic", "100000x"], "GiB are available"),
        (["--synthetic", "huge"], "unknown synthetic size 'huge'"),
        (["--dataset", "ml-32m"], "ml-32m/ratings.csv"),
    ],
)
def test_bad_dataset_choices_are_one_line_errors(movielens_root, tmp_path, capsys, flags, expected):
    out = tmp_path / "o"
    assert main(["movies", "--data-dir", str(movielens_root), "--out", str(out), *FAST, *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("metrics.json"))  # nothing left that looks like a run


def test_malformed_dataset_name_is_one_error_line(movielens_root, tmp_path, capsys):
    assert (
        main(["movies", "--data-dir", str(movielens_root), "--out", str(tmp_path / "o"), *FAST, "--dataset", "ml-99m"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("embedlab: error:") and "ml-25m, ml-32m, ml-latest" in err and not (tmp_path / "o").exists()


def test_movies_resume_runs_a_stopped_folder_again_with_its_saved_settings(
    finished_run, movielens_root, tmp_path, capsys
):
    import shutil

    stopped = tmp_path / "stopped"
    shutil.copytree(finished_run, stopped)
    metrics = json.loads((stopped / "metrics.json").read_text())
    metrics["movies_run"] = {"status": "failed: KeyboardInterrupt: "}  # as _mark_failed leaves an interrupted run
    (stopped / "metrics.json").write_text(json.dumps(metrics))
    (stopped / "tables" / "holdout.csv").unlink()
    assert main(["movies", "--resume", str(stopped), "--dim", "8"]) == 2  # would change the results
    assert "--dim" in capsys.readouterr().err
    assert main(["movies", "--resume", str(stopped), "--data-dir", str(movielens_root), "--offline"]) == 0
    assert "resuming" in capsys.readouterr().out
    again = json.loads((stopped / "metrics.json").read_text())
    first = json.loads((finished_run / "metrics.json").read_text())
    assert "status" not in again["movies_run"] and "total_seconds" in again["movies_run"]
    assert again["movies_fit"]["best_cost"] == pytest.approx(first["movies_fit"]["best_cost"], rel=1e-6)
    assert again["movies_recommend"] == first["movies_recommend"]
    assert (stopped / "tables" / "holdout.csv").is_file()
    assert main(["movies", "--resume", str(stopped)]) == 0  # finished: nothing to do
    assert "nothing to resume" in capsys.readouterr().out


def test_a_message_of_several_lines_is_one_line_with_its_list_items_apart():
    from embedlab.cli import one_line

    refusal = "'star wars' matches 3 movies (most liked first); add the year:\n  A (1977)\n  B (1980)\n  … and 1 more"
    assert (
        one_line(refusal)
        == "'star wars' matches 3 movies (most liked first); add the year: A (1977); B (1980); … and 1 more"
    )
    assert one_line("weights are missing.\nEither copy the file,\nor pass --weights") == (
        "weights are missing. Either copy the file, or pass --weights"
    )


def test_output_cut_short_by_a_closed_pipe_is_not_a_traceback():
    import subprocess
    import sys

    # a command that prints more than a pipe's buffer, as `embedlab recommend ... --top 1000 | head` does
    code = "import sys, embedlab.cli as c; c._main = lambda argv: print('x' * 200_000) or 0; sys.exit(c.main([]))"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # like `| head` that has read what it wanted
    err = child.stderr.read().decode()
    assert child.wait() == 0 and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_misspelt_flag_is_named_with_its_command_and_the_closest_flag(capsys):
    from embedlab.cli import main

    assert main(["run", "--data-dri", "DATA"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "embedlab: error: embedlab run does not know --data-dri; did you mean --data-dir? (see 'embedlab run --help')"
    )
    assert main(["vision", "finetune", "--sizee=3"]) == 2
    assert "embedlab vision finetune does not know --sizee; did you mean --size" in capsys.readouterr().err
