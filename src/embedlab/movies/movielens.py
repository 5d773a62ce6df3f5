"""MovieLens tables (ratings, movies) and a title lookup that forgives the way people type.

"toy story" -> Toy Story (1995); "The Matrix" -> Matrix, The (1999); "Seven" -> Seven (a.k.a.
Se7en) (1995). An ambiguous title lists its candidates; an unknown one suggests close matches.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import logging
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from embedlab.data import check_table_file
from embedlab.errors import InputError, MissingFileError, UserError

RATINGS_COLUMNS = ("userId", "movieId", "rating")
MOVIES_COLUMNS = ("movieId", "title", "genres")

_YEAR = re.compile(r"\s*\(([0-9]{4})(?:[-–][0-9]{0,4})?\)\s*$")  # ASCII digits, as the explorer's JavaScript reads them
_PAREN = re.compile(r"\s*\(([^()]*)\)\s*$")
_ARTICLES = ("the", "a", "an", "les", "la", "le", "l'", "il", "el", "die", "der", "das", "los", "las", "lo")
_ARTICLE_SUFFIX = re.compile(r"^(.*),\s*(" + "|".join(re.escape(a) for a in _ARTICLES) + r")$", re.IGNORECASE)


#: Explicit dtypes: ML-32M's 32 M ratings take 384 MB as int32/int32/float32 instead of 1 GB as 64-bit.
RATINGS_DTYPES = {"userId": "int32", "movieId": "int32", "rating": "float32"}


def _read_csv(path: Path, columns: tuple[str, ...], dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; is --data-dir pointing at the folder holding {path.parent.name}/?"
        )
    check_table_file(path)
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8").columns
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"{path} lacks column(s) {missing}; found {list(header)}. Is this a MovieLens file?")
        with warnings.catch_warnings():  # an overflowing cell (1e308 as float32) is reported with the line it is on
            warnings.simplefilter("ignore")
            return pd.read_csv(path, usecols=list(columns), dtype=dtypes, encoding="utf-8")
    except UnicodeDecodeError as exc:  # pandas decodes in chunks: its offset is not the file's, so find the line
        raise InputError(
            f"{path} is not UTF-8 text ({exc.reason} on line {_first_non_utf8_line(path)}); MovieLens files are UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty; expected a CSV with columns {', '.join(columns)}") from None
    except (ValueError, OverflowError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise InputError(
            f"{path} has a value of the wrong type ({exc}); MovieLens ids are integers and ratings numbers"
        ) from None


def _data_line(path: Path, row: int) -> str:
    """Data line ``row`` (from 0, after the header) of ``path`` as written, for a message that shows the value itself
    (a rating of 1e308 reads as inf once parsed)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return next(itertools.islice(f, row + 1, None), "").rstrip("\r\n")


def _first_non_utf8_line(path: Path) -> str:
    """The number (from 1, the header included) of the first line of ``path`` that is not UTF-8, as text."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return str(number)
    return "?"


#: MovieLens ratings are half stars from 0.5 to 5.0.
HALF_STARS = tuple(x / 2 for x in range(1, 11))


def load_ratings(folder: Path) -> pd.DataFrame:
    """ratings.csv as a DataFrame (userId, movieId, rating), validated: types, ranges, duplicates, truncation.

    The timestamp column is read only to be checked: a file cut inside a line leaves it empty.
    """
    path = Path(folder) / "ratings.csv"
    df = _read_csv(path, (*RATINGS_COLUMNS, "timestamp"), {**RATINGS_DTYPES, "timestamp": "float64"})
    if df.empty:
        raise InputError(f"{path} holds no ratings")
    if df.isna().any().any():
        row = int(df.isna().any(axis=1).to_numpy().argmax())
        line = _data_line(path, row)
        if any(not cell.strip() for cell in line.split(",")) or line.count(",") < 3:
            raise InputError(
                f"{path} has an empty cell on data line {row + 1} (a file cut short?); MovieLens ratings never do"
            )
        raise InputError(f"{path} has a cell that is not a number on data line {row + 1}: {line!r}")
    problems = {
        "a rating that is not a half star from 0.5 to 5.0": ~df["rating"].isin(HALF_STARS),
        "a userId or movieId below 1": (df["userId"] < 1) | (df["movieId"] < 1),
        "a (userId, movieId) pair rated twice": df.duplicated(["userId", "movieId"]),
    }
    for what, bad in problems.items():
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise InputError(f"{path} has {what} on data line {row + 1}: {_data_line(path, row)!r}")
    return df[list(RATINGS_COLUMNS)]


def split_title(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a year keeps None."""
    m = _YEAR.search(title)
    if m:
        return title[: m.start()].strip(), int(m.group(1))
    return title.strip(), None


def untitled(movie_id: int) -> str:
    """The visible title of a movie whose title is missing (empty in movies.csv, or a rated movie not listed there)."""
    return f"(no title: movieId {movie_id})"


#: MovieLens's own spelling of a movie without genres.
NO_GENRES = "(no genres listed)"


def load_movies(folder: Path) -> pd.DataFrame:
    """movies.csv with a parsed ``year`` column (nullable) and the original title and genres; ids unique and positive.

    Rows the study can use only in part are kept, visibly, with a warning naming their lines: an empty title becomes
    ``untitled(movieId)`` (its ratings still count in X), empty genres MovieLens's "(no genres listed)". A file with no
    movie at all is refused: every query would be unknown.
    """
    path = Path(folder) / "movies.csv"
    df = _read_csv(path, MOVIES_COLUMNS, {"movieId": "int64", "title": "str", "genres": "str"})[list(MOVIES_COLUMNS)]
    if df.empty:
        raise InputError(
            f"{path} holds no movies (a header line only); expected one line per movie: movieId,title,genres"
        )
    if df["movieId"].duplicated().any() or (df["movieId"] < 1).any():
        raise InputError(
            f"{path} has a movieId below 1 or listed twice; MovieLens movie ids are unique positive integers"
        )
    for column, what, fill in (
        ("title", "an empty title", lambda i: untitled(int(df["movieId"].iat[i]))),
        ("genres", "no genres", lambda i: NO_GENRES),
    ):
        blank = df[column].isna().to_numpy() | (df[column].fillna("").astype(str).str.strip() == "").to_numpy()
        if blank.any():
            rows = blank.nonzero()[0]
            df.loc[blank, column] = [fill(i) for i in rows]
            lines = ", ".join(str(i + 1) for i in rows[:5]) + (", …" if len(rows) > 5 else "")
            logging.getLogger(__name__).warning(
                f"{path}: {len(rows):,} movie(s) with {what} on data line(s) {lines}; kept, "
                f"shown as {fill(int(rows[0]))!r}" + (" and so on" if len(rows) > 1 else "")
            )
    return with_years(df)


def with_years(movies: pd.DataFrame) -> pd.DataFrame:
    """A copy of a (movieId, title, genres) table with the year parsed from each title (nullable)."""
    df = movies.copy()
    df["year"] = pd.array([split_title(str(t))[1] for t in df["title"]], dtype="Int64")
    return df


def _move_article(name: str) -> str:
    m = _ARTICLE_SUFFIX.match(name)
    if not m:
        return name
    article = m.group(2)
    sep = "" if article.endswith("'") else " "
    return f"{article}{sep}{m.group(1)}"


#: The combining marks dropped by ``normalise``: the blocks of diacritics that Latin, Greek and Cyrillic letters take
#: ("é" is "e" + U+0301). Other scripts' marks (Hebrew points, Devanagari vowel signs) are part of their words and stay.
LATIN_MARKS = ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0xFE20, 0xFE2F))


def _kept(c: str) -> str:
    """What one character of an NFD text becomes in a key: itself (a letter, digit, mark or symbol such as an emoji),
    nothing (a Latin-like diacritic; an invisible format character: zero-width space or joiner, a bidi control), or
    a space (punctuation, spaces)."""
    if any(lo <= ord(c) <= hi for lo, hi in LATIN_MARKS):
        return ""
    category = unicodedata.category(c)
    if category == "Cf":
        return ""
    return c if category[0] in "LNM" or category == "So" else " "


def normalise(text: str) -> str:
    """The key both titles and queries map to, in any script: compatibility forms folded (NFKC: full-width letters,
    ligatures), case folded ("Straße" -> "strasse"), Latin-like diacritics dropped ("Amélie" -> "amelie"), invisible
    characters dropped, the article moved to the front, punctuation a single space. Letters, digits, other scripts'
    marks and symbols (emoji) are kept, so "שלום" and "東京物語" have keys of their own."""
    text = _move_article(unicodedata.normalize("NFKC", text.strip()))
    text = unicodedata.normalize("NFD", text.casefold())  # per character, as the explorer folds
    text = unicodedata.normalize("NFC", "".join(_kept(c) for c in text))
    return " ".join(text.split())


def slug(text: str) -> str:
    """'Apollo 13' -> 'apollo_13': a file-name part for a query's tables, from its key (``normalise``) in any script; a
    text with no letter or digit (emoji alone) gets a short hash instead."""
    key = "_".join("".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in normalise(text)).split())
    return key or "q" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


#: Numerals folded to digits in the last matching rule: roman II-XX and spelled one-twenty ("Rocky Two" is "Rocky II").
NUMERALS = {
    **{
        r: str(n)
        for n, r in enumerate("ii iii iv v vi vii viii ix x xi xii xiii xiv xv xvi xvii xviii xix xx".split(), start=2)
    },
    **{
        w: str(n)
        for n, w in enumerate(
            "one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split(),
            start=1,
        )
    },
}


def fold_numerals(key: str) -> str:
    """'godfather part ii' -> 'godfather part 2' (and 'two' -> '2'), word by word."""
    return " ".join(NUMERALS.get(w, w) for w in key.split())


def title_names(title: str) -> list[str]:
    """The names a title answers to exactly: its name as written (article moved to the front), every alternative name
    in parentheses ("a.k.a. …"), and the whole name with its parentheses."""
    name, _ = split_title(title)
    whole = name
    aliases: list[str] = []
    while (m := _PAREN.search(name)) is not None and m.start() > 0:
        alias = re.sub(r"^(a\.k\.a\.|aka)\s*", "", m.group(1), flags=re.IGNORECASE)
        aliases.append(alias)
        name = name[: m.start()]
    return [k for k in dict.fromkeys(normalise(t) for t in [name, *aliases, whole]) if k]


def title_keys(title: str) -> list[str]:
    """Every key a title answers to: its names (``title_names``), and each with its leading article dropped."""
    names = title_names(title)
    return [k for k in dict.fromkeys([*names, *(_drop_article(k) for k in names)]) if k]


def _drop_article(key: str) -> str:
    """'the city of lost children' -> 'city of lost children', so users may leave articles out."""
    head, _, rest = key.partition(" ")
    return rest if rest and head in _ARTICLES else key


class TitleLookupError(UserError, LookupError):
    """A title matched no movie or several; ``candidates`` holds the titles to choose from."""

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

    One film: found. Several: refused, listing them most liked first (``likes``, one count per row of ``movies``) and
    asking for the year. None: close titles are suggested. The report's explorer applies the same rules to the same
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

    def lookup(self, query: str) -> int:
        """Return the movieId for ``query``; raise TitleLookupError listing candidates otherwise."""
        if not query.strip():
            raise TitleLookupError("empty title: type a movie title such as 'Toy Story'", [])
        _, rows = self.candidates(query)
        titles = [self._titles[r] for r in rows]
        if len(rows) == 1:
            return int(self.movies["movieId"].iat[rows[0]])
        if len(rows) > 1:
            shown = titles[:12]
            listing = "\n".join(f"  {t}" for t in shown) + (
                f"\n  … and {len(titles) - 12} more" if len(titles) > 12 else ""
            )
            order = "most liked first" if self.likes is not None else "in catalogue order"
            raise TitleLookupError(
                f"{query!r} matches {len(rows)} movies ({order}); add the year, e.g. {titles[0]!r}:\n{listing}", titles
            )
        name, _ = split_title(query.strip())
        typed = normalise(name)
        # every name, and its first words as many as were typed ("star warz" is close to "star wars ...")
        rows_of: dict[str, list[int]] = {}
        for i, keys in enumerate(self._keys):
            for k in keys:
                for form in dict.fromkeys((k, " ".join(k.split()[: len(typed.split())]))):
                    rows_of.setdefault(form, []).append(i)
        close = difflib.get_close_matches(typed, list(rows_of), n=5, cutoff=0.6)  # the closest first
        rows = [i for k in close for i in sorted(rows_of[k], key=lambda i: (-self._likes[i], i))]  # then most liked
        suggestions = [self._titles[i] for i in dict.fromkeys(rows)][:8]
        hint = (
            ("did you mean:\n" + "\n".join(f"  {t}" for t in suggestions)) if suggestions else "no similar title either"
        )
        raise TitleLookupError(f"no movie titled {query!r}; {hint}", suggestions)
