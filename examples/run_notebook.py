"""Execute examples/quickstart.ipynb from top to bottom and store it with its outputs, as readers see it on GitHub
(``make notebook``). The suite executes it again and compares what it prints with what is stored
(tests/test_notebook.py), so the stored outputs cannot go stale.

Usage: EMBEDLAB_DATA_DIR=DATA python examples/run_notebook.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent / "quickstart.ipynb"

#: What may differ between two executions of the same notebook: object addresses and times.
VOLATILE = [(re.compile(r" at 0x[0-9a-f]+"), " at 0x…"), (re.compile(r"\d+(\.\d+)? ?(s|ms|min)\b"), "<time>")]


def execute(path: Path = NOTEBOOK):  # -> nbformat.NotebookNode
    """The notebook at ``path``, executed in its folder by a fresh python3 kernel (no timing metadata recorded)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return nb


def printed(nb) -> list[list[tuple[str, str]]]:
    """Each code cell's outputs as (kind, text) with ``VOLATILE`` parts masked; a figure is ("image/png", "")."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        out = []
        for o in cell.outputs:
            if o.output_type == "stream":
                text = o.text
                for pattern, mask in VOLATILE:
                    text = pattern.sub(mask, text)
                if out and out[-1][0] == o.name:  # the kernel sends a cell's prints in as many chunks as timing makes
                    out[-1] = (o.name, out[-1][1] + text)
                else:
                    out.append((o.name, text))
            elif "image/png" in o.get("data", {}):
                out.append(("image/png", ""))
            else:
                out.append((o.output_type, str(o.get("data", {}).get("text/plain", o.get("evalue", "")))))
        cells.append(out)
    return cells


if __name__ == "__main__":
    import nbformat

    executed = execute(NOTEBOOK)
    nbformat.write(executed, NOTEBOOK)
    print(f"{NOTEBOOK}: executed and stored with its outputs", file=sys.stderr)
