"""The report's first screen: titles from the data are escaped once, and each row links to its section."""

from markupsafe import Markup

from embedlab.report.common import environment
from embedlab.report.glance import glance_rows
from embedlab.results import Recommendations, RunResults


def test_a_title_in_the_first_screen_is_escaped_once():
    recs = Recommendations(
        metric="cosine",
        min_likes=10,
        eligible_movies=2,
        query_titles={"a": "Tom & Jerry (1992)"},
        top={"Tom & Jerry (1992)": ["*batteries* not included (1987)"]},
        mean_likers={"cosine": {}, "dot": {}},
    )
    ((question, answer, link),) = glance_rows(RunResults(movies_recommend=recs))
    assert isinstance(answer, Markup) and question.startswith("2C") and link.startswith("[2C](#2c-")
    shown = environment().from_string("{{ answer }}").render(answer=answer)
    assert shown == r"Tom &amp; Jerry (1992) → \*batteries\* not included (1987) …"


def test_counts_of_runs_read_in_the_right_number():
    from embedlab.report.common import environment

    render = (
        environment()
        .from_string(
            "{{ a | runs }} converged; {{ b | runs('diverged run') }} {{ 'gives' if b == 1 else 'give' }} nothing"
        )
        .render
    )
    assert render(a=1, b=1) == "1 run converged; 1 diverged run gives nothing"
    assert render(a=3, b=0) == "3 runs converged; 0 diverged runs give nothing"


def test_the_map_says_how_it_colours_the_movies():
    from importlib import resources

    page = resources.files("embedlab.report").joinpath("explorer.html").read_text()
    assert "rarest listed genre" in page
    template = resources.files("embedlab.report").joinpath("templates/movies.md.j2").read_text()
    assert "coloured by its rarest genre among those it lists" in template
