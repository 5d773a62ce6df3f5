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
