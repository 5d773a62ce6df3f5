"""The title rules on ml-latest-small's catalogue, one shared table of cases (tests/title_cases.json); the
browser test runs the same table against the report's explorer."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from embedlab.movies.movielens import load_movies
from embedlab.movies.titles import TitleIndex, TitleLookupError

CASES = json.loads((Path(__file__).resolve().parents[1] / "title_cases.json").read_text())["cases"]


_BUILT: dict[Path, TitleIndex] = {}


@pytest.fixture
def index(real_data: Path) -> TitleIndex:
    """The catalogue's index, its likes (ratings >= 4) choosing among several films; built once for the module's
    cases."""
    if real_data not in _BUILT:
        data = real_data / "ml-latest-small"
        ratings = pd.read_csv(data / "ratings.csv")
        likes = ratings[ratings["rating"] >= 4.0].groupby("movieId").size()
        _BUILT[real_data] = TitleIndex.with_likes(load_movies(data), likes.index, likes.to_numpy())
    return _BUILT[real_data]


def test_the_table_has_every_kind_of_case():
    assert len(CASES) >= 25 and {"found", "several", "unknown"} <= {k for c in CASES for k in c}


@pytest.mark.parametrize("case", CASES, ids=[c["query"] for c in CASES])
def test_a_title_as_people_type_it(index: TitleIndex, case: dict):
    titles = index.movies.set_index("title")["movieId"]
    if "found" in case:
        assert index.lookup(case["query"]) == titles[case["found"]]
        return
    if "several" in case:  # the most liked, the others named with the way to choose
        match = index.find(case["query"])
        assert match.title == case["several"] and len(match.others) + 1 == case["count"]
        assert "add the year" in match.note
        return
    with pytest.raises(TitleLookupError) as err:
        index.lookup(case["query"])
    assert str(err.value).startswith(f"no movie titled {case['query']!r}") and case["suggests"] in err.value.candidates


NON_LATIN = json.loads((Path(__file__).resolve().parents[1] / "title_cases.json").read_text(encoding="utf-8"))[
    "non_latin"
]


@pytest.fixture(scope="module")
def synthetic_index(tmp_path_factory) -> TitleIndex:
    """The synthetic catalogue that holds the non-Latin titles, read back from its movies.csv as a run reads it."""
    from conftest import write_hostile_movielens

    folder = write_hostile_movielens(tmp_path_factory.mktemp("catalogue") / "ml-latest-small")
    return TitleIndex(load_movies(folder))


@pytest.mark.parametrize("case", NON_LATIN["cases"], ids=[ascii(c["query"]) for c in NON_LATIN["cases"]])
def test_a_title_in_any_script_as_people_type_it(synthetic_index: TitleIndex, case: dict):
    titles = synthetic_index.movies.set_index("title")["movieId"]
    if "found" in case:
        assert synthetic_index.lookup(case["query"]) == titles[case["found"]]
    else:
        with pytest.raises(TitleLookupError, match="no movie titled"):
            synthetic_index.lookup(case["query"])


def test_every_non_latin_title_is_found_by_its_exact_text(synthetic_index: TitleIndex):
    for title in NON_LATIN["titles"]:
        assert synthetic_index.candidates(title) == (
            "exact title",
            [list(synthetic_index.movies["title"]).index(title)],
        ), ascii(title)
