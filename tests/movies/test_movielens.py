import pandas as pd
import pytest

from embedlab.movies.movielens import load_movies, load_ratings, normalise, split_title
from embedlab.movies.titles import TitleIndex, TitleLookupError


@pytest.fixture
def index(movielens_root):
    return TitleIndex(load_movies(movielens_root / "ml-latest-small"))


def title_of(index, query):
    mid = index.lookup(query)
    return index.movies.set_index("movieId").loc[mid, "title"]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("Toy Story (1995)", "Toy Story (1995)"),  # exact
        ("toy story", "Toy Story (1995)"),  # case, year optional
        ("  TOY   STORY ", "Toy Story (1995)"),
        ("The Matrix", "Matrix, The (1999)"),  # leading article moved
        ("matrix", "Matrix, The (1999)"),  # article left out
        ("Se7en", "Seven (a.k.a. Se7en) (1995)"),  # alternative title
        ("Hamlet (1948)", "Hamlet (1948)"),  # year disambiguates
        ("Toy Story 2", "Toy Story 2 (1999)"),
    ],
)
def test_forgiving_lookup(index, query, expected):
    assert title_of(index, query) == expected


def test_a_title_two_films_share_is_the_most_liked_with_the_other_named(index):
    match = index.find("Hamlet")
    assert sorted([match.title, *match.others]) == ["Hamlet (1948)", "Hamlet (1996)"]
    assert match.note.startswith("2 titles match; the most-liked is shown") and match.others[0] in match.note
    assert index.lookup("Hamlet") == match.movie_id and index.find("Hamlet (1996)").others == []


def test_unknown_title_suggests_close_matches(index):
    with pytest.raises(TitleLookupError) as err:
        index.lookup("Toy Storyy")
    assert "Toy Story (1995)" in err.value.candidates
    assert "did you mean" in str(err.value)
    with pytest.raises(TitleLookupError, match="no similar title"):
        index.lookup("qqqqzzzz")
    with pytest.raises(TitleLookupError, match="empty title"):
        index.lookup("  ")


def test_helpers():
    assert split_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_title("Untitled") == ("Untitled", None)
    assert normalise("Matrix, The") == "the matrix"
    assert normalise("Star Wars: Episode IV - A New Hope") == "star wars episode iv a new hope"


def test_missing_column_is_a_clear_error(tmp_path):
    pd.DataFrame({"user": [1], "movieId": [1], "rating": [4.0]}).to_csv(tmp_path / "ratings.csv", index=False)
    with pytest.raises(ValueError, match="lacks column"):
        load_ratings(tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_movies(tmp_path)


def test_real_titles(real_data):
    idx = TitleIndex(load_movies(real_data / "ml-latest-small"))
    assert title_of(idx, "Apollo 13") == "Apollo 13 (1995)"
    assert title_of(idx, "home alone") == "Home Alone (1990)"
    assert title_of(idx, "The Matrix") == "Matrix, The (1999)"
