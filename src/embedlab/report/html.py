"""report.md -> one self-contained report.html (figures inlined as data URIs), so both always say the same."""

from __future__ import annotations

import base64
import hashlib
import html
import re

import markdown

from embedlab.errors import MissingFileError
from embedlab.report.explorer import fill_placeholder
from embedlab.report.vision_explorer import fill_vision_placeholder
from embedlab.store import Store

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
          padding: .5rem 1rem; margin: 1rem 0 2rem; }
nav.toc ul { margin: .2rem 0; padding-left: 1.2rem; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 13px; max-width: 100%; }
/* wide tables wrap, never scroll */
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; overflow-wrap: anywhere; }
th { overflow-wrap: normal; word-break: normal; }  /* headers wrap between words, never inside one */
figure, p > em:only-child { color: #57606a; }
tr:nth-child(even) td { background: #f6f8fa; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
code { background: #f6f8fa; padding: 0 .25rem; border-radius: 4px; font-size: 90%; }
pre { background: #f6f8fa; padding: .8rem; border-radius: 6px; overflow-x: auto; font-size: 12px; max-height: 32rem; }
pre code { padding: 0; }
.explorer { border: 1px solid #d0d7de; border-radius: 6px; padding: .4rem 1rem 1rem; margin: 1rem 0; background: #fff; }
.explorer h4 { margin: .4rem 0; }
.ex-note { color: #57606a; font-size: 13px; margin: .3rem 0; }
.ex-controls { display: flex; flex-wrap: wrap; gap: .6rem 1.2rem; align-items: center; }
"""


def _inline_images(html: str, store: Store) -> str:
    """Replace every ``src="figures/x.png"`` by a base64 data URI of the run's figure ``x``; a missing figure is an
    error, not a broken image."""

    def data_uri(match: re.Match[str]) -> str:
        png = store.figure_png(match.group(1))
        if png is None:
            raise MissingFileError(f"the report refers to figure {match.group(1)!r}, which {store.path} does not hold")
        return f'src="data:image/png;base64,{base64.b64encode(png).decode()}"'

    return re.sub(r'src="figures/([^"/]+)\.png"', data_uri, html)


def content_security_policy(body: str) -> str:
    """The page's Content-Security-Policy: its own inline scripts (the explorers', each allowed by its SHA-256) and
    nothing else run; images only from data: URIs, styles only the page's own; nothing is fetched, framed or posted.
    A script that reached the page any other way (a tampered file) would not run."""
    hashes = sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"
            for code in re.findall(r"<script>(.*?)</script>", body, flags=re.S)
        }
    )
    scripts = " ".join(hashes) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )


def render_html(md_text: str, store: Store, title: str) -> str:
    """The HTML page of the run's Markdown report: its figures and explorers from ``store``."""
    md = markdown.Markdown(
        extensions=["tables", "fenced_code", "toc", "md_in_html"], extension_configs={"toc": {"toc_depth": "2-3"}}
    )
    body = fill_vision_placeholder(fill_placeholder(_inline_images(md.convert(md_text), store), store), store)
    # the contents go under the title, or under the one-screen summary when there is one (it is the first screen)
    glance = body.find('<h2 id="at-a-glance"')
    cut = body.find("<h2", glance + 1) if glance >= 0 else -1
    if cut < 0:
        end = body.find("</h1>")
        cut = end + len("</h1>") if end >= 0 else 0
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(content_security_policy(body))}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head>\n<body><main>\n{body[:cut]}\n"
        f'<nav class="toc"><strong>Contents</strong>{md.toc}</nav>\n{body[cut:]}\n</main></body></html>\n'
    )
