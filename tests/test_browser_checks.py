"""The browser checks themselves can fail: a header broken inside a word and a dead link are found."""

from __future__ import annotations

from pathlib import Path

from browser_check import HEADER_BREAKS_JS, LINKS_JS, _driver, dead_links


def test_a_header_broken_inside_a_word_and_a_dead_link_are_found(tmp_path: Path):
    page = tmp_path / "page.html"
    (tmp_path / "here.png").write_bytes(b"")
    page.write_text(
        '<html><body><main><h2 id="top">x</h2><table><thead><tr>'
        '<th style="width:30px;max-width:30px;overflow-wrap:anywhere">resolution</th>'
        '<th style="width:30px;max-width:30px">test accuracy</th></tr></thead>'
        "<tbody><tr><td>1</td><td>2</td></tr></tbody></table>"
        '<a href="#top">ok</a> <a href="#nowhere">dead</a> <a href="here.png">file</a> <a href="gone.png">gone</a>'
        ' <a href="https://example.org">web</a></main></body></html>'
    )
    driver = _driver(tmp_path / "browser")
    try:
        driver.get(page.resolve().as_uri())
        broken = driver.execute_script(HEADER_BREAKS_JS)
        links = driver.execute_script(LINKS_JS)
    finally:
        driver.quit()
    assert broken == ["resolution (resolution)"]  # "test accuracy" wraps between its words, which is fine
    assert dead_links(links, page) == ["#nowhere", "gone.png"]
