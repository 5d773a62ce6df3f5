"""Text from data or config as report.md and the terminal show it: the one escaping path into Markdown (and so into
report.html), titles without bidirectional controls, and the one writer of Markdown tables with one format per
quantity (accuracies as percentages, counts with thousands separators, p-values in one notation, a missing value as
"—")."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

#: The invisible controls of bidirectional text (U+202E, RIGHT-TO-LEFT OVERRIDE, shows "abc" as "cba", and the text
#: after it too): a title from data that holds them is shown without them wherever embedlab shows titles.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_NO_BIDI = str.maketrans(dict.fromkeys(BIDI_CONTROLS))


def without_bidi(value: object) -> str:
    """``value`` as text with its bidi controls removed, so it reads in the order it is stored."""
    return str(value).translate(_NO_BIDI)


#: Characters that Markdown would read as table syntax, emphasis, code, links or markup; ``<``, ``>`` and ``&`` become
#: entities, so no text from data can open a tag, a comment or a script in report.html; bidi controls are dropped.
_MD_ESCAPES = str.maketrans(
    {
        **{c: "\\" + c for c in "\\`*_[]|#"},
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "\n": " ",
        "\r": " ",
        **dict.fromkeys(BIDI_CONTROLS),
    }
)


def md_text(value: object) -> str:
    """The one way text from data or config (a title, a path, an error message) enters report.md, and so report.html:
    Markdown shows it literally and Python-Markdown passes it through as text, never as markup."""
    return str(value).translate(_MD_ESCAPES)


def md_code(value: object) -> str:
    """A setting's value in code style; one with a backtick, which would end the code span, as escaped plain text."""
    text = without_bidi(value)
    return md_text(text) if "`" in text or "\n" in text else f"`{text}`"


def column_label(name: object) -> str:
    """A table column's header as a reader sees it: ``test_accuracy`` is "test accuracy" (the CSV keeps the name)."""
    return str(name).replace("_", " ")


def column_format(values: pd.Series, digits: int = 4) -> str:
    """One number format per column, so its numbers line up: fixed decimals (``digits`` significant for the smallest
    value, at most ``digits`` + 2 for the largest, and no more than the values hold: seconds rounded to 0.01 read
    "1.84", not "1.84000"), none for whole numbers, and ``g`` only for a column whose values span more than three
    orders of magnitude."""
    if not pd.api.types.is_float_dtype(values):
        return f".{digits}g"
    v = np.abs(values.to_numpy(dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return ".0f"
    hi, lo = float(v.max()), float(v.min())
    if hi >= 1e6 or hi / lo > 1e3:
        return f".{digits}g"
    if np.all(v == np.round(v)):
        return ".0f"
    held = next((k for k in range(6) if np.allclose(np.round(v, k), v, rtol=1e-12, atol=0)), 6)
    decimals = min(digits - 1 - math.floor(math.log10(lo)), digits + 1 - math.floor(math.log10(hi)), held)
    return f".{max(0, decimals)}f"


#: Columns that hold an accuracy (a fraction in the CSV): the Markdown copy shows them as percentages, as the text does.
ACCURACY_COLUMN = re.compile(r"(^|_)acc(uracy)?($|_)|^(fixed_features|fine_tuned)$")


def is_accuracy(name: object, values: pd.Series) -> bool:
    """Whether a column is an accuracy shown as a percentage: named so, and every value a fraction in [0, 1]."""
    if not ACCURACY_COLUMN.search(str(name)) or not pd.api.types.is_float_dtype(values):
        return False
    v = values.dropna()
    return bool(((v >= 0) & (v <= 1)).all())


def is_count(name: object, values: pd.Series, fmt: str) -> bool:
    """Whether a column holds counts (whole numbers shown without decimals) rather than labels such as years or ids."""
    if NOT_A_COUNT.search(str(name)) or pd.api.types.is_bool_dtype(values):
        return False
    return pd.api.types.is_integer_dtype(values) or (pd.api.types.is_float_dtype(values) and fmt == ".0f")


def percent(value: float) -> str:
    """An accuracy as the report writes it everywhere: "87.15 %"."""
    return f"{100 * value:.2f} %"


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def p_value(p: float) -> str:
    """A p-value as the report writes it everywhere: two significant digits, "0.032", or below 0.001 "2.1 × 10⁻¹²⁹"."""
    if not p > 0:
        return "0" if p == 0 else "—"
    if p >= 1e-3:
        return f"{p:.2g}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


#: Columns that hold a p-value.
P_VALUE_COLUMN = re.compile(r"(^|_)p(_value)?$")

#: Whole-number columns that are labels, not counts: no thousands separator (a year reads 1995, a test image 9802).
NOT_A_COUNT = re.compile(r"year|(^|_)(ids?|index)$|Id$|seed", re.IGNORECASE)


def count(value: float) -> str:
    """A count as the report writes it everywhere: with thousands separators, "44,992"."""
    return f"{value:,.0f}"


#: A difference of two accuracies (a fraction in the CSV): shown in percentage points.
POINTS_COLUMN = re.compile(r"^(accuracy_)?gain$")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """The one writer of Markdown tables: text cells and headers escaped, headers as words (``column_label``), each
    numeric column in one format (``column_format``, ``floatfmt``'s significant digits for its largest value)."""
    out = df.copy()
    digits = int(floatfmt.strip(".g"))
    formats = [column_format(out[col], digits) for col in out.columns]
    right = [  # numbers right-aligned, words (and yes/no) left
        pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]) for col in out.columns
    ]
    for col, fmt in zip(out.columns, formats):
        if is_accuracy(col, out[col]):
            out[col] = out[col].map(lambda v: None if pd.isna(v) else percent(v))
        elif POINTS_COLUMN.search(str(col)) and pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: None if pd.isna(v) else f"{100 * v:+.2f} points")
        elif P_VALUE_COLUMN.search(str(col)) and pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: None if pd.isna(v) else p_value(v))
        elif is_count(col, out[col], fmt):
            out[col] = out[col].map(lambda v: None if pd.isna(v) else count(v))
        elif pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            spec = "d" if pd.api.types.is_integer_dtype(out[col]) else fmt
            out[col] = out[col].map(lambda v, spec=spec: None if pd.isna(v) else format(v, spec))
        else:
            out[col] = out[col].map(
                lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else md_text(v)
            )
        # a value that is not there (a diverged run's gap, the optimum's learning rate) reads "—", not "nan"
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    out.columns = [md_text(column_label(c)) for c in out.columns]
    align = ["right" if r else "left" for r in right]
    # every cell is already text: a title that looks like a number ("1492") is not reformatted as one
    return out.to_markdown(index=False, missingval="—", colalign=align, disable_numparse=True)
