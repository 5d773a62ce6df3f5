"""Progress where there is no terminal: a log line at least every ``every`` seconds, and nothing from ranks > 0."""

from __future__ import annotations

import logging

from embedlab import logs
from embedlab.logs import Progress


def test_without_a_terminal_progress_is_a_log_line_per_interval(caplog, monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 45.0, 62.0])  # start, then one reading per update
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="embedlab"), Progress(400, "epoch 1/2", "img") as bar:  # pytest's output is no TTY
        bar.set_postfix(loss="0.512")
        for _ in range(4):
            bar.update(100)
    lines = [r.getMessage() for r in caplog.records]
    # 31 s and 62 s are 30 s after the last line; 10 s and 45 s are not
    assert lines == ["  epoch 1/2: 200/400 img (50 %), 6.45 img/s, about 0.5 min left; loss 0.512",
                     "  epoch 1/2: 400/400 img (100 %), 6.45 img/s, about 0.0 min left; loss 0.512"]


def test_a_disabled_bar_says_nothing(caplog, monkeypatch):
    clock = iter([0.0, 100.0, 200.0])
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="embedlab"), Progress(10, "sweep", enabled=False) as bar:
        bar.update(5)
        bar.update(5)
    assert caplog.records == []
