"""Small helpers shared by the report sections: embed a saved table or figure by name."""

from __future__ import annotations

from embedlab.runs import RunDir

#: What a section says in place of an artefact its step should have saved; the tests fail on it, because it
#: means the file-name contract between a pipeline step and its report section is broken.
MISSING = "was not produced"


def table(run: RunDir, name: str) -> str:
    """The saved table, wrapped in a block that names its CSV (the browser test compares the two cell by cell)."""
    p = run.path / "tables" / f"{name}.md"
    if not p.exists():
        return f"*(table {name} {MISSING})*"
    return f'<div class="table" data-table="{name}" markdown="1">\n\n{p.read_text().rstrip()}\n\n</div>'



def figure(run: RunDir, name: str, alt: str, caption: str) -> str:
    """The figure, then a one-line caption that says what to look at."""
    p = run.path / "figures" / f"{name}.png"
    return f"![{alt}](figures/{name}.png)\n\n*{caption}*\n" if p.exists() else f"*(figure {name} {MISSING})*"
