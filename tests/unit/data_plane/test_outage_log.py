"""How a watch logs an outage (data_plane.watch_stream.OutageLog): once, not once per failed try; a worse
kind of failure at once; a reminder that counts the tries; one line at its end."""

from __future__ import annotations

import logging

import pytest

from data_plane.watch_stream import OutageLog

LOGGER = "aether.data_plane.watch_stream"


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_an_outage_says_its_first_failure_a_worse_one_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    outage = OutageLog("registry", "cp:1", remind_every_s=3600)
    for _ in range(3):
        outage.failed(logging.WARNING, "refused")
    outage.failed(logging.ERROR, "too large")  # a refused size after refused connections: said at once
    outage.failed(logging.ERROR, "too large")
    outage.failed(logging.WARNING, "refused")
    outage.delivered()
    outage.delivered()  # a second delivery ends no outage
    assert said(caplog) == [
        (logging.WARNING, "refused"),
        (logging.DEBUG, "refused"),
        (logging.DEBUG, "refused"),
        (logging.ERROR, "too large"),
        (logging.DEBUG, "too large"),
        (logging.DEBUG, "refused"),
        (logging.INFO, "registry watch on cp:1 delivers again, after 6 failed tries over 0 s"),
    ]


def test_a_long_outage_is_reminded_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    outage = OutageLog("plans", "cp:1", remind_every_s=0)  # every try is due a reminder
    outage.failed(logging.WARNING, "refused %s", "x")
    outage.failed(logging.WARNING, "refused %s", "x")
    assert said(caplog)[1][0] == logging.WARNING
    assert said(caplog)[1][1].startswith("refused x (2 tries in a row have failed, over ")
