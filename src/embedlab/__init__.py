"""embedlab: CIFAR-10 transfer learning and MovieLens item embeddings, done properly.

From a notebook (each name has a docstring with an example; ``examples/quickstart.ipynb`` walks through both)::

    import embedlab

    data = embedlab.cifar10("../shared/data")
    net = embedlab.create_backbone("efficientnet_lite0")
    feats = embedlab.extract_features(net, data.train_x[:1000], size=64)
    probe = embedlab.fit_probe(feats, data.train_y[:1000], l2=0.01)

    ml = embedlab.movielens("../shared/data")
    co = ml.colikes()
    run = embedlab.fit_embeddings(co, dim=32, optimizer="adam", lr=0.3, iterations=200)
    embedlab.recommend("Apollo 13", run, co, ml.movies)
    emb = embedlab.MovieEmbedding.fit(co, ml.movies, dim=32)  # an object to keep: .similar, .save, .load, .from_run
    clf = embedlab.Classifier.from_run("runs/<folder>", model="finetuned")  # .predict_proba, .predict on any image

    results = embedlab.load_run("runs/<folder>")  # a finished run's typed results

The names are imported on first use, so ``embedlab --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = (
    "Backbone",
    "Cifar10",
    "Classifier",
    "CoLikes",
    "MovieEmbedding",
    "MovieLens",
    "ProbeFit",
    "RunResult",
    "RunResults",
    "SpectralSolution",
    "load_run",
    "accuracy",
    "build_colikes",
    "cifar10",
    "create_backbone",
    "exact_optimum",
    "extract_features",
    "fit_embeddings",
    "fit_probe",
    "gallery_figure",
    "loss_figure",
    "movielens",
    "predict_proba",
    "recommend",
)
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("embedlab.api"), name)
    raise AttributeError(f"module 'embedlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
