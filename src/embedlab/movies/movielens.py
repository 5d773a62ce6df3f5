"""MovieLens tables (ratings, movies) and a title lookup that forgives the way people type.

"toy story" -> Toy Story (1995); "The Matrix" -> Matrix, The (1999); "Seven" -> Seven (a.k.a.
Se7en) (1995). An ambiguous title lists its candidates; an unknown one suggests close matches.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import re
import unicodedata
import warnings
from pathlib import Path

import pandas as pd

from embedlab.data import check_table_file
from embedlab.errors import InputError, MissingFileError

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


@functools.cache  # one entry per distinct character: a catalogue's titles hold a few thousand at most
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
    return list(_title_names(title))


#: Titles whose names are remembered: a run asks for every title's names several times (the title index, the
#: explorer, its list of other films); remembering them and each character's fate takes that work to 0.10x
#: (bench/movies_titles.py).
TITLES_REMEMBERED = 1 << 18


@functools.lru_cache(maxsize=TITLES_REMEMBERED)
def _title_names(title: str) -> tuple[str, ...]:
    name, _ = split_title(title)
    whole = name
    aliases: list[str] = []
    while (m := _PAREN.search(name)) is not None and m.start() > 0:
        alias = re.sub(r"^(a\.k\.a\.|aka)\s*", "", m.group(1), flags=re.IGNORECASE)
        aliases.append(alias)
        name = name[: m.start()]
    return tuple(k for k in dict.fromkeys(normalise(t) for t in [name, *aliases, whole]) if k)


def title_keys(title: str) -> list[str]:
    """Every key a title answers to: its names (``title_names``), and each with its leading article dropped."""
    names = title_names(title)
    return [k for k in dict.fromkeys([*names, *(_drop_article(k) for k in names)]) if k]


def _drop_article(key: str) -> str:
    """'the city of lost children' -> 'city of lost children', so users may leave articles out."""
    head, _, rest = key.partition(" ")
    return rest if rest and head in _ARTICLES else key
