"""A finished run folder is input too: what embedlab reads back from one (``report``, ``recommend``, ``--resume``,
``load_run``) is checked, so that a tampered or odd file brings no other file of the machine, and no script, into the
report. Every test copies a finished smoke movie run and breaks the copy."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MOVIES, copy_run, expect_one_error

from embedlab.cli import main

FAST = FAST_MOVIES


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import write_movielens

    root = tmp_path_factory.mktemp("data")
    write_movielens(root / "ml-latest-small")
    out = tmp_path_factory.mktemp("runs") / "movies"
    assert main(["movies", "--data-dir", str(root), "--out", str(out), *FAST, "--allow-modified-data"]) == 0
    return out


_copy = copy_run


def _secret(tmp_path: Path) -> tuple[Path, bytes]:
    """A file outside the run folder that must never reach its report (a PNG, so only the place gives it away)."""
    data = b"\x89PNG\r\n\x1a\n" + b"SECRET-OUTSIDE-THE-RUN " * 40
    path = tmp_path / "outside.png"
    path.write_bytes(data)
    return path, data


FIGURE = "loss_best_runs"


def _link_figure_out(run: Path, tmp_path: Path) -> bytes:
    target, data = _secret(tmp_path)
    fig = run / "figures" / f"{FIGURE}.png"
    fig.unlink()
    fig.symlink_to(target)
    return data


def _link_figures_folder_out(run: Path, tmp_path: Path) -> bytes:
    target, data = _secret(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run / "figures", elsewhere)
    (elsewhere / f"{FIGURE}.png").write_bytes(data)
    shutil.rmtree(run / "figures")
    (run / "figures").symlink_to(elsewhere)
    return data


def _not_a_png(run: Path, tmp_path: Path) -> bytes:
    data = b"root:x:0:0:root:/root:/bin/bash\n" * 20
    (run / "figures" / f"{FIGURE}.png").write_bytes(data)
    return data


def _a_folder(run: Path, tmp_path: Path) -> bytes:
    fig = run / "figures" / f"{FIGURE}.png"
    fig.unlink()
    fig.mkdir()
    return b"\x00never-there\x00"


FIGURE_ROWS = [
    ("a link to a file elsewhere", _link_figure_out, "is a symbolic link"),
    ("not a PNG by its bytes", _not_a_png, "is not a PNG file"),
    ("a folder", _a_folder, "is not a regular file"),
]


@pytest.mark.parametrize("breaks, says", [r[1:] for r in FIGURE_ROWS], ids=[r[0] for r in FIGURE_ROWS])
def test_a_figure_is_read_only_from_a_png_file_inside_the_run(finished_run, tmp_path, capsys, breaks, says):
    run = _copy(finished_run, tmp_path)
    data = breaks(run, tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr()
    html = (run / "report.html").read_text()
    assert base64.b64encode(data).decode()[:60] not in html
    assert base64.b64encode(data[8:]).decode()[:40] not in html
    # left out, with one warning that names it; the report says so where the figure would be
    warnings = [line for line in out.out.splitlines() if says in line]
    assert len(warnings) == 1 and "left out" in warnings[0], out.out
    assert f"figure {FIGURE} was not produced" in (run / "report.md").read_text()
    assert html.count("data:image/png;base64,") >= 1  # the other figures are still there


def test_a_figures_folder_linked_elsewhere_is_refused_in_one_line(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    data = _link_figures_folder_out(run, tmp_path)
    before = (run / "report.html").read_text()
    _expect_one_error(main(["report", str(run)]), capsys, "figures is not a folder")
    assert (run / "report.html").read_text() == before and base64.b64encode(data).decode()[:60] not in before


def test_an_untouched_run_inlines_every_figure_it_links(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    assert main(["report", str(run)]) == 0
    assert "left out" not in capsys.readouterr().out
    md = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert md.count("](figures/") == html.count("data:image/png;base64,") > 0
    assert "was not produced" not in md


def test_an_artefact_linked_to_a_file_elsewhere_is_not_read(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    items = run / "artefacts" / "items.csv"
    outside = tmp_path / "items.csv"
    text = items.read_text()
    assert "Film " in text
    outside.write_text(text.replace("Film ", "SECRET-TITLE "))
    items.unlink()
    items.symlink_to(outside)
    assert main(["report", str(run)]) == 0
    assert "artefacts/items.csv in" in capsys.readouterr().out
    assert "SECRET-TITLE" not in (run / "report.html").read_text()


INJECTION = "<img src=x onerror=window.hacked=1><script>window.hacked=2</script>"


def _inject_into_sweep(run: Path) -> None:
    """The same markup in a cell of the sweep table's Markdown copy and of its CSV."""
    md = run / "tables" / "sweep.md"
    md.write_text(md.read_text().replace("| sgd ", f"| {INJECTION} ", 1))
    csv = run / "tables" / "sweep.csv"
    lines = csv.read_text().splitlines()
    lines[1] = INJECTION + lines[1][lines[1].index(",") :]
    csv.write_text("\n".join(lines) + "\n")


def test_a_table_is_rendered_from_its_csv_through_the_one_escaping_path(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    _inject_into_sweep(run)
    assert main(["report", str(run)]) == 0
    for name in ("report.md", "report.html"):
        text = (run / name).read_text()
        assert INJECTION not in text and "<img src=x" not in text and "<script>window" not in text
    # the cell is shown as the text it is, from the CSV
    assert (
        "&lt;img src=x onerror=window.hacked=1&gt;&lt;script&gt;window.hacked=2&lt;/script&gt;"
        in (run / "report.html").read_text()
    )


def test_every_table_reads_back_from_its_csv_as_the_step_wrote_it(finished_run):
    from embedlab.runs import RunDir
    from embedlab.store import Store

    store = Store(RunDir(finished_run))
    tables = sorted((finished_run / "tables").glob("*.csv"))
    assert len(tables) >= 8
    for csv in tables:
        assert store.table_markdown(csv.stem) + "\n" == csv.with_suffix(".md").read_text(), csv.name


def test_the_page_allows_its_own_scripts_only(finished_run, tmp_path):
    import hashlib
    import re

    run = _copy(finished_run, tmp_path)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert policy and page.index(policy.group(0)) < page.index("<script")
    allowed = set(re.findall(r"sha256-([A-Za-z0-9+/=]+)", policy.group(1)))
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert scripts and allowed == {base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts}
    assert "default-src &#x27;none&#x27;" in policy.group(1) and "img-src data:" in policy.group(1)


def test_no_script_from_a_tampered_table_runs_in_the_browser(finished_run, tmp_path):
    from browser_check import _driver, script_errors

    run = _copy(finished_run, tmp_path)
    _inject_into_sweep(run)
    # and a script put into the page by hand after it was written: the policy stops it too
    assert main(["report", str(run)]) == 0
    html = run / "report.html"
    html.write_text(html.read_text().replace("</main>", "<script>window.hacked=3</script></main>"))
    driver = _driver(tmp_path / "browser")
    try:
        driver.get(html.resolve().as_uri())
        assert driver.execute_script("return window.hacked === undefined")
        # the page's own scripts ran: the movie explorer drew its lists
        assert driver.execute_script("return document.querySelectorAll('#explorer-results tbody tr').length")
        assert not [e for e in script_errors(driver) if "Content Security Policy" not in e]
    finally:
        driver.quit()


# ---- what is read back is refused in one line when it is not what embedlab wrote ----


_expect_one_error = expect_one_error


def _edit_json(path: Path, section: str, key: str, text: str) -> None:
    """Replace one value of a JSON file by ``text`` as written (so that NaN and Infinity can be put in)."""
    import json

    data = json.loads(path.read_text())
    data[section][key] = "@@VALUE@@"
    path.write_text(json.dumps(data, indent=2).replace('"@@VALUE@@"', text))


def _npz(path: Path, v) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, v=v)


def _no_metrics(r: Path) -> None:
    (r / "metrics.json").unlink()


def _metrics_a_folder(r: Path) -> None:
    (r / "metrics.json").unlink()
    (r / "metrics.json").mkdir()


READ_BACK_ROWS = [
    ("metrics.json deleted", _no_metrics, "metrics.json is missing, but"),
    ("metrics.json a folder", _metrics_a_folder, "metrics.json is not a file"),
    ("a count as a truth value", lambda r: _edit_json(r / "metrics.json", "movies_data", "users", "true"), "users"),
    ("a count as text", lambda r: _edit_json(r / "metrics.json", "movies_data", "users", '"60"'), 'users: "60"'),
    ("a NaN gap", lambda r: _edit_json(r / "metrics.json", "movies_fit", "best_gap_to_optimum", "NaN"), "NaN"),
    (
        "an infinite gap",
        lambda r: _edit_json(r / "metrics.json", "movies_fit", "best_gap_to_optimum", "Infinity"),
        "Inf",
    ),
    ("min_likes 2.7", lambda r: _edit_json(r / "config.json", "movies", "min_likes", "2.7"), "min_likes"),
    ("min_likes true", lambda r: _edit_json(r / "config.json", "movies", "min_likes", "true"), "min_likes"),
    ("environment.json empty", lambda r: (r / "environment.json").write_text(""), "environment.json is damaged"),
    (
        "environment.json with trailing text",
        lambda r: (r / "environment.json").write_text('{"torch": "2.14.1"} and more'),
        "environment.json is damaged",
    ),
    ("environment.json a list", lambda r: (r / "environment.json").write_text("[1, 2]"), "environment.json is damaged"),
]


@pytest.mark.parametrize("breaks, says", [r[1:] for r in READ_BACK_ROWS], ids=[r[0] for r in READ_BACK_ROWS])
def test_report_refuses_a_tampered_run_and_keeps_its_report(finished_run, tmp_path, capsys, breaks, says):
    run = _copy(finished_run, tmp_path)
    before = (run / "report.html").read_bytes()
    breaks(run)
    _expect_one_error(main(["report", str(run)]), capsys, says)
    assert (run / "report.html").read_bytes() == before  # nothing finished is overwritten by less


@pytest.mark.parametrize("breaks, says", [r[1:] for r in READ_BACK_ROWS[:6]], ids=[r[0] for r in READ_BACK_ROWS[:6]])
def test_load_run_refuses_what_report_refuses(finished_run, tmp_path, breaks, says):
    import embedlab
    from embedlab.errors import InputError

    run = _copy(finished_run, tmp_path)
    breaks(run)
    with pytest.raises(InputError, match=re.escape(says)):
        embedlab.load_run(run)


RECOMMEND_ROWS = [
    *[r for r in READ_BACK_ROWS if r[0].startswith("min_likes")],  # one reader, one verdict with report and --resume
    ("vectors of no numbers", lambda r: _npz(r / "artefacts" / "embeddings.npz", np.zeros((30, 0))), "shape (30, 0)"),
    ("items.csv a folder", lambda r: _replace_with_folder(r / "artefacts" / "items.csv"), "artefacts/items.csv is"),
]


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("breaks, says", [r[1:] for r in RECOMMEND_ROWS], ids=[r[0] for r in RECOMMEND_ROWS])
def test_recommend_refuses_a_tampered_run(finished_run, tmp_path, capsys, breaks, says):
    run = _copy(finished_run, tmp_path)
    breaks(run)
    _expect_one_error(main(["recommend", "Toy Story", "--run", str(run)]), capsys, says)


def test_the_untouched_run_still_reads_back_everywhere(finished_run, tmp_path, capsys):
    import embedlab

    run = _copy(finished_run, tmp_path)
    assert embedlab.load_run(run).movies_fit is not None
    assert main(["recommend", "Toy Story", "--run", str(run)]) == 0
    assert main(["report", str(run)]) == 0


@pytest.mark.parametrize("folder", ["tables", "figures", "artefacts"])
def test_a_folder_replaced_by_a_file_is_one_line_for_resume_and_report(finished_run, tmp_path, capsys, folder):
    run = _copy(finished_run, tmp_path)
    shutil.rmtree(run / folder)
    (run / folder).write_text("not a folder")
    for command in (["report", str(run)], ["movies", "--resume", str(run)]):
        _expect_one_error(main(command), capsys, f"{run / folder} is not a folder")
    assert (run / folder).read_text() == "not a folder"


def test_an_atomic_write_under_a_file_is_one_clear_error(tmp_path):
    from embedlab.errors import InputError
    from embedlab.files import write_atomic

    (tmp_path / "tables").write_text("x")
    with pytest.raises(InputError, match="a file stands where a folder should be"):
        write_atomic(tmp_path / "tables" / "t.csv", "a,b\n")


@pytest.mark.parametrize("method", ["tsne", "pca"])
@pytest.mark.parametrize("n", [2, 3])
def test_the_map_works_at_the_bottom_of_its_declared_range(method, n):
    import torch

    from embedlab.movies.steps import map_coordinates

    for d in (1, 4):
        coords = map_coordinates(torch.randn(n, d, generator=torch.Generator().manual_seed(n)), method, seed=0)
        assert coords.shape == (n, 2) and np.isfinite(coords).all()


API_ROWS = [
    ("fit_embeddings", {"dim": 0}, "dim=0: input should be greater than or equal to 1"),
    ("fit_embeddings", {"dim": -3}, "dim=-3"),
    ("fit_embeddings", {"iterations": -5}, "iterations=-5"),
    ("fit_embeddings", {"optimizer": "adamw"}, "optimizer and lr"),
    ("fit_embeddings", {"lr": -1.0}, "optimizer and lr"),
    ("recommend", {"k": -3}, "k=-3"),
    ("recommend", {"k": 0}, "k=0"),
    ("recommend", {"metric": "euclid"}, "metric='euclid'"),
    ("recommend", {"min_likes": -1}, "min_likes=-1"),
]


@pytest.mark.parametrize("function, kwargs, says", API_ROWS, ids=[f"{r[0]} {r[1]}" for r in API_ROWS])
def test_the_python_api_names_a_wrong_argument(tmp_path, function, kwargs, says):
    from conftest import write_movielens

    import embedlab
    from embedlab.errors import InputError

    write_movielens(tmp_path / "ml-latest-small")
    ml = embedlab.movielens(tmp_path)
    co = ml.colikes()
    with pytest.raises(InputError, match=re.escape(says)):
        if function == "fit_embeddings":
            embedlab.fit_embeddings(co, **{"dim": 4, "iterations": 5, **kwargs})
        else:
            run = embedlab.fit_embeddings(co, dim=4, iterations=5)
            embedlab.recommend("Toy Story", run, co, ml.movies, **kwargs)


def test_recommend_refuses_vectors_that_are_not_numbers(tmp_path):
    import dataclasses

    from conftest import write_movielens

    import embedlab
    from embedlab.errors import InputError

    write_movielens(tmp_path / "ml-latest-small")
    ml = embedlab.movielens(tmp_path)
    co = ml.colikes()
    run = embedlab.fit_embeddings(co, dim=4, iterations=5)
    v = run.v.clone()
    v[3, 1] = float("nan")
    with pytest.raises(InputError, match="not finite numbers"):
        embedlab.recommend("Toy Story", dataclasses.replace(run, v=v), co, ml.movies)


# ---- any one tampering of a finished run: one error line and exit 2, or the command's right answer ----

SECRET = b"SECRET-FROM-OUTSIDE-THE-RUN"


def _tamper(run: Path, rel: str, how: str, outside: Path) -> None:
    path = run / rel
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how in ("wrong type", "NaN") and not rel.endswith((".json", ".csv", ".txt")):
        path.write_bytes(path.read_bytes()[::-1])  # a binary file: its bytes scrambled instead
    elif how == "wrong type":  # a JSON value of another type, or a CSV cell of text where a number was
        text = path.read_text()
        if rel.endswith(".json"):
            text = re.sub(r"(:\s*)(-?\d[\d.e+-]*|true|false)", r'\1"x"', text, count=1)
        else:
            text = re.sub(r",(-?\d[\d.e+-]*)(,|\n)", r",x\2", text, count=1)
        path.write_text(text)
    elif how == "NaN":
        text = path.read_text()
        path.write_text(re.sub(r"(?<=[:,\s])(-?\d+\.\d+)", "NaN", text, count=1))
    elif how == "symlink":
        outside.write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET + (b"," + SECRET) * 3 + b"\n")
        path.unlink()
        path.symlink_to(outside)
    elif how == "folder for file":
        path.unlink()
        path.mkdir()
        (path / "inside").write_bytes(SECRET)
    elif how == "file for folder":
        shutil.rmtree(path.parent)
        path.parent.write_bytes(SECRET)


def _one_line_or_right(status: int, err: str, right: bool) -> None:
    lines = [line for line in err.splitlines() if line.startswith("embedlab: error:")]
    assert "Traceback" not in err, err
    if status == 0:
        assert right and not lines, err
    else:
        assert status == 2 and len(lines) == 1, (status, err)


def _files(run: Path) -> list[str]:
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in ("run.log", "report.md", "report.html")
    )


def test_any_tampered_file_is_one_error_line_or_the_right_answer(finished_run, tmp_path_factory, capsys):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import embedlab
    from embedlab.errors import UserError

    files = _files(finished_run)
    assert main(["recommend", "Toy Story", "--run", str(finished_run)]) == 0
    right_recs = capsys.readouterr().out

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        rel=st.sampled_from(files),
        how=st.sampled_from(["truncate", "wrong type", "NaN", "symlink", "folder for file", "file for folder"]),
        command=st.sampled_from(["report", "recommend", "resume", "load_run"]),
    )
    def check(rel, how, command):
        base = tmp_path_factory.mktemp("tamper")
        run = _copy(finished_run, base)
        _tamper(run, rel, how, base / "outside")
        capsys.readouterr()
        if command == "load_run":
            try:
                embedlab.load_run(run)
            except UserError:
                pass
            return
        argv = {
            "report": ["report", str(run)],
            "recommend": ["recommend", "Toy Story", "--run", str(run)],
            "resume": ["movies", "--resume", str(run)],
        }[command]
        status = main(argv)
        out = capsys.readouterr()
        right = True
        if command == "recommend" and status == 0:
            right = out.out == right_recs
        if status == 0 and (run / "report.html").is_file():
            right = right and SECRET.decode() not in (run / "report.html").read_text(errors="replace")
        _one_line_or_right(status, out.err, right)

    check()
