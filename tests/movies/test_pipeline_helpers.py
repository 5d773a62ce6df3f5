import pandas as pd
import pytest

from embedlab.movies.movielens import slug
from embedlab.movies.tables import genre_matrix, most_specific_genre


def test_most_specific_genre_is_the_rarest_of_each_movies_genres():
    genres = pd.Series(
        ["Adventure|Animation|Children", "Adventure|Drama", "Adventure", "Adventure|Comedy", "Drama|Horror"]
    )
    # Adventure 4, Drama 2, the rest 1: ties go to the alphabetically first
    assert list(most_specific_genre(genres)) == ["Animation", "Drama", "Adventure", "Comedy", "Horror"]


def test_genre_matrix_and_slug():
    g = genre_matrix(pd.Series(["A|B", "B", "(no genres listed)"]))
    assert g.tolist() == [[True, True], [False, True], [False, False]]
    assert slug("Apollo 13") == "apollo_13" and slug("Matrix, The (1999)") == "matrix_the_1999"


def test_the_held_out_split_keeps_every_test_users_likes_out_of_training():
    """Leakage check: the training co-likes count only training users, and every query belongs to a test user."""
    import numpy as np

    from embedlab.config import MoviesConfig
    from embedlab.movies.evaluate import split_users
    from embedlab.movies.holdout import HoldoutSplit
    from embedlab.movies.movielens import with_years

    rng = np.random.default_rng(0)
    users, movies = np.arange(1, 61), np.arange(10, 30)
    rows = [(u, m, float(rng.choice([2.0, 4.5]))) for u in users for m in movies if rng.random() < 0.5]
    ratings = pd.DataFrame(rows, columns=["userId", "movieId", "rating"])
    titles = with_years(pd.DataFrame({"movieId": movies, "title": [f"M{m} (1990)" for m in movies], "genres": "Drama"}))
    cfg = MoviesConfig(holdout_fraction=0.25, holdout_seed=1)
    import scipy.sparse as sp
    import torch

    from embedlab.movies.cooccurrence import build_colikes, like_matrix
    from embedlab.movies.evaluate import build_queries

    split = HoldoutSplit.make(cfg, ratings, titles, build_colikes(ratings, cfg.like_threshold))
    train_users, test_users = split_users(ratings["userId"].to_numpy(), 0.25, 1)
    # the same as building both from the ratings table of each side
    train = build_colikes(ratings[ratings["userId"].isin(train_users)], cfg.like_threshold)
    assert (split.train.likes != train.likes).nnz == 0 and split.train.likes.shape == train.likes.shape
    assert list(split.train.user_ids) == list(train.user_ids) and list(split.train.movie_ids) == list(train.movie_ids)
    test_r = ratings[ratings["userId"].isin(test_users) & ratings["movieId"].isin(train.movie_ids)]
    lmat, _, test_movies = like_matrix(test_r, cfg.like_threshold)
    cols = np.searchsorted(train.movie_ids, test_movies)
    remap = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (np.arange(len(cols)), cols)), shape=(len(cols), train.n_movies)
    )
    expected = build_queries((lmat @ remap).tocsr())
    for name in ("items", "users", "like_keys", "user_likes"):
        assert torch.equal(getattr(split.queries, name), getattr(expected, name)), name
    assert set(split.train.user_ids) <= set(train_users) and not set(split.train.user_ids) & set(test_users)
    liked = ratings[ratings["rating"] >= cfg.like_threshold]
    by_train = liked[liked["userId"].isin(train_users)].groupby("movieId").size()
    assert dict(zip(split.train.movie_ids, split.train.like_counts)) == by_train.to_dict()
    # each query is a like of a test user (its row indexes the test users, its column a training movie)
    test_likes = liked[liked["userId"].isin(test_users)]
    keys = set(
        zip(
            test_likes["userId"].map({u: i for i, u in enumerate(sorted(test_likes["userId"].unique()))}),
            test_likes["movieId"].map({m: i for i, m in enumerate(split.train.movie_ids)}),
        )
    )
    q = split.queries
    assert len(q.items) > 0 and all((int(u), int(i)) in keys for u, i in zip(q.users, q.items))
    # 2A's pass over X marks the same training users, so its ||X_train||_F^2 is the held-out operator's
    from embedlab.movies.cooccurrence import build_colikes, colike_fro_sq, colike_summary
    from embedlab.movies.prepare import training_users

    co = build_colikes(ratings, cfg.like_threshold)
    part = training_users(cfg, ratings, co)
    assert set(co.user_ids[part]) == set(split.train.user_ids)
    assert colike_summary(co.likes, part=part).part_fro_sq == colike_fro_sq(split.train.likes) > 0


def test_the_dimension_is_the_smallest_within_tolerance_of_the_best():
    from embedlab.movies.dims import choose_dim, lr_ladder

    dims = pd.DataFrame({"dim": [16, 32, 64, 100], "hit_rate@10": [0.80, 0.841, 0.846, 0.844]})
    assert choose_dim(dims, 10) == 32  # 0.841 >= 0.846 - 0.005
    assert choose_dim(dims, 10, tolerance=0.001) == 64
    ladder = lr_ladder(0.1, 3)
    assert ladder == pytest.approx([0.1, 0.1 / 3, 0.1 / 9, 0.1 / 27])  # the best, then 3x lower, 3 times
