"""Rate-limited logging: bad input must be visible but must never flood the log."""

from __future__ import annotations

import logging
import time

from .clock import Clock

DEFAULT_INTERVAL = 60.0


class RateLimitedLogger:
    """Log a warning at most once per key per interval, counting what was suppressed.

    Keys are the kind of problem (e.g. "bad_json"), so one broken node cannot hide another
    kind of problem, while a node spamming the same error costs one line per interval.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Clock = time.monotonic,
    ) -> None:
        """Wrap a logger."""
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log unless this key logged within the interval; return whether it logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._logger.debug(msg, *args)
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.warning(msg, *args)
        return True
