import numpy as np
import pytest
import torch

from embedlab.movies.recommend import eligible_items, jaccard, rank_correlation, similar_items, similarity, top_k


def test_top_k_matches_bruteforce_and_respects_filters():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 5, generator=g)
    counts = np.arange(40)
    elig = eligible_items(counts, 5)
    for item in (0, 7, 39):
        idx, scores = similar_items(v, item, k=6, eligible=elig)
        vn = v / v.norm(dim=1, keepdim=True)
        brute = sorted((j for j in range(40) if j != item and counts[j] >= 5), key=lambda j: -float(vn[item] @ vn[j]))[
            :6
        ]
        assert list(idx) == brute
        assert np.all(np.diff(scores) <= 1e-7)


def test_cosine_is_rotation_invariant_dot_is_popularity_biased():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(30, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    a, _ = similar_items(v, 3, 10)
    b, _ = similar_items(v @ q, 3, 10)
    assert list(a) == list(b)
    big = v.clone()
    u = v[3] / v[3].norm()
    w = torch.randn(4, generator=g)
    w = w - (w @ u) * u
    big[5] = 100 * (0.2 * u + w / w.norm())  # a very "popular" long vector at a wide angle to the query
    assert similar_items(big, 3, 1, metric="dot")[0].tolist() == [5]  # dot rewards its length
    assert similar_items(big, 3, 1, metric="cosine")[0].tolist() != [5]  # cosine sees the angle
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity(v, torch.tensor([0]), "euclid")


def test_padding_when_too_few_candidates():
    v = torch.eye(3)
    idx, vals = top_k(similarity(v, torch.tensor([0])), torch.tensor([0]), k=5)
    assert idx.tolist()[0][2:] == [-1, -1, -1]
    assert len(similar_items(v, 0, 5)[0]) == 2


def test_overlap_measures():
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert jaccard([], []) == 1.0
    a = np.array([0.9, 0.8, 0.1, 0.5])
    assert rank_correlation(a, a * 2, [0, 1, 3]) == pytest.approx(1.0)
    assert rank_correlation(a, -a, [0, 1, 3]) == pytest.approx(-1.0)
