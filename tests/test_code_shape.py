"""The shape the house plan asks of src/: short signatures, and no logging or rank threaded through them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "embedlab"


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                if names and names[0] in ("self", "cls"):
                    names = names[1:]
                names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                yield f"{path.relative_to(SRC)}:{node.lineno} {node.name}", names


def test_no_function_takes_more_than_seven_parameters():
    assert [(where, len(names)) for where, names in _functions() if len(names) > 7] == []


def test_no_function_takes_a_logger_or_the_process_group():
    """Progress goes through ``logging``; the rank and world size live in ``distributed.current()`` (whose own module
    is the one place a ``Dist`` is handed around)."""
    assert [where for where, names in _functions() if {"log", "dist"} & set(names) and not where.startswith("distributed.py")] == []
