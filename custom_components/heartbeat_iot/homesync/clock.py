"""The one clock type of the library: wall-clock UNIX seconds, injected everywhere.

Home Assistant passes ``models.now`` (``dt_util.utcnow().timestamp()``, which the tests'
``freezer`` moves); the library's own tests pass a fake clock. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable

type Clock = Callable[[], float]
"""Seconds; wall-clock UNIX time for the tracker and commands, monotonic for rate limits."""
