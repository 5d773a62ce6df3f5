import numpy as np
import pytest
import scipy.sparse as sp
import torch

from embedlab.movies.evaluate import build_queries, colike_scorer, evaluate_scorer, split_users


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
    x = rng.random((m, m)).astype(np.float32)  # continuous: no ties, so the top-k is unique
    x = np.triu(x, 1) + np.triu(x, 1).T
    test_likes = (rng.random((6, m)) < 0.35).astype(np.float32)
    test_likes[0] = 0
    test_likes[0, 4] = 1  # a user with one like asks nothing
    counts = rng.integers(1, 20, m)
    genres = torch.from_numpy(rng.random((m, 4)) < 0.4)
    eligible = torch.ones(m, dtype=torch.bool)
    eligible[2] = False
    q = build_queries(sp.csr_matrix(test_likes))
    res = evaluate_scorer(colike_scorer(sp.csr_matrix(x)), q, k, eligible, counts, genres)

    hits, pops, overl, n = [], [], [], 0
    for u in range(6):
        liked = set(np.flatnonzero(test_likes[u]))
        if len(liked) < 2:
            continue
        for item in liked:
            cand = [j for j in range(m) if j != item and eligible[j]]
            top = sorted(cand, key=lambda j: (-x[item, j], j))[:k]
            hits.append(len(set(top) & (liked - {item})))
            pops += [counts[j] for j in top]
            overl += [bool((genres[j] & genres[item]).any()) for j in top]
    assert res["queries"] == len(hits)
    assert res["hit_rate@3"] == pytest.approx(np.mean(np.array(hits) > 0))
    assert res["mean_hits@3"] == pytest.approx(np.mean(hits))
    assert res["mean_popularity"] == pytest.approx(np.mean(pops), rel=1e-6)
    assert res["genre_overlap@3"] == pytest.approx(np.mean(overl))
