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
    "movies/saved.py": ["write_atomic("],  # MovieEmbedding.save: a file the user names, not a run folder's
    "vision/features.py": ["write_atomic(", "write_atomic(", "write_bytes("],
    "vision/finetune.py": ["write_atomic("],
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


#: The one writer of a run folder (``store``, over ``runs.RunDir`` and ``files.write_atomic``), and the files written
#: elsewhere that are not a run folder's: the feature cache, the epoch checkpoint at the path the runner hands the
#: training loop, a dataset download, and /dev/null in place of a closed stdout.
WRITERS = ("store.py", "runs.py", "files.py")
NOT_RUN_FOLDER = {**OWN_FILES, "data.py": ['"wb")'], "cli.py": ["O_WRONLY"]}


def _file_writes(text: str) -> list[str]:
    return [w for w in (*WRITES, "O_WRONLY", "O_APPEND", "append_text(") for _ in range(text.count(w))]


def test_only_the_store_writes_into_a_run_folder():
    """config.json, environment.json, metrics.json, tables, figures, artefacts, report.md/html and run.log: every byte
    of a run folder is written by the store. Any other module of src/ that writes a file is one of the named
    exceptions, which write no run folder."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        where = str(path.relative_to(SRC))
        if where in WRITERS:
            continue
        writes = _file_writes(path.read_text())
        if sorted(writes) != sorted(NOT_RUN_FOLDER.get(where, [])):
            found[where] = writes
    assert found == {}


def test_the_shape_check_sees_each_kind_of_write():
    """The check above finds a step that takes the folder, saves a table, opens a file to write, or saves a result."""
    step = 'def step(cfg, run: "RunDir"):\n    run.save_table("x", df)\n    open(p, "w")\n    save(run, result)\n'
    assert _writes_in(step) == ["RunDir", "save_table(", '"w")', "save("]
    assert _writes_in("def step(cfg):\n    return Output(tables={'x': Table(df)})\n") == []
    report = 'run.write_text("report.md", md)\nos.open(log, os.O_WRONLY | os.O_APPEND)\nrun.update_config("x", {})\n'
    assert _file_writes(report) == ["write_text(", "update_config(", "O_WRONLY", "O_APPEND"]


def test_no_file_in_src_is_over_400_lines():
    """A file does one job: past about 400 lines it holds two (the house plan)."""
    assert {
        str(p.relative_to(SRC)): n for p in sorted(SRC.rglob("*.py")) if (n := len(p.read_text().splitlines())) > 400
    } == {}


def test_every_step_returns_its_output():
    """A step (``step_*``) returns its ``Output``, or a carrier of what the next step needs with its ``out``: one
    convention, read from the return types, so a runner writes every step's work the same way."""
    import dataclasses
    import importlib
    import inspect
    import typing

    from embedlab.store import Output

    wrong = {}
    for path in sorted([*(SRC / "movies").glob("*.py"), *(SRC / "vision").glob("*.py")]):
        module = importlib.import_module(f"embedlab.{path.parent.name}.{path.stem}")
        for name, f in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("step") and f.__module__ == module.__name__:
                kind = typing.get_type_hints(f).get("return")
                if not (
                    kind is Output
                    or (dataclasses.is_dataclass(kind) and typing.get_type_hints(kind).get("out") is Output)
                ):
                    wrong[f"{module.__name__}.{name}"] = kind
    assert wrong == {}


def test_no_function_in_src_is_over_60_lines():
    """A function reads top to bottom on one screen; a longer one does two things (the house plan)."""
    long = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long[f"{path.relative_to(SRC)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_the_report_reads_the_run_folder_through_the_store():
    """Tables, figures and artefacts reach the report by their declared names (``store.Store``), never by a path."""
    paths = ("run.artefact(", "run.path /", '"tables" /', '"figures" /', '"artefacts" /', "read_csv(run", "np.load(run")
    assert {p.name: [w for w in paths if w in p.read_text()] for p in sorted((SRC / "report").glob("*.py"))} == {
        p.name: [] for p in sorted((SRC / "report").glob("*.py"))
    }
