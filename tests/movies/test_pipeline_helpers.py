import pandas as pd

from embedlab.movies.pipeline import genre_matrix, most_specific_genre, slug


def test_most_specific_genre_is_the_rarest_of_each_movies_genres():
    genres = pd.Series(["Adventure|Animation|Children", "Adventure|Drama", "Adventure", "Adventure|Comedy", "Drama|Horror"])
    # Adventure 4, Drama 2, the rest 1: ties go to the alphabetically first
    assert list(most_specific_genre(genres)) == ["Animation", "Drama", "Adventure", "Comedy", "Horror"]


def test_genre_matrix_and_slug():
    g = genre_matrix(pd.Series(["A|B", "B", "(no genres listed)"]))
    assert g.tolist() == [[True, True], [False, True], [False, False]]
    assert slug("Apollo 13") == "apollo_13" and slug("Matrix, The (1999)") == "matrix_the_1999"
