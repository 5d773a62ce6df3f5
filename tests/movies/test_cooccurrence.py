import numpy as np
import pandas as pd
import pytest

from embedlab.movies.cooccurrence import build_colikes, colike_stats, top_pairs


def hand_ratings() -> pd.DataFrame:
    # users 1..3, movies 10, 20, 30, 40 (40 is never liked at >= 4)
    return pd.DataFrame(
        [(1, 10, 5.0), (1, 20, 4.0), (1, 30, 3.5), (2, 10, 4.5), (2, 20, 4.0), (2, 30, 4.0), (3, 20, 4.0), (3, 30, 5.0), (3, 40, 2.0)],
        columns=["userId", "movieId", "rating"],
    )


def test_x_counts_users_who_liked_both_with_zero_diagonal():
    co = build_colikes(hand_ratings(), threshold=4.0)
    assert list(co.movie_ids) == [10, 20, 30]
    expected = np.array([[0, 2, 1], [2, 0, 2], [1, 2, 0]])
    np.testing.assert_array_equal(co.x.toarray(), expected)
    assert list(co.like_counts) == [2, 3, 2]
    assert co.index_of(40) is None and co.index_of(20) == 1


def test_threshold_35_adds_the_half_star_like():
    co = build_colikes(hand_ratings(), threshold=3.5)
    assert co.x.toarray()[0, 2] == 2  # user 1's 3.5 for movie 30 now counts


def test_duplicate_ratings_count_once():
    r = pd.concat([hand_ratings(), hand_ratings().iloc[:1]])
    np.testing.assert_array_equal(build_colikes(r).x.toarray(), build_colikes(hand_ratings()).x.toarray())


def test_matches_bruteforce_on_random_table():
    rng = np.random.default_rng(0)
    r = pd.DataFrame({"userId": rng.integers(0, 30, 400), "movieId": rng.integers(0, 25, 400), "rating": rng.choice([1.0, 3.0, 4.0, 5.0], 400)})
    co = build_colikes(r, 4.0)
    liked = r[r.rating >= 4].drop_duplicates(["userId", "movieId"])
    sets = liked.groupby("userId")["movieId"].apply(set)
    pos = {m: i for i, m in enumerate(co.movie_ids)}
    brute = np.zeros((len(pos), len(pos)))
    for s in sets:
        for a in s:
            for b in s:
                if a != b:
                    brute[pos[a], pos[b]] += 1
    np.testing.assert_array_equal(co.x.toarray(), brute)


def test_top_pairs_and_stats():
    co = build_colikes(hand_ratings())
    assert top_pairs(co.x, 2) == [(0, 1, 2), (1, 2, 2)]
    st = colike_stats(hand_ratings(), 4, co)
    assert st["likes"] == 7 and st["movies_with_likes"] == 3 and st["x_nnz"] == 6 and st["x_max"] == 2
    assert st["x_density"] == pytest.approx(1.0)


def test_no_likes_is_a_clear_error():
    with pytest.raises(ValueError, match="lower --like-threshold"):
        build_colikes(hand_ratings(), threshold=5.5)


def test_real_data_counts(real_data):
    from embedlab.movies.movielens import load_ratings

    co = build_colikes(load_ratings(real_data / "ml-latest-small"), 4.0)
    assert co.likes.nnz == 48580 and co.x.shape == (6298, 6298) and co.x.nnz == 6000360
