"""Finding a film as people type it (``TitleIndex``): the rules, in order, that the report's explorer applies to the
same keys (explorer.js), the film a query names when it matches several (the most liked, the others named), and the
close titles offered when it matches none."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from embedlab.errors import UserError
from embedlab.movies.movielens import _drop_article, fold_numerals, normalise, split_title, title_keys, title_names


class TitleLookupError(UserError, LookupError):
    """A title matched no movie; ``candidates`` holds the close titles suggested."""

    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = candidates

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


def nobody_liked(text: str, where: str = "") -> TitleLookupError:
    """The error for a title that is in the catalogue but has no like (``where``: "in this run", "at >= 4.0 stars"), so
    no row of X and no embedding: one wording for the study, ``embedlab recommend`` and the Python API."""
    return TitleLookupError(
        f"{text!r} is in the catalogue but nobody liked it{' ' + where if where else ''}, so it has no embedding", []
    )


#: A query that ends in a plausible year without parentheses ("star wars 1977"): tried as "star wars (1977)" when the
#: query as typed names no film (so "Blade Runner 2049" is still the film of that name).
BARE_YEAR = re.compile(r"(.*\S)\s+((?:18[89]|19\d|20\d)\d)")


#: The rules of ``TitleIndex``, in order; the first that matches any film decides (see ``TitleIndex.candidates``).
RULES = ("exact title", "exact name", "article moved or dropped", "prefix", "whole words", "numerals as digits")


@dataclass
class TitleIndex:
    """Title -> movieId, finding a film as people type it. The rules, in order (the first that matches any film
    decides; a year typed in parentheses keeps only films of that year):

    1. the exact title, case aside ("Heat (1995)");
    2. the exact name without the year, any alternative name in parentheses included ("Heat" is *Heat (1995)*, "The
       Heat" is *Heat, The (2013)*);
    3. the name with its article moved or dropped ("Shawshank Redemption");
    4. a prefix of a name ("shawshank");
    5. whole words inside a name ("Sorcerer's Stone");
    6. rules 2-5 again with roman and spelled numerals as digits ("Terminator Two", "Godfather Part 2");
    7. when nothing matched, a last word that is a year is taken as the year ("star wars 1977").

    One film: found. Several: the most liked (``likes``, one count per row of ``movies``), the others named. None: close
    titles are suggested. The report's explorer applies the same rules to the same
    keys (``explorer.js``), and one table of cases checks both.
    """

    movies: pd.DataFrame
    likes: Sequence[int] | None = None

    @classmethod
    def with_likes(cls, movies: pd.DataFrame, movie_ids: Sequence[int], like_counts: Sequence[int]) -> TitleIndex:
        """The index over ``movies`` that lists a refused query's films most liked first (unliked movies count 0)."""
        counts = dict(zip((int(m) for m in movie_ids), (int(n) for n in like_counts)))
        return cls(movies, [counts.get(int(m), 0) for m in movies["movieId"]])

    def __post_init__(self) -> None:
        titles = [str(t) for t in self.movies["title"]]
        self._titles = titles
        self._exact = [t.lower() for t in titles]
        self._names = [title_names(t) for t in titles]
        self._keys = [title_keys(t) for t in titles]
        self._digit_keys = [list(dict.fromkeys(fold_numerals(k) for k in keys)) for keys in self._keys]
        self._years = [split_title(t)[1] for t in titles]
        self._likes = [0] * len(titles) if self.likes is None else [int(n) for n in self.likes]

    def candidates(self, query: str) -> tuple[str, list[int]]:
        """(the rule that matched, the matching rows most liked first); ("", []) when no rule matches."""
        q = query.strip()
        name, year = split_title(q)
        key = normalise(name)
        exact = [i for i in range(len(self._titles)) if self._exact[i] == q.lower()]
        if exact or not key:  # the title as stored comes first, even one with no letter or digit to make a key of
            return ("exact title", sorted(exact, key=lambda i: (-self._likes[i], i))) if exact else ("", [])
        bare = _drop_article(key)
        digits, bare_digits = fold_numerals(key), fold_numerals(bare)
        rules = [
            ("exact name", lambda i: key in self._names[i]),
            ("article moved or dropped", lambda i: key in self._keys[i] or bare in self._keys[i]),
            ("prefix", lambda i: any(k.startswith(key) or k.startswith(bare) for k in self._keys[i])),
            ("whole words", lambda i: any(f" {bare} " in f" {k} " for k in self._keys[i])),
            (
                "numerals as digits",
                lambda i: any(
                    k == digits or k == bare_digits or k.startswith(bare_digits) or f" {bare_digits} " in f" {k} "
                    for k in self._digit_keys[i]
                ),
            ),
        ]
        for rule, matches in rules:
            rows = [i for i in range(len(self._titles)) if matches(i) and (year is None or self._years[i] == year)]
            if rows:
                return rule, sorted(rows, key=lambda i: (-self._likes[i], i))
        bare = BARE_YEAR.fullmatch(q)
        if year is None and bare:  # "star wars 1977": nothing is named so, so the last word is the year
            rule, rows = self.candidates(f"{bare.group(1)} ({bare.group(2)})")
            return (f"{rule}, year without parentheses" if rows else ""), rows
        return "", []

    def find(self, query: str, pool: Sequence[int] | None = None) -> TitleMatch:
        """The film ``query`` names: the most liked of the films the first matching rule finds, with the others named
        (the explorer answers alike). None: ``TitleLookupError`` suggesting close titles among the rows ``pool``
        (those that can be answered; default all), as the explorer's box offers them."""
        if not query.strip():
            raise TitleLookupError("empty title: type a movie title such as 'Toy Story'", [])
        _, rows = self.candidates(query)
        if rows:
            first = rows[0]
            return TitleMatch(
                int(self.movies["movieId"].iat[first]), self._titles[first], [self._titles[r] for r in rows[1:]]
            )
        suggestions = [self._titles[i] for i in self.suggestions(query, pool)]
        hint = (
            ("did you mean:\n" + "\n".join(f"  {t}" for t in suggestions)) if suggestions else "no similar title either"
        )
        raise TitleLookupError(f"no movie titled {query!r}; {hint}", suggestions)

    def lookup(self, query: str) -> int:
        """The movieId of the film ``query`` names (``find``)."""
        return self.find(query).movie_id

    def suggestions(self, query: str, pool: Sequence[int] | None = None) -> list[int]:
        """Rows of titles close to ``query``, at most 8, as the explorer's box offers them (explorer.js
        ``suggestions``): the titles a name of which begins with it, most liked first; else, for a typo, those whose
        name (or its first words, as many as were typed) is within an edit distance of 40 % of the longer one, closest
        first, then most liked. Only rows of ``pool`` are offered (default: all)."""
        key = normalise(split_title(query)[0])
        if not key:
            return []
        alt = _drop_article(key)
        rows = range(len(self._titles)) if pool is None else pool
        hits = [i for i in rows if any(k.startswith(key) or k.startswith(alt) for k in self._keys[i])]
        if hits:
            return sorted(hits, key=lambda i: (-self._likes[i], i))[:8]
        words, typed = len(key.split(" ")), _utf16(key)
        close = []
        for i in rows:
            forms = {f for k in self._keys[i] for f in (k, " ".join(k.split(" ")[:words]))}
            d = min(_edit_distance(typed, _utf16(f)) / max(len(typed), len(_utf16(f))) for f in forms)
            if d <= 0.4:
                close.append((d, -self._likes[i], i))
        return [i for _, _, i in sorted(close)[:8]]


@dataclass(frozen=True)
class TitleMatch:
    """The film a query names, and the other films it matches, most liked first."""

    movie_id: int
    title: str
    others: list[str]

    @property
    def note(self) -> str:
        """What to say when the query matched several films ("" for one)."""
        if not self.others:
            return ""
        listed = "; ".join(self.others[:5]) + (f"; … and {len(self.others) - 5} more" if len(self.others) > 5 else "")
        return f"{len(self.others) + 1} titles match; the most-liked is shown (add the year to choose: {listed})"


def _utf16(text: str) -> list[int]:
    """``text`` as JavaScript's strings count it (UTF-16 code units), so that distances equal the explorer's."""
    return list(memoryview(text.encode("utf-16-le")).cast("H"))


def _edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance, two rows; past 40 % of the longer length apart in length, that length (explorer.js)."""
    if abs(len(a) - len(b)) > 0.4 * max(len(a), len(b)):
        return max(len(a), len(b))
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i]
        for j in range(1, len(b) + 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])))
        prev = row
    return prev[len(b)]
