"""The studies as a notebook uses them: data in, typed results and figures out, no run folder.

Each function is a thin layer over the same code the main job runs (``embedlab run``), so a notebook and
the report compute the same numbers. ``import embedlab`` exposes every name below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from embedlab import _API
from embedlab.data import ensure_movielens, resolve_data_dir
from embedlab.errors import InputError
from embedlab.movies import figures as movie_figures
from embedlab.movies.cooccurrence import CoLikes, build_colikes
from embedlab.movies.movielens import load_movies, load_ratings, with_years
from embedlab.movies.objective import CoLikeOperator, SpectralSolution, spectral_optimum
from embedlab.movies.saved import MovieEmbedding
from embedlab.movies.train import Budget, Objective, RunResult, fit, initial_embedding
from embedlab.results import RunResults
from embedlab.vision import figures as vision_figures
from embedlab.vision.backbones import Backbone, create_backbone  # noqa: F401 (public: embedlab._API)
from embedlab.vision.cifar10 import CLASSES, Cifar10, ensure_cifar10, load_cifar10
from embedlab.vision.classifier import Classifier  # noqa: F401 (public: embedlab._API)
from embedlab.vision.evaluate import gallery_selection
from embedlab.vision.features import Inputs, extract, pick_device
from embedlab.vision.probe import ProbeFit, accuracy, fit_probe, predict_proba  # noqa: F401 (public: embedlab._API)

__all__ = list(_API)  # declared once, in embedlab/__init__.py (which must not import torch)


def cifar10(data_dir: str | Path | None = None) -> Cifar10:
    """CIFAR-10's official train and test images (uint8, N x 3 x 32 x 32) and labels, checksums verified.

    ``data_dir`` holds ``cifar-10-batches-py/`` (default: ``$EMBEDLAB_DATA_DIR``, else ``./data``); nothing is
    downloaded.

    >>> data = embedlab.cifar10("../shared/data")
    >>> data.train_x.shape, data.classes[3]
    (torch.Size([50000, 3, 32, 32]), 'cat')
    """
    return load_cifar10(ensure_cifar10(resolve_data_dir(data_dir), None))


def extract_features(
    backbone: Backbone, images: torch.Tensor, size: int = 128, batch_size: int = 16, device: str = "auto"
) -> torch.Tensor:
    """Features (N, D) of uint8 ``images`` through ``backbone``'s frozen network, resized to ``size`` px.

    >>> net = embedlab.create_backbone("efficientnet_lite0")
    >>> feats = embedlab.extract_features(net, data.train_x[:64], size=64)
    >>> feats.shape
    torch.Size([64, 1280])
    """
    model = backbone.feature_extractor()
    feats, _ = extract(
        model,
        images,
        Inputs(size, backbone.spec.mean, backbone.spec.std),
        batch_size,
        pick_device(device),
        desc="features",
    )
    return feats


def gallery_figure(
    images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, k: int = 5, title: str = ""
) -> Figure:
    """For each class, the ``k`` most confident correct and ``k`` most confident incorrect predictions, as one figure.

    >>> probs = embedlab.predict_proba(probe.model, test_feats)
    >>> embedlab.gallery_figure(data.test_x[:500], probs, data.test_y[:500])  # doctest: +SKIP
    """
    return vision_figures.gallery(images, gallery_selection(probs, labels, k), CLASSES, k, title)


@dataclass(frozen=True)
class MovieLens:
    """A MovieLens release: its ratings (userId, movieId, rating) and movies (movieId, title, genres, year)."""

    ratings: pd.DataFrame
    movies: pd.DataFrame

    def colikes(self, threshold: float = 4.0) -> CoLikes:
        """The like matrix L (a rating >= ``threshold`` is a like); X = L^T L off the diagonal is never formed."""
        return build_colikes(self.ratings, threshold)


def movielens(data_dir: str | Path | None = None, dataset: str = "ml-latest-small") -> MovieLens:
    """A MovieLens release read from ``data_dir`` (default: ``$EMBEDLAB_DATA_DIR``, else ``./data``); nothing is
    downloaded.

    >>> ml = embedlab.movielens("../shared/data")
    >>> len(ml.ratings), len(ml.movies)
    (100836, 9742)
    """
    folder = ensure_movielens(resolve_data_dir(data_dir), None, dataset)
    return MovieLens(load_ratings(folder), with_years(load_movies(folder)))


def _operator(co: CoLikes) -> CoLikeOperator:
    from embedlab.movies.cooccurrence import colike_fro_sq

    return CoLikeOperator.from_likes(co.likes, colike_fro_sq(co.likes))


def fit_embeddings(
    co: CoLikes, dim: int = 100, optimizer: str = "adam", lr: float = 0.3, iterations: int = 500, seed: int = 0
) -> RunResult:
    """Minimise the sum over i != j of (v_i . v_j - X_ij)^2 by gradient descent with a torch.optim optimiser.

    ``optimizer`` is one of sgd, nesterov, adagrad, rmsprop, adam; the start is N(0, 0.1^2) from ``seed``.
    The result holds the loss of every iteration (``losses``), the embedding ``v`` (M x dim) and whether it diverged.

    >>> run = embedlab.fit_embeddings(ml.colikes(), dim=16, optimizer="adam", lr=0.3, iterations=100)
    >>> run.losses[-1] < run.losses[0]
    True
    """
    _check(dim=dim, iterations=iterations, seed=seed, optimizer=optimizer, lr=lr)
    op = _operator(co)
    return fit(
        Objective(op, op.fro_sq), initial_embedding(co.n_movies, dim, seed, 0.1), optimizer, lr, Budget(iterations)
    )


#: Each argument of the movie functions and the setting of the movie study that declares its type and range.
_SETTING_OF = {"dim": "dim", "iterations": "iterations", "seed": "seed", "k": "top_k", "metric": "metric"}
_SETTING_OF |= {"min_likes": "min_likes"}


def _check(optimizer: str | None = None, lr: float | None = None, **args: Any) -> None:
    """The arguments checked by the declarations the command line's flags are checked by (``embedlab movies
    --help``): a wrong one is an ``InputError`` that names the argument, never a torch error or an empty result."""
    from embedlab.config import MoviesConfig
    from embedlab.overrides import apply_overrides

    values = {_SETTING_OF[name]: value for name, value in args.items()}
    if optimizer is not None:
        values["grid"] = {optimizer: [lr]}
    try:
        apply_overrides(MoviesConfig(), values)
    except InputError as exc:
        text = str(exc)
        for name, key in _SETTING_OF.items():
            text = text.replace(f"config value {key} = ", f"{name}=")
        text = text.replace("config value grid", "optimizer and lr: grid")
        raise InputError(text) from None


def exact_optimum(co: CoLikes, dim: int = 100, seed: int = 0) -> SpectralSolution:
    """The lowest cost any rank-``dim`` embedding can reach (block power iteration on X): the reference for a fit.

    >>> best = embedlab.exact_optimum(ml.colikes(), dim=16)
    >>> best.cost <= run.losses[-1]
    True
    """
    return spectral_optimum(_operator(co), dim, seed=seed)


def loss_figure(runs: list[RunResult], co: CoLikes | None = None, optimum: SpectralSolution | None = None) -> Figure:
    """Cost against iteration for several runs (optimisers, learning rates), with the exact optimum when given.

    >>> embedlab.loss_figure([run_adam, run_sgd], ml.colikes(), best)  # doctest: +SKIP
    """
    c_zero = _operator(co).fro_sq if co is not None else max(r.losses[0] for r in runs)
    c_star = optimum.cost if optimum is not None else min(min(r.losses) for r in runs)
    return movie_figures.best_runs_together(runs, c_star, c_zero, title="Cost by iteration, each run")


def recommend(
    title: str,
    run: RunResult,
    co: CoLikes,
    movies: pd.DataFrame,
    k: int = 10,
    metric: str = "cosine",
    min_likes: int = 10,
) -> pd.DataFrame:
    """The ``k`` movies most similar to ``title`` (typed as people type it) in the embedding of ``run``: a thin call of
    ``MovieEmbedding.of(run.v, co, movies).similar(title, k, metric, min_likes)``.

    Only movies with at least ``min_likes`` likes are recommended; ``metric`` is cosine or dot.

    >>> embedlab.recommend("Toy Story", run, co, ml.movies, k=3)["title"].tolist()  # doctest: +SKIP
    ['Aladdin (1992)', ...]
    """
    _check(k=k, metric=metric, min_likes=min_likes)
    if not bool(torch.isfinite(run.v).all()):
        raise InputError(
            "run.v holds values that are not finite numbers (the fit diverged: run.diverged says so); fit again with a "
            "lower lr"
        )
    emb = MovieEmbedding.of(run.v, co, movies)
    return emb.similar(title, k, metric, min_likes)


def load_run(path: str | Path) -> RunResults:
    """The typed results of a run folder made by ``embedlab run`` (or one study's command); a step that has not
    finished is None. Nothing in the folder is changed.

    >>> r = embedlab.load_run("runs/20261201-101500-study")  # doctest: +SKIP
    >>> r.probe.fit.evaluation.test_accuracy, r.finetune.evaluation.test_accuracy, r.movies_recommend.top["Toy Story
    (1995)"][:3]
    """
    from embedlab.runs import RunDir
    from embedlab.store import load

    return load(RunDir.open(Path(path)))
