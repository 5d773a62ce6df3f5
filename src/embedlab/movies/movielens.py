"""MovieLens tables (ratings, movies) and a title lookup that forgives the way people type.

"toy story" -> Toy Story (1995); "The Matrix" -> Matrix, The (1999); "Seven" -> Seven (a.k.a.
Se7en) (1995). An ambiguous title lists its candidates; an unknown one suggests close matches.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from embedlab.data import check_table_file
from embedlab.errors import InputError, MissingFileError, UserError

RATINGS_COLUMNS = ("userId", "movieId", "rating")
MOVIES_COLUMNS = ("movieId", "title", "genres")

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_PAREN = re.compile(r"\s*\(([^()]*)\)\s*$")
_ARTICLES = ("the", "a", "an", "les", "la", "le", "l'", "il", "el", "die", "der", "das", "los", "las", "lo")
_ARTICLE_SUFFIX = re.compile(r"^(.*),\s*(" + "|".join(re.escape(a) for a in _ARTICLES) + r")$", re.IGNORECASE)


#: Explicit dtypes: ML-32M's 32 M ratings take 384 MB as int32/int32/float32 instead of 1 GB as 64-bit.
RATINGS_DTYPES = {"userId": "int32", "movieId": "int32", "rating": "float32"}


def _read_csv(path: Path, columns: tuple[str, ...], dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; is --data-dir pointing at the folder holding {path.parent.name}/?")
    check_table_file(path)
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8").columns
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"{path} lacks column(s) {missing}; found {list(header)}. Is this a MovieLens file?")
        return pd.read_csv(path, usecols=list(columns), dtype=dtypes, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); MovieLens files are UTF-8") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty; expected a CSV with columns {', '.join(columns)}") from None
    except (ValueError, OverflowError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise InputError(f"{path} has a value of the wrong type ({exc}); MovieLens ids are integers and ratings numbers") from None


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
        raise InputError(f"{path} has an empty cell on data line {row + 1} (a file cut short?); MovieLens ratings never do")
    problems = {
        "a rating that is not a half star from 0.5 to 5.0": ~df["rating"].isin(HALF_STARS),
        "a userId or movieId below 1": (df["userId"] < 1) | (df["movieId"] < 1),
        "a (userId, movieId) pair rated twice": df.duplicated(["userId", "movieId"]),
    }
    for what, bad in problems.items():
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise InputError(f"{path} has {what} on data line {row + 1}: {df.iloc[row][list(RATINGS_COLUMNS)].to_dict()}")
    return df[list(RATINGS_COLUMNS)]


def split_title(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a year keeps None."""
    m = _YEAR.search(title)
    if m:
        return title[: m.start()].strip(), int(m.group(1))
    return title.strip(), None


def load_movies(folder: Path) -> pd.DataFrame:
    """movies.csv with a parsed ``year`` column (nullable) and the original title and genres; ids unique and positive."""
    path = Path(folder) / "movies.csv"
    df = _read_csv(path, MOVIES_COLUMNS, {"movieId": "int64", "title": "str", "genres": "str"})[list(MOVIES_COLUMNS)]
    if df["movieId"].duplicated().any() or (df["movieId"] < 1).any():
        raise InputError(f"{path} has a movieId below 1 or listed twice; MovieLens movie ids are unique positive integers")
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


def normalise(text: str) -> str:
    """Lower case, accents dropped ("Amélie" -> "amelie"), articles in front, punctuation folded: the key both titles and queries map to."""
    text = _move_article(unicodedata.normalize("NFKD", text.strip()))
    text = re.sub(r"[^0-9a-z]+", " ", "".join(c for c in text.lower() if not unicodedata.combining(c)))
    return " ".join(text.split())


#: Numerals folded to digits in the last matching rule: roman II-XX and spelled one-twenty ("Rocky Two" is "Rocky II").
NUMERALS = {**{r: str(n) for n, r in enumerate(
    "ii iii iv v vi vii viii ix x xi xii xiii xiv xv xvi xvii xviii xix xx".split(), start=2)},
            **{w: str(n) for n, w in enumerate("one two three four five six seven eight nine ten eleven twelve thirteen "
                                               "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split(), start=1)}}


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
    6. rules 2-5 again with roman and spelled numerals as digits ("Terminator Two", "Godfather Part 2").

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
        if not key:
            return "", []
        bare = _drop_article(key)
        digits, bare_digits = fold_numerals(key), fold_numerals(bare)
        rules = [
            ("exact title", lambda i: self._exact[i] == q.lower()),
            ("exact name", lambda i: key in self._names[i]),
            ("article moved or dropped", lambda i: key in self._keys[i] or bare in self._keys[i]),
            ("prefix", lambda i: any(k.startswith(key) or k.startswith(bare) for k in self._keys[i])),
            ("whole words", lambda i: any(f" {bare} " in f" {k} " for k in self._keys[i])),
            ("numerals as digits", lambda i: any(k == digits or k == bare_digits or k.startswith(bare_digits)
                                                 or f" {bare_digits} " in f" {k} " for k in self._digit_keys[i])),
        ]
        for rule, matches in rules:
            rows = [i for i in range(len(self._titles)) if matches(i) and (year is None or self._years[i] == year)]
            if rows:
                return rule, sorted(rows, key=lambda i: (-self._likes[i], i))
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
            listing = "\n".join(f"  {t}" for t in shown) + (f"\n  … and {len(titles) - 12} more" if len(titles) > 12 else "")
            order = "most liked first" if self.likes is not None else "in catalogue order"
            raise TitleLookupError(f"{query!r} matches {len(rows)} movies ({order}); add the year, e.g. {titles[0]!r}:\n{listing}",
                                   titles)
        name, _ = split_title(query.strip())
        every_key = {k: i for i, keys in enumerate(self._keys) for k in keys}
        close = difflib.get_close_matches(normalise(name), list(every_key), n=5, cutoff=0.6)
        suggestions = list(dict.fromkeys(self._titles[every_key[k]] for k in close))[:8]
        hint = ("did you mean:\n" + "\n".join(f"  {t}" for t in suggestions)) if suggestions else "no similar title either"
        raise TitleLookupError(f"no movie titled {query!r}; {hint}", suggestions)
