import numpy as np
import pytest

from embedlab.movies import synthetic
from embedlab.movies.synthetic import SyntheticSizeError, check_fits, fit_shape_parameters, generate, shape_of


def test_shapes_by_name_and_multiple():
    assert shape_of("ml-32m") == (200_948, 87_585, 32_000_204)
    u, m, r = shape_of("8x")
    assert (u, r) == (610 * 8, 100_836 * 8) and m == round(9_742 * 8**0.5)
    for bad in ("ml-99m", "0x", "-3x", "big"):
        with pytest.raises(ValueError, match="unknown synthetic size"):
            shape_of(bad)


def test_a_size_that_does_not_fit_is_refused_with_its_estimate():
    with pytest.raises(SyntheticSizeError, match=r"needs about [\d.]+ GiB but 1.0 GiB"):
        check_fits("ml-32m", available=1024**3)
    assert check_fits("0.5x", available=64 * 1024**3) == shape_of("0.5x")


def test_generated_ratings_have_the_shape_and_heavy_tails():
    data = generate("0.5x", seed=1)
    r = data.ratings
    n_users, n_movies, n_ratings = shape_of("0.5x")
    assert r["userId"].nunique() == n_users and r["movieId"].max() <= n_movies
    assert 0.8 * n_ratings <= len(r) <= n_ratings  # duplicates of (user, movie) are dropped
    assert not r.duplicated(["userId", "movieId"]).any()
    assert set(np.unique(r["rating"])) <= set(synthetic.STARS)
    per_user = r.groupby("userId").size()
    assert per_user.max() > 8 * per_user.median()  # heavy-tailed activity
    per_movie = r.groupby("movieId").size()
    assert per_movie.max() > 20 * per_movie.median()  # heavy-tailed popularity
    assert list(data.movies.columns) == ["movieId", "title", "genres"]
    assert generate("0.5x", seed=1).ratings.equals(r)


def test_shipped_parameters_are_the_fit_of_ml_latest_small(real_data):
    from embedlab.movies.movielens import load_ratings

    fitted = fit_shape_parameters(load_ratings(real_data / "ml-latest-small"))
    assert fitted["user_log_sd"] == pytest.approx(synthetic.USER_LOG_SD, abs=1e-3)
    assert fitted["movie_log_sd"] == pytest.approx(synthetic.MOVIE_LOG_SD, abs=1e-3)
    np.testing.assert_allclose(fitted["star_shares"], synthetic.STAR_SHARES, atol=1e-4)
