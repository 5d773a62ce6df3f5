"""Small helpers shared by the report sections: embed a saved table or figure by name."""

from __future__ import annotations

from embedlab.runs import RunDir


def table(run: RunDir, name: str) -> str:
    p = run.path / "tables" / f"{name}.md"
    return p.read_text().rstrip() if p.exists() else f"*(table {name} was not produced)*"


def figure(run: RunDir, name: str, alt: str) -> str:
    p = run.path / "figures" / f"{name}.png"
    return f"![{alt}](figures/{name}.png)" if p.exists() else f"*(figure {name} was not produced)*"
