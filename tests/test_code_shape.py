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
    assert [
        where
        for where, names in _functions()
        if {"log", "dist"} & set(names) and not where.startswith("distributed.py")
    ] == []


def test_the_report_reads_typed_results_and_one_module_writes_metrics():
    """report/ holds no ``.get(`` chains and parses no key out of a string; metrics.json is written through
    ``embedlab.store`` alone (``runs.RunDir`` is the file layer under it)."""
    assert [p.name for p in sorted((SRC / "report").glob("*.py")) if ".get(" in p.read_text()] == []
    assert [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py")) if '.partition(" | ")' in p.read_text()] == []
    writers = sorted(
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "update_metrics(" in p.read_text() or 'write_json("metrics.json"' in p.read_text()
    )
    assert writers == ["runs.py", "store.py"]


def test_every_public_name_is_documented_with_an_example():
    import inspect

    import embedlab

    names = [n for n in embedlab.__all__ if n != "__version__"]
    undocumented = [n for n in names if not inspect.getdoc(getattr(embedlab, n))]
    no_example = [
        n
        for n in names
        if inspect.isfunction(getattr(embedlab, n)) and ">>>" not in inspect.getdoc(getattr(embedlab, n))
    ]
    assert (undocumented, no_example) == ([], [])
    import embedlab.api

    assert sorted(names) == sorted(embedlab.api.__all__)


#: What writing a file looks like in src/ (the store's own calls included).
WRITES = (
    "save_table(",
    "save_figure(",
    "save_artefact(",
    "save_csv(",
    "write_atomic(",
    "write_text(",
    "write_bytes(",
    "write_json(",
    "update_metrics(",
    "update_config(",
    "savefig(",
    '"w")',
    '"wb")',
)


def _writes_in(text: str) -> list[str]:
    """Where ``text`` (a module) names a run folder or writes a file, ``results.save`` included."""
    found = [w for w in ("RunDir", *WRITES) if w in text]
    return found + [
        "save("
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "save"
    ]


#: The files a study may write that are not the run folder's: the feature cache (``cache_dir``) and the epoch checkpoint
#: at the path the runner hands the training loop.
OWN_FILES = {
    "vision/features.py": ["write_atomic(", "write_atomic(", "write_bytes("],
    "vision/checkpoint.py": ["write_atomic("],
}


def test_the_steps_take_no_run_folder_and_write_no_file():
    """A step returns its output (``store.Output``); the store writes it. Nothing in movies/ or vision/ names ``RunDir``
    or writes into a run folder."""
    found = {}
    for path in sorted([*(SRC / "movies").glob("*.py"), *(SRC / "vision").glob("*.py")]):
        where = str(path.relative_to(SRC))
        text = path.read_text()
        writes = [w for w in ("RunDir", *WRITES) for _ in range(text.count(w))]
        writes += [w for w in _writes_in(text) if w == "save("]
        if sorted(writes) != sorted(OWN_FILES.get(where, [])):
            found[where] = writes
    assert found == {}


def test_the_shape_check_sees_each_kind_of_write():
    """The check above finds a step that takes the folder, saves a table, opens a file to write, or saves a result."""
    step = 'def step(cfg, run: "RunDir"):\n    run.save_table("x", df)\n    open(p, "w")\n    save(run, result)\n'
    assert _writes_in(step) == ["RunDir", "save_table(", '"w")', "save("]
    assert _writes_in("def step(cfg):\n    return Output(tables={'x': Table(df)})\n") == []


def test_no_file_in_src_is_over_400_lines():
    """A file does one job: past about 400 lines it holds two (the house plan)."""
    assert {
        str(p.relative_to(SRC)): n for p in sorted(SRC.rglob("*.py")) if (n := len(p.read_text().splitlines())) > 400
    } == {}


def test_the_report_reads_the_run_folder_through_the_store():
    """Tables, figures and artefacts reach the report by their declared names (``store.Store``), never by a path."""
    paths = ("run.artefact(", "run.path /", '"tables" /', '"figures" /', '"artefacts" /', "read_csv(run", "np.load(run")
    assert {p.name: [w for w in paths if w in p.read_text()] for p in sorted((SRC / "report").glob("*.py"))} == {
        p.name: [] for p in sorted((SRC / "report").glob("*.py"))
    }
