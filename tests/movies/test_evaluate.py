import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedlab.movies.evaluate import (
    bucket_masks,
    build_queries,
    colike_scorers,
    recommend_all,
    recommend_all_multi,
    score_recs,
    split_users,
)

RAW, NORMALISED = "co-likes raw X_ij", "co-likes X_ij/sqrt(n_i n_j)"


def evaluate_scorer(scorer, queries, k, eligible, like_counts, genres, chunk=512):
    """Every metric of ``score_recs`` over all queries (the held-out table's row of one scorer)."""
    return score_recs(recommend_all(scorer, queries, k, eligible, chunk), queries, like_counts, genres)


def raw_scorer(likes, counts):
    scorers = colike_scorers(sp.csr_matrix(likes), counts)
    return lambda q: scorers(q)[RAW]


def test_split_is_seeded_and_disjoint():
    ids = np.arange(100)
    tr, te = split_users(ids, 0.2, seed=3)
    tr2, te2 = split_users(ids, 0.2, seed=3)
    assert set(tr) | set(te) == set(ids) and not set(tr) & set(te)
    assert list(te) == list(te2) and 8 < len(te) < 35
    with pytest.raises(ValueError):
        split_users(ids, 1.5, 0)


def test_hit_metrics_match_bruteforce():
    rng = np.random.default_rng(0)
    m, k = 12, 3
    # weighted "likes" make X continuous, so the top-k has no ties and the brute force is unambiguous
    train_likes = ((rng.random((40, m)) < 0.5) * rng.random((40, m))).astype(np.float32)
    x = train_likes.T.astype(np.float64) @ train_likes
    np.fill_diagonal(x, 0)
    test_likes = (rng.random((6, m)) < 0.35).astype(np.float32)
    test_likes[0] = 0
    test_likes[0, 4] = 1  # a user with one like asks nothing
    counts = rng.integers(1, 20, m)
    genres = torch.from_numpy(rng.random((m, 4)) < 0.4)
    eligible = torch.ones(m, dtype=torch.bool)
    eligible[2] = False
    q = build_queries(sp.csr_matrix(test_likes))
    res = evaluate_scorer(raw_scorer(train_likes, counts), q, k, eligible, counts, genres)

    hits, recalls, pops, overl = [], [], [], []
    for u in range(6):
        liked = set(np.flatnonzero(test_likes[u]))
        if len(liked) < 2:
            continue
        for item in liked:
            cand = [j for j in range(m) if j != item and eligible[j]]
            top = sorted(cand, key=lambda j: (-x[item, j], j))[:k]
            hits.append(len(set(top) & (liked - {item})))
            recalls.append(hits[-1] / min(k, len(liked) - 1))
            pops += [counts[j] for j in top]
            overl += [bool((genres[j] & genres[item]).any()) for j in top]
    assert res["queries"] == len(hits)
    assert res["hit_rate@3"] == pytest.approx(np.mean(np.array(hits) > 0))
    assert res["mean_hits@3"] == pytest.approx(np.mean(hits))
    assert res["recall@3"] == pytest.approx(np.mean(recalls)) and res["recall@3"] != pytest.approx(res["precision@3"])
    assert res["mean_popularity"] == pytest.approx(np.mean(pops), rel=1e-6)
    assert res["genre_overlap@3"] == pytest.approx(np.mean(overl))


def test_buckets_partition_the_queries_and_average_back():
    rng = np.random.default_rng(1)
    m, k = 15, 3
    train_likes = (rng.random((200, m)) < 0.3).astype(np.float32)
    test_likes = sp.csr_matrix((rng.random((20, m)) < 0.3).astype(np.float32))
    counts = np.array([2, 5, 9, 10, 50, 100, 101, 300] + [40] * (m - 8))
    genres = torch.from_numpy(rng.random((m, 3)) < 0.5)
    eligible = torch.ones(m, dtype=torch.bool)
    q = build_queries(test_likes)
    recs = recommend_all(raw_scorer(train_likes, counts), q, k, eligible)
    masks = bucket_masks(q, counts)
    assert sum(int(mk.sum()) for mk in masks.values()) == len(q.items)
    assert not (masks["< 10 likes"] & masks["10-100 likes"]).any()
    n_q = counts[q.items.numpy()]
    assert (n_q[masks["10-100 likes"].numpy()] <= 100).all() and (n_q[masks["> 100 likes"].numpy()] > 100).all()
    overall = score_recs(recs, q, counts, genres)
    parts = {name: score_recs(recs, q, counts, genres, mk) for name, mk in masks.items()}
    weighted = sum(p["hit_rate@3"] * p["queries"] for p in parts.values()) / overall["queries"]
    assert weighted == pytest.approx(overall["hit_rate@3"])


def test_membership_needs_no_dense_matrix():
    likes = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=np.float32))
    q = build_queries(likes)
    assert q.items.tolist() == [0, 2, 1, 2, 3]  # the user with one like asks nothing
    assert q.liked(torch.tensor([0, 0, 1, 2]), torch.tensor([2, 1, 3, 0])).tolist() == [True, False, True, True]


def test_both_colike_baselines_from_one_pass_equal_the_brute_force():
    rng = np.random.default_rng(3)
    m, k = 10, 3
    train_likes = ((rng.random((30, m)) < 0.5) * rng.random((30, m))).astype(np.float32)  # no ties
    x = train_likes.T.astype(np.float64) @ train_likes
    np.fill_diagonal(x, 0)
    counts = rng.integers(1, 20, m)
    q = build_queries(sp.csr_matrix((rng.random((8, m)) < 0.4).astype(np.float32)))
    recs = recommend_all_multi(
        colike_scorers(sp.csr_matrix(train_likes), counts), q, k, torch.ones(m, dtype=torch.bool), chunk=3
    )
    for name, score in ((RAW, x), (NORMALISED, x / np.sqrt(np.outer(counts, counts)))):
        expected = [
            sorted((j for j in range(m) if j != i), key=lambda j: (-score[i, j], j))[:k] for i in q.items.tolist()
        ]
        assert recs[name].tolist() == expected, name


def test_query_sample_is_seeded_uniform_and_a_no_op_when_small():
    likes = sp.csr_matrix((np.random.default_rng(0).random((50, 20)) < 0.4).astype(np.float32))
    q = build_queries(likes)
    assert q.sample(len(q.items), seed=0) is q
    a, b = q.sample(30, seed=1), q.sample(30, seed=1)
    assert len(a.items) == 30 and torch.equal(a.items, b.items) and torch.equal(a.users, b.users)
    pairs = set(zip(q.users.tolist(), q.items.tolist()))
    assert set(zip(a.users.tolist(), a.items.tolist())) <= pairs and bool(a.liked(a.users, a.items).all())
    assert not torch.equal(q.sample(30, seed=2).items, a.items)
