import numpy as np
import pandas as pd
import pytest

from embedlab.movies.cooccurrence import build_colikes, colike_fro_sq, colike_stats, colike_summary, cooccurrence
from embedlab.movies.gram import gram_rows


def hand_ratings() -> pd.DataFrame:
    # users 1..3, movies 10, 20, 30, 40 (40 is never liked at >= 4)
    return pd.DataFrame(
        [
            (1, 10, 5.0),
            (1, 20, 4.0),
            (1, 30, 3.5),
            (2, 10, 4.5),
            (2, 20, 4.0),
            (2, 30, 4.0),
            (3, 20, 4.0),
            (3, 30, 5.0),
            (3, 40, 2.0),
        ],
        columns=["userId", "movieId", "rating"],
    )


def test_x_counts_users_who_liked_both_with_zero_diagonal():
    co = build_colikes(hand_ratings(), threshold=4.0)
    assert list(co.movie_ids) == [10, 20, 30]
    expected = np.array([[0, 2, 1], [2, 0, 2], [1, 2, 0]])
    np.testing.assert_array_equal(cooccurrence(co.likes).toarray(), expected)
    assert list(co.like_counts) == [2, 3, 2]
    assert co.index_of(40) is None and co.index_of(20) == 1


def test_threshold_35_adds_the_half_star_like():
    co = build_colikes(hand_ratings(), threshold=3.5)
    assert cooccurrence(co.likes).toarray()[0, 2] == 2  # user 1's 3.5 for movie 30 now counts


def test_duplicate_ratings_count_once():
    r = pd.concat([hand_ratings(), hand_ratings().iloc[:1]])
    np.testing.assert_array_equal(
        cooccurrence(build_colikes(r).likes).toarray(), cooccurrence(build_colikes(hand_ratings()).likes).toarray()
    )


def test_matches_bruteforce_on_random_table():
    rng = np.random.default_rng(0)
    r = pd.DataFrame(
        {
            "userId": rng.integers(0, 30, 400),
            "movieId": rng.integers(0, 25, 400),
            "rating": rng.choice([1.0, 3.0, 4.0, 5.0], 400),
        }
    )
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
    np.testing.assert_array_equal(cooccurrence(co.likes).toarray(), brute)


def test_top_pairs_and_stats():
    co = build_colikes(hand_ratings())
    assert colike_summary(co.likes, 2).top_pairs == [(0, 1, 2), (1, 2, 2)]
    st = colike_stats(hand_ratings(), 4, co, colike_summary(co.likes))
    assert st["likes"] == 7 and st["movies_with_likes"] == 3 and st["x_nnz"] == 6 and st["x_max"] == 2
    assert st["x_density"] == pytest.approx(1.0)


def test_no_likes_is_a_clear_error():
    with pytest.raises(ValueError, match="lower --like-threshold"):
        build_colikes(hand_ratings(), threshold=5.5)


def test_real_data_counts(real_data):
    from embedlab.movies.movielens import load_ratings

    co = build_colikes(load_ratings(real_data / "ml-latest-small"), 4.0)
    summary = colike_summary(co.likes)
    assert co.likes.nnz == 48580 and co.n_movies == 6298 and summary.nnz == 6000360 and summary.max == 168
    assert summary.fro_sq == colike_fro_sq(co.likes) == 63_482_944


def random_likes(seed: int, users: int = 40, movies: int = 30, density: float = 0.15):
    """Random binary L with a user who liked one movie, an empty user and movies nobody liked."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    dense = (rng.random((users, movies)) < density).astype(np.float32)
    dense[0] = 0
    dense[0, 3] = 1  # one like
    dense[1] = 0  # no like at all
    dense[:, -2:] = 0  # two movies with none
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("entries", [7, 10_000])  # tiny chunks (a few rows each) and one chunk
def test_chunked_summary_matches_the_materialised_matrix(seed, entries):
    likes = random_likes(seed)
    x = cooccurrence(likes).toarray().astype(np.float64)
    s = colike_summary(likes, k=5, entries=entries)
    assert s.nnz == np.count_nonzero(x) and s.max == x.max() and s.fro_sq == pytest.approx((x**2).sum(), rel=1e-12)
    assert colike_fro_sq(likes) == pytest.approx((x**2).sum(), rel=1e-12)
    iu = np.triu_indices_from(x, 1)
    expected = sorted(zip(x[iu], iu[0], iu[1]), key=lambda t: (-t[0], t[1], t[2]))[:5]
    assert s.top_pairs == [(int(i), int(j), int(c)) for c, i, j in expected]
    rows = np.array([3, 0, 29])
    np.testing.assert_array_equal(gram_rows(likes.T.tocsr(), likes, rows), x[rows])


def test_fro_sq_uses_either_side_of_the_gram_matrix():
    # wide (few users) and tall (few movies) both agree with the brute force
    for users, movies in ((5, 60), (80, 6)):
        likes = random_likes(3, users, movies, 0.4)
        x = cooccurrence(likes).toarray().astype(np.float64)
        assert colike_fro_sq(likes) == pytest.approx((x**2).sum(), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 4, 30, 10_000])  # k beyond the number of pairs returns them all
def test_top_pairs_from_popular_rows_equal_the_brute_force(seed, k):
    from embedlab.movies.cooccurrence import top_colike_pairs

    likes = random_likes(seed, users=25, movies=20, density=0.3)  # small counts: many ties
    x = cooccurrence(likes).toarray()
    iu = np.triu_indices_from(x, 1)
    expected = [
        (int(i), int(j), int(c))
        for c, i, j in sorted(zip(x[iu], iu[0], iu[1]), key=lambda t: (-t[0], t[1], t[2]))
        if c > 0
    ][:k]
    assert top_colike_pairs(likes, k, entries=41) == expected  # two rows per chunk


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("entries", [7, 10_000])
def test_one_pass_gives_a_part_of_the_users_too(seed, entries):
    """``part``: ||X||_F^2 of some users' likes alone, from the same pass, equals the materialised matrix of those
    users;
    the whole matrix's figures are unchanged by asking for it."""
    likes = random_likes(seed)
    part = np.random.default_rng(seed + 10).random(likes.shape[0]) < 0.8
    x_part = cooccurrence(likes[part]).toarray().astype(np.float64)
    s, whole = colike_summary(likes, k=5, entries=entries, part=part), colike_summary(likes, k=5, entries=entries)
    assert s.part_fro_sq == (x_part**2).sum() == colike_fro_sq(likes[part])
    assert (s.nnz, s.max, s.fro_sq, s.top_pairs) == (
        whole.nnz,
        whole.max,
        whole.fro_sq,
        whole.top_pairs,
    ) and whole.part_fro_sq is None
