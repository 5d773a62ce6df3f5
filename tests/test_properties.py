"""Property-based tests (hypothesis): title lookup forgives what users type, config parsing never lets a
value of the wrong type through and never raises anything but its own one-line error."""

from __future__ import annotations

import dataclasses
import typing

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedlab.config import FinetuneConfig, MoviesConfig, ProbeConfig
from embedlab.movies.movielens import with_years
from embedlab.movies.titles import TitleIndex, TitleLookupError
from embedlab.overrides import ConfigError, apply_overrides

WORDS = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzéèü"), min_size=2, max_size=8)
NAMES = st.lists(WORDS, min_size=1, max_size=4).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(name=NAMES, year=st.integers(1900, 2020), article=st.booleans(), upper=st.booleans(), with_year=st.booleans())
def test_a_title_is_found_whatever_the_case_article_year_and_accents(name, year, article, upper, with_year):
    title = f"{name}, The ({year})" if article else f"{name} ({year})"
    movies = with_years(
        pd.DataFrame({"movieId": [7, 8], "title": [title, "Zzzz Other (1950)"], "genres": ["Drama", "Drama"]})
    )
    typed = ("The " if article else "") + name
    typed = typed.upper() if upper else typed
    typed = typed.translate(str.maketrans("éèü", "eeu"))  # users often type without accents
    if with_year:
        typed += f" ({year})"
    assert TitleIndex(movies).lookup(typed) == 7


@settings(max_examples=40, deadline=None)
@given(query=st.text(max_size=30))
def test_lookup_answers_a_movie_or_its_own_error(query):
    """Any text gets a movie or a TitleLookupError that names the query; an exact title, however padded, is always
    found."""
    titles = {"toy story (1995)": 1, "hamlet (1996)": 2}
    movies = with_years(
        pd.DataFrame({"movieId": [1, 2], "title": ["Toy Story (1995)", "Hamlet (1996)"], "genres": ["A", "B"]})
    )
    index = TitleIndex(movies)
    try:
        got = index.lookup(query)
    except TitleLookupError as exc:
        assert query.strip().lower() not in titles, f"an exact title was not found: {query!r}"
        assert repr(query) in str(exc) or (not query.strip() and "empty title" in str(exc)), str(exc)
    else:
        assert got in (1, 2)
    for title, movie_id in titles.items():  # the same text around an exact title never hides it
        assert index.lookup(f"  {title.upper()}  ") == movie_id


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.parametrize("cls", [MoviesConfig, ProbeConfig, FinetuneConfig])
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_config_values_are_applied_only_when_they_have_the_fields_type(cls, data):
    cfg = cls()
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    value = data.draw(JSON_VALUES)
    hint = typing.get_type_hints(cls)[field]
    try:
        out = apply_overrides(cfg, {field: value}, "section")
    except ConfigError as exc:
        assert f"section.{field}" in str(exc) and "\n" not in str(exc)
        return
    got = getattr(out, field)
    # what was accepted has the declared type (an int is accepted as a float, and becomes one)
    from pydantic import TypeAdapter

    assert TypeAdapter(hint).validate_python(got, strict=True) == got
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        assert got == value
