"""Fixtures of the Home Assistant harness benchmarks (bench_hub.py).

The integration tests' fixtures, plus one override: the harness turns asyncio debug mode on for
every test, which captures a stack trace per scheduled timer and makes timer-heavy code (HA's
own MQTT sensor with ``expire_after``) 1.6-2.5x slower (perf-anchors gotcha 3).

Only ``pytest benchmarks/bench_hub.py`` collects this directory: ``testpaths`` is ``tests`` and
``bench_*.py`` does not match pytest's default ``test_*.py`` pattern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
import logging

import pytest

from tests.conftest import (  # noqa: F401 - fixtures are used by name
    auto_enable_custom_integrations,
    expected_lingering_timers,
)


@pytest.fixture(autouse=True)
def enable_event_loop_debug(event_loop: asyncio.AbstractEventLoop) -> None:
    """Replace the harness fixture of the same name: benchmark with debug mode off."""
    event_loop.set_debug(False)


@pytest.fixture(autouse=True)
def quiet_loggers() -> Generator[None]:
    """The harness logs at INFO; discovering 1,000 nodes would print ~12,000 lines.

    Set on the package loggers, not the root: pytest restores the root logger's level after
    each test phase, so a fixture cannot change it for the test body.
    """
    loggers = [logging.getLogger(name) for name in ("homeassistant", "custom_components")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
