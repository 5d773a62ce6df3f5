"""Progress where there is no terminal: a log line at least every ``every`` seconds, and nothing from ranks > 0."""

from __future__ import annotations

import logging
import re

import pytest

from embedlab import logs
from embedlab.logs import Progress


def test_without_a_terminal_progress_is_a_log_line_per_interval(caplog, monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 45.0, 62.0])  # start, then one reading per update
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    # pytest's output is no TTY
    with caplog.at_level(logging.INFO, logger="embedlab"), Progress(400, "epoch 1/2", "img") as bar:
        bar.set_postfix(loss="0.512")
        for _ in range(4):
            bar.update(100)
    # 31 s and 62 s are 30 s after the last line; 10 s and 45 s are not
    pattern = r"\s*epoch 1/2: (\d+)/400 img \((\d+) %\), ([\d.]+) img/s, about ([\d.]+) min left; loss 0.512"
    lines = [re.fullmatch(pattern, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2 and all(lines), [r.getMessage() for r in caplog.records]
    for m, (done, at) in zip(lines, [(200, 31.0), (400, 62.0)]):
        n, pct, rate, left = int(m[1]), int(m[2]), float(m[3]), float(m[4])
        assert (n, pct) == (done, 100 * done // 400)
        assert rate == pytest.approx(done / at, abs=0.01)
        assert left == pytest.approx((400 - done) / (done / at) / 60, abs=0.05)


def test_a_disabled_bar_says_nothing(caplog, monkeypatch):
    clock = iter([0.0, 100.0, 200.0])
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="embedlab"), Progress(10, "sweep", enabled=False) as bar:
        bar.update(5)
        bar.update(5)
    assert caplog.records == []
