"""Open a report in headless Chromium (Debian's chromium + chromedriver, driven by selenium; nothing is downloaded),
take a full-page screenshot and list missing sections and images that did not load."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from embedlab.text import column_label

#: Headings every full report must have: one per mission item, plus the held-out check and the config.
SECTIONS = [
    "At a glance",
    "Part 1A",
    "Part 1B",
    "Part 1C",
    "Comparison: fixed features vs fine-tuning",
    "2A — building X from the data",
    "2B — minimising the cost by gradient descent",
    "2C — recommendations",
    "Do recommendations change with the learning rate or the optimiser?",
    "held-out evaluation",
    "Configuration and software",
]


@dataclass
class BrowserResult:
    headings: list[str]
    missing_sections: list[str]
    images: int
    broken_images: list[str]
    screenshot: Path
    table_problems: list[str]  # rows with the wrong number of cells, cells that differ from the CSV
    tables_checked: int  # tables compared with their CSV cell by cell
    too_wide: list[str]  # tables wider than the page's text column
    uncaptioned: list[str]  # figures without a caption line under them
    broken_headers: list[str]  # table header cells whose text wraps inside a word ("resoluti / on")
    dead_links: list[str]  # links of the page that point at nothing: a missing anchor or file
    script_errors: list[str]  # what the page's scripts threw or logged as errors while it loaded


#: Every rendered table: the CSV it came from (if any), header cells, body cells, and whether it fits the text column.
TABLES_JS = """
const main = document.querySelector('main');
return [...document.querySelectorAll('table')].filter(t => !t.closest('.explorer')).map(t => ({
  name: t.closest('div[data-table]')?.dataset.table ?? null,
  header: [...t.querySelectorAll('thead th')].map(c => c.textContent),
  rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.textContent)),
  fits: t.getBoundingClientRect().width <= main.clientWidth + 1,
}));
"""

#: Header cells in which one word is laid out on more than one line (each word measured as a DOM range).
HEADER_BREAKS_JS = """
const out = [];
for (const th of document.querySelectorAll('main table th')) {
  if (th.closest('.explorer')) continue;
  const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const re = /\\S+/g;
    let m;
    while ((m = re.exec(node.data)) !== null) {
      const r = document.createRange();
      r.setStart(node, m.index);
      r.setEnd(node, m.index + m[0].length);
      const lines = new Set([...r.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.top)));
      if (lines.size > 1) out.push(th.textContent + ' (' + m[0] + ')');
    }
  }
}
return out;
"""

#: Every link of the page: its href and, for an in-page anchor, whether its target exists.
LINKS_JS = """
return [...document.querySelectorAll('a[href]')].map(a => {
  const href = a.getAttribute('href');
  return [href, href.startsWith('#') ? document.getElementById(decodeURIComponent(href.slice(1))) !== null : null];
});
"""


def dead_links(links: list[list], page: Path) -> list[str]:
    """In-page anchors without a target and relative links to files that do not exist beside the page; links to the
    web (http, https, mailto) are not followed (the report opens offline)."""
    dead = []
    for href, anchor_ok in links:
        if href.startswith("#"):
            if not anchor_ok:
                dead.append(href)
        elif not href.startswith(("http://", "https://", "mailto:", "data:")):
            if not (page.parent / href.split("#")[0]).exists():
                dead.append(href)
    return dead


CAPTIONS_JS = """
return [...document.images].filter(i => !i.closest('.explorer')).filter(i => {
  const next = i.closest('p')?.nextElementSibling;
  return !(next && next.tagName === 'P' && next.children.length === 1 && next.firstElementChild.tagName === 'EM');
}).map(i => i.alt);
"""


_FROM_SUPERSCRIPT = str.maketrans("\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "-0123456789")


def _same_number(text: str, value: float) -> bool:
    if math.isnan(value):
        return text.strip() == "—"  # the one way a missing value reads
    text = text.strip()
    for unit in (" %", " points"):  # an accuracy, or a difference of two, is shown in per cent of the CSV's fraction
        if text.endswith(unit):
            text, value = text.removesuffix(unit), 100 * value
    if " × 10" in text:  # a p-value below 0.001, "2.1 × 10⁻¹²⁹"
        mantissa, power = text.split(" × 10")
        text = f"{mantissa}e{power.translate(_FROM_SUPERSCRIPT)}"
    try:
        shown = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return False
    if not shown.is_finite():
        return float(shown) == value
    # the value may differ by half a unit of the last digit shown
    last_digit = Decimal(1).scaleb(shown.as_tuple().exponent)
    return abs(float(shown) - value) <= float(last_digit) / 2 * (1 + 1e-9) + 1e-12


def table_problems(tables: list[dict], run_dir: Path) -> tuple[list[str], int]:
    """Cell counts of every table, and every named table's cells against tables/<name>.csv."""
    import pandas as pd

    problems, checked = [], 0
    for t in tables:
        label = t["name"] or " | ".join(t["header"])
        problems += [
            f"{label}: row {i + 1} has {len(r)} cells, header {len(t['header'])}"
            for i, r in enumerate(t["rows"])
            if len(r) != len(t["header"])
        ]
        if t["name"] is None:
            continue
        csv = pd.read_csv(run_dir / "tables" / f"{t['name']}.csv", keep_default_na=False, na_values=[""])
        if [column_label(c) for c in csv.columns] != t["header"] or len(csv) != len(t["rows"]):
            problems.append(
                f"{label}: page shows {t['header']} x {len(t['rows'])} rows, the CSV {list(csv.columns)} x {len(csv)}"
            )
            continue
        checked += 1
        for j, col in enumerate(csv.columns):
            numeric = pd.api.types.is_numeric_dtype(csv[col]) and not pd.api.types.is_bool_dtype(csv[col])
            for i, value in enumerate(csv[col]):
                text = t["rows"][i][j]
                ok = (
                    _same_number(text, float(value))
                    if numeric
                    else text.strip() == ("" if pd.isna(value) else str(value)).strip()
                    or (pd.isna(value) and text.strip() == "—")
                )
                if not ok:
                    problems.append(f"{label}: row {i + 1}, column {col!r} shows {text!r}, the CSV holds {value!r}")
    return problems, checked


def check_in_browser(html: Path, workdir: Path, width: int = 1366) -> BrowserResult:
    """Load ``html`` like a user on a laptop screen would, then inspect the rendered page."""
    driver = _driver(workdir, width)
    try:
        driver.get(html.resolve().as_uri())
        driver.execute_script("return document.readyState")
        headings = driver.execute_script("return [...document.querySelectorAll('h1,h2,h3,h4')].map(h => h.textContent)")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0 &&"
            " i.getBoundingClientRect().width > 0])"
        )
        tables = driver.execute_script(TABLES_JS)
        uncaptioned = driver.execute_script(CAPTIONS_JS)
        broken_headers = driver.execute_script(HEADER_BREAKS_JS)
        links = driver.execute_script(LINKS_JS)
        errors = script_errors(driver)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(height), 16000))
        shot = workdir / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    text = " | ".join(headings)
    problems, checked = table_problems(tables, html.parent)
    return BrowserResult(
        headings=headings,
        missing_sections=[s for s in SECTIONS if s not in text],
        images=len(images),
        broken_images=[alt for alt, ok in images if not ok],
        screenshot=shot,
        table_problems=problems,
        tables_checked=checked,
        too_wide=[t["name"] or " | ".join(t["header"]) for t in tables if not t["fits"]],
        uncaptioned=uncaptioned,
        broken_headers=broken_headers,
        dead_links=dead_links(links, html),
        script_errors=errors,
    )


def script_errors(driver) -> list[str]:
    """The page's console messages of level SEVERE (an uncaught exception, a failed load) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _driver(workdir: Path, width: int = 1366):
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver (.ci/run does this)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={workdir / 'profile'}",
        f"--window-size={width},900",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    return webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)


def _each_query(
    html: Path, workdir: Path, queries: list[str], read, metric: str | None = None, screenshot: Path | None = None
) -> dict:
    """Type each query into the explorer's search box like a user, press Enter, and ``read(driver, query)`` the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _driver(workdir)
    try:
        driver.get(html.resolve().as_uri())
        if metric is not None:
            driver.find_element(By.CSS_SELECTOR, f'input[name="explorer-metric"][value="{metric}"]').click()
        box = driver.find_element(By.ID, "explorer-search")
        out = {}
        for q in queries:
            box.click()  # as a person does: click, then type (no clear() from outside the page)
            if box.get_attribute("value"):  # a refused query stays in the box: a person selects it to type anew
                box.send_keys(Keys.CONTROL, "a")
            if all(ord(c) <= 0xFFFF for c in q):
                box.send_keys(q)
            # ChromeDriver types only the Basic Multilingual Plane: an emoji arrives as an input method commits it
            else:
                box.click()
                driver.execute_cdp_cmd("Input.insertText", {"text": q})
            box.send_keys(Keys.ENTER)
            out[q] = read(driver, q)
        if screenshot is not None:
            section = driver.find_element(By.ID, "movie-explorer")
            driver.set_window_size(1366, section.size["height"] + 200)  # the whole explorer in the viewport
            driver.execute_script("arguments[0].scrollIntoView()", section)
            section.screenshot(str(screenshot))
    finally:
        driver.quit()
    return out


def explorer_lists(
    html: Path, workdir: Path, queries: list[str], metric: str, screenshot: Path | None = None
) -> dict[str, list[str]]:
    """The titles of the list the explorer shows for each query, typed like a user would."""
    return _each_query(
        html,
        workdir,
        queries,
        lambda d, q: d.execute_script(
            "return [...document.querySelectorAll('#explorer-results tbody tr')].map(r => r.children[1].textContent)"
        ),
        metric=metric,
        screenshot=screenshot,
    )


def explorer_lookups(html: Path, workdir: Path, queries: list[str]) -> dict[str, dict]:
    """For each query: the films the explorer's title rules match among all films (most liked first), which film the
    search box selects when the query is typed and Enter pressed (the top of the list that then shows), the titles it
    offers instead when none matches, and its status line."""
    return _each_query(
        html,
        workdir,
        queries,
        lambda d, q: {
            "matches": d.execute_script("return window.embedlabLookup(arguments[0])", q),
            "selected": d.execute_script("return document.getElementById('explorer-search').dataset.selected || ''"),
            "offered": d.execute_script(
                "return [...document.querySelectorAll('#explorer-suggestions li')]"
                ".map(li => li.textContent.replace(/ — \\d+ likes$/, ''))"
            ),
            "status": d.execute_script("return document.getElementById('explorer-status').textContent"),
        },
    )


def explorer_first_use(html: Path, workdir: Path, title: str, typo: str) -> dict:
    """A newcomer's first two queries, typed as a person types them: the page opens on its first query's list; click
    in the box, type ``title``, Enter; then click, type ``typo``, Enter. What the page shows after each."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _driver(workdir)
    read = (
        "return {status: document.getElementById('explorer-status').textContent,"
        " listed: [...document.querySelectorAll('#explorer-results tbody tr')].map(r => r.children[1].textContent),"
        " offered: [...document.querySelectorAll('#explorer-suggestions li')].map(li => li.textContent),"
        " box: document.getElementById('explorer-search').value}"
    )
    try:
        driver.get(html.resolve().as_uri())
        box = driver.find_element(By.ID, "explorer-search")
        out = {"opened": driver.execute_script(read)}
        for key, text in (("title", title), ("typo", typo)):
            box.click()
            box.send_keys(text, Keys.ENTER)
            out[key] = driver.execute_script(read)
        return out
    finally:
        driver.quit()


#: What the Part 1 explorer lists now: the test indices shown, in order, and the status line above them.
VISION_VIEW_JS = """
return {shown: [...document.querySelectorAll('#vx-images [data-test-index]')].map(b => +b.dataset.testIndex),
        status: document.getElementById('vx-status').textContent};
"""


def vision_explorer_views(html: Path, workdir: Path, cells: list[tuple[str, int, int]]) -> dict:
    """Click each (model, true, pred) cell of the Part 1 explorer and each fixed / broken / both-wrong switch (all
    classes); returns what each view lists, the switch's table, what an enlarged image shows, and script errors. The
    first cell is opened from the keyboard (Tab-reachable button, Enter)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = _driver(workdir)
    try:
        driver.get(html.resolve().as_uri())
        out: dict = {"cells": {}, "changes": {}}
        for n, (model, t, p) in enumerate(cells):
            b = driver.find_element(
                By.CSS_SELECTOR, f'#vision-explorer button[data-model="{model}"][data-true="{t}"][data-pred="{p}"]'
            )
            if n == 0:
                b.send_keys(Keys.ENTER)
            else:
                driver.execute_script("arguments[0].click()", b)
            out["cells"][(model, t, p)] = driver.execute_script(VISION_VIEW_JS)
        for kind in ("fixed", "broken", "both_wrong"):
            driver.execute_script(
                "arguments[0].click()", driver.find_element(By.CSS_SELECTOR, f'input[name="vx-change"][value="{kind}"]')
            )
            out["changes"][kind] = driver.execute_script(VISION_VIEW_JS)
        out["table"] = driver.execute_script(
            "return [...document.querySelectorAll('#vx-changes tbody tr')].map(r => [...r.children].map(c =>"
            " c.textContent))"
        )
        # back to a cell with images, open its first
        model, t, p = next(c for c, v in out["cells"].items() if v["shown"])
        driver.execute_script(
            "arguments[0].click()",
            driver.find_element(
                By.CSS_SELECTOR, f'#vision-explorer button[data-model="{model}"][data-true="{t}"][data-pred="{p}"]'
            ),
        )
        first = driver.find_element(By.CSS_SELECTOR, "#vx-images [data-test-index]")
        first.click()
        out["detail"] = driver.execute_script(
            "const d = document.getElementById('vx-detail'); return {hidden: d.hidden, index: +d.dataset.testIndex, "
            "size: d.querySelector('.vx-img').getBoundingClientRect().width, "
            "rows: [...d.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.textContent)), "
            "notes: [...d.querySelectorAll('p.ex-note')].map(p => p.textContent)}"
        )
        out["clicked"] = int(first.get_attribute("data-test-index"))
        out["errors"] = script_errors(driver)
    finally:
        driver.quit()
    return out
