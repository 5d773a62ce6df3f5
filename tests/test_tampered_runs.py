"""A finished run folder is input too: what embedlab reads back from one (``report``, ``recommend``, ``--resume``,
``load_run``) is checked, so that a tampered or odd file brings no other file of the machine, and no script, into the
report. Every test copies a finished smoke movie run and breaks the copy."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from embedlab.cli import main

FAST = [
    "--profile",
    "smoke",
    "--dim",
    "4",
    "--iterations",
    "20",
    "--min-likes",
    "2",
    "--offline",
    "--no-map",
    "--dim-sweep",
    "",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import write_movielens

    root = tmp_path_factory.mktemp("data")
    write_movielens(root / "ml-latest-small")
    out = tmp_path_factory.mktemp("runs") / "movies"
    assert main(["movies", "--data-dir", str(root), "--out", str(out), *FAST, "--allow-modified-data"]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


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
    ("figures/ a link to a folder elsewhere", _link_figures_folder_out, "figures in"),
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
    # the other figures are still there, unless the whole folder was the link
    assert (html.count("data:image/png;base64,") == 0) == (breaks is _link_figures_folder_out)


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
