"""Rate-limited logging: visible, never a flood (homesync/ratelimit.py, pure, fake clock)."""

from __future__ import annotations

import logging

import pytest

from custom_components.heartbeat_iot.homesync.ratelimit import DEFAULT_INTERVAL, RateLimitedLogger

from .fakes import FakeClock

LOGGER = "tests.ratelimit"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def warn(clock: FakeClock) -> RateLimitedLogger:
    return RateLimitedLogger(logging.getLogger(LOGGER), clock=clock)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER
    ]


def test_one_line_per_key_per_interval_then_the_count(
    warn: RateLimitedLogger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    assert warn.warning("bad_json", "Ignoring %s", "a")
    for _ in range(3):
        clock.advance(1)
        assert not warn.warning("bad_json", "Ignoring %s", "b")
    assert warnings(caplog) == ["Ignoring a"]
    # The suppressed ones are still there at debug level.
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "Ignoring b"
    ] * 3

    clock.advance(DEFAULT_INTERVAL)
    assert warn.warning("bad_json", "Ignoring %s", "c")
    assert warnings(caplog)[-1] == "Ignoring c (3 similar messages suppressed)"
    clock.advance(DEFAULT_INTERVAL)
    assert warn.warning("bad_json", "Ignoring %s", "d")
    assert warnings(caplog)[-1] == "Ignoring d"  # the count was reported once


def test_keys_do_not_hide_each_other(
    warn: RateLimitedLogger, caplog: pytest.LogCaptureFixture
) -> None:
    assert warn.warning("bad_json", "json")
    assert warn.warning("bad_topic", "topic")
    assert not warn.warning("bad_json", "json again")
    assert warnings(caplog) == ["json", "topic"]


def test_custom_interval(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    warn = RateLimitedLogger(logging.getLogger(LOGGER), interval=5, clock=clock)
    assert warn.warning("k", "one")
    clock.advance(4.9)
    assert not warn.warning("k", "two")
    clock.advance(0.1)
    assert warn.warning("k", "three")
    assert warnings(caplog) == ["one", "three (1 similar messages suppressed)"]
