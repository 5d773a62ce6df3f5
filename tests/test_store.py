"""The store: a step's output written into a run folder and read back, under declared names only."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from embedlab.results import DimChoice, MoviesRun  # noqa: E402
from embedlab.runs import RunDir  # noqa: E402
from embedlab.store import Output, Table, load, write, writer  # noqa: E402


def test_an_output_round_trips_through_the_run_folder(tmp_path):
    run = RunDir.create(tmp_path / "run")
    df = pd.DataFrame({"dim": [8, 16], "gap": [0.001, 0.0025], "status": ["converged", "not converged"]})
    fig = plt.figure()
    result = DimChoice(chosen_by_rule=8, configured_dim=16)
    writer(run)(Output(results=(result,), tables={"dim_sweep": Table(df)}, figures={"dim_sweep": fig}))
    assert load(run).movies_dim_sweep == result
    pd.testing.assert_frame_equal(pd.read_csv(run.path / "tables" / "dim_sweep.csv"), df)
    assert "0.0025" in (run.path / "tables" / "dim_sweep.md").read_text()
    # the report's copy is rendered from the CSV, in the format the result type declares, and equals the Markdown copy
    from embedlab.store import Store

    assert Store(run).table_markdown("dim_sweep") + "\n" == (run.path / "tables" / "dim_sweep.md").read_text()
    assert (run.path / "figures" / "dim_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)  # written figures are closed
    from embedlab.runs import _is_temporary

    assert [p.name for p in run.path.rglob("*") if _is_temporary(p.name)] == []  # nothing half-written stays behind


def test_a_dataframe_artefact_is_csv_and_bytes_are_kept_as_they_are(tmp_path):
    run = RunDir.create(tmp_path / "run")
    coords = pd.DataFrame({"movieId": [1, 2], "x": [0.5, -1.0], "y": [2.0, 3.0], "genre": ["Drama", "Comedy"]})
    write(run, Output(owner=MoviesRun, artefacts={"map_coords.csv": coords}))
    pd.testing.assert_frame_equal(pd.read_csv(run.artefact("map_coords.csv")), coords)
    assert load(run).movies_run is None  # an owner declares names; it is not a result


@pytest.mark.parametrize("kind", ["tables", "figures", "artefacts"])
def test_a_name_no_result_declares_is_refused(kind):
    with pytest.raises(ValueError, match="not declared"):
        Output(results=(DimChoice(chosen_by_rule=8, configured_dim=16),), **{kind: {"dim_sweeps": object()}})


def test_a_query_pattern_matches_any_query_but_not_another_table():
    from embedlab.results import Recommendations, files_of

    files = files_of(Recommendations)
    assert files.allows("tables", "recs_toy_story") and files.allows("tables", "recs_dot_apollo_13")
    assert not files.allows("tables", "recs_") and not files.allows("tables", "sweep")


def test_the_store_reads_back_declared_names_and_refuses_others(tmp_path):
    from embedlab.store import Store

    run = RunDir.create(tmp_path / "run")
    store = Store(run)
    assert (
        store.table("dim_sweep") is None
        and store.artefact("map_coords.csv") is None
        and not store.has_figure("dim_sweep")
    )
    df = pd.DataFrame({"dim": [8], "gap": [0.5]})
    store.write(Output(results=(DimChoice(chosen_by_rule=8, configured_dim=8),), tables={"dim_sweep": Table(df)}))
    pd.testing.assert_frame_equal(store.table("dim_sweep"), df)
    assert store.table_markdown("dim_sweep").split() == "| dim | gap | |------:|------:| | 8 | 0.5 |".split()
    for read in (store.table, store.table_markdown, store.has_figure, store.artefact):
        with pytest.raises(ValueError, match="not declared"):
            read("../config.json")
