"""The movie explorer inside report.html: type-ahead search, top-k, cosine/dot switch and an interactive map.

Everything it shows is computed in the page from what this module stores in it (the run's own
embeddings, float32, not quantised, so that its lists equal ``embedlab recommend``'s), with inlined
JavaScript and no network. ``report.md`` carries only a placeholder that ``report.html`` fills.
"""

from __future__ import annotations

import base64
import functools
import json
from importlib import resources

import numpy as np
import pandas as pd

from embedlab.config import MoviesConfig
from embedlab.movies.movielens import _ARTICLES, NUMERALS, fold_numerals, title_keys, title_names
from embedlab.store import Store
from embedlab.text import without_bidi

#: Where report.md asks for the explorer; report.html replaces it (GitHub shows nothing there).
PLACEHOLDER = '<div id="movie-explorer-placeholder"></div>'


def explorer_data(store: Store, max_movies: int = 20_000) -> dict | None:
    """What the page needs, read through ``MovieEmbedding.from_store`` (so a damaged or edited file is refused as
    ``embedlab recommend`` refuses it); None when the movies run left no embeddings, items or catalogue to read."""
    from embedlab.movies.saved import MovieEmbedding

    if any(store.artefact(name) is None for name in ("embeddings.npz", "items.csv", "catalogue.csv")):
        return None  # missing, or not a regular file of the folder's own: the page says so and reads nothing
    emb = MovieEmbedding.from_store(store)
    cfg = store.typed_config(MoviesConfig, "movies")
    v, items = np.ascontiguousarray(emb.v.numpy(), dtype="<f4"), emb.items
    eligible = np.flatnonzero(items["likes"].to_numpy() >= emb.min_likes)
    capped = len(eligible) > max_movies
    if capped:  # keep the most-liked ones, in the run's order
        eligible = np.sort(eligible[np.argsort(-items["likes"].to_numpy()[eligible], kind="stable")[:max_movies]])
    sub = items.iloc[eligible]
    coords = _map_coordinates(store, sub["movieId"].to_numpy())
    others = _other_films(emb.catalogue, items, sub["movieId"].to_numpy())
    queries = store.table("query_likes")
    return {
        "metric": emb.metric,
        "k": int(cfg.top_k),
        "minLikes": int(emb.min_likes),
        "dim": int(v.shape[1]),
        "capped": capped,
        "titles": [without_bidi(t) for t in sub["title"].astype(str)],
        "genres": sub["genres"].astype(str).tolist(),
        "years": [None if pd.isna(y) else int(y) for y in pd.to_numeric(sub["year"], errors="coerce")],
        "likes": sub["likes"].astype(int).tolist(),
        "names": [title_names(t) for t in sub["title"].astype(str)],
        "keys": [title_keys(t) for t in sub["title"].astype(str)],
        "digitKeys": [list(dict.fromkeys(fold_numerals(k) for k in title_keys(t))) for t in sub["title"].astype(str)],
        "others": others,
        "numerals": NUMERALS,
        "articles": list(_ARTICLES),
        "fold": casefold_table(),
        "vectors": base64.b64encode(v[eligible].tobytes()).decode(),
        "map": coords,
        "queries": (
            [] if queries is None else [without_bidi(t) for t in queries["title"].astype(str) if t in set(sub["title"])]
        ),
    }


def _other_films(catalogue: pd.DataFrame, items: pd.DataFrame, held: np.ndarray) -> dict[str, list]:
    """Every film of the release the page does not hold (too few likes to be recommended, or none): its title, likes
    and keys (the first ``nNames`` are its names), so that the page finds the film a query names among all films, as
    ``embedlab recommend`` does, and says why it cannot list it."""
    rest = catalogue[~catalogue["movieId"].isin(held)]
    titles = rest["title"].astype(str).tolist()
    likes = dict(zip(items["movieId"].tolist(), items["likes"].tolist()))
    return {
        "titles": [without_bidi(t) for t in titles],
        "likes": [int(likes[m]) if m in likes else 0 for m in rest["movieId"].tolist()],  # unliked: 0
        "keys": [title_keys(t) for t in titles],
        "nNames": [len(title_names(t)) for t in titles],
    }


@functools.cache
def casefold_table() -> dict[str, str]:
    """Each character whose ``str.casefold`` differs from its lower case ("ß" -> "ss"): what the page's ``casefold``
    needs beside JavaScript's ``toLowerCase`` to fold a query as ``movielens.normalise`` does."""
    chars = (chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    return {c: c.casefold() for c in chars if c.casefold() != c.lower()}


def _map_coordinates(store: Store, movie_ids: np.ndarray) -> dict | None:
    """x, y and colour genre per explorer movie (null where the map left it out), or None without a map."""
    path = store.artefact("map_coords.csv")
    if path is None:
        return None
    m = pd.read_csv(path).set_index("movieId").reindex(movie_ids)
    to_list = lambda s: [None if pd.isna(a) else a for a in s]  # noqa: E731
    return {"x": to_list(m["x"].round(3)), "y": to_list(m["y"].round(3)), "genre": to_list(m["genre"])}


def _asset(name: str) -> str:
    return resources.files("embedlab.report").joinpath(name).read_text()


#: In a <script> element no byte of the payload may end the element or open a comment: JSON's own \\u escapes keep the
#: characters and hide them from the HTML parser (U+2028/9 too, for older script parsers).
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_for_script(data: object) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``, whatever its strings hold."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).translate(_SCRIPT_SAFE)


def explorer_html(data: dict) -> str:
    """The explorer block: markup, its style, the data as JSON and the inlined script."""
    payload = json_for_script(data)
    return (
        f'<section id="movie-explorer" class="explorer"><style>{_asset("explorer.css")}</style>'
        f"{_asset('explorer.html')}"
        f'<script type="application/json" id="explorer-data">{payload}</script>'
        f"<script>{_asset('explorer.js')}</script></section>"
    )


def fill_placeholder(html: str, store: Store) -> str:
    """``html`` with the explorer in place of the placeholder (or a note when the run has no embeddings)."""
    if PLACEHOLDER not in html:
        return html
    data = explorer_data(store)
    block = (
        explorer_html(data)
        if data
        else "<p><em>(the explorer needs this run's artefacts/embeddings.npz, items.csv and catalogue.csv)</em></p>"
    )
    return html.replace(PLACEHOLDER, block)
