"""Per-home message counters and a messages-per-minute rate (pure, injected clock).

The hot path only increments two integers (`received`, `rejected`); the rate is computed from
samples a slow timer takes, so nothing per message writes any state. See docs/architecture.md.
"""

from __future__ import annotations

from collections import deque
from typing import Final

# The rate is the count over (at most) the last minute of samples.
RATE_WINDOW: Final = 60.0


class MessageStats:
    """Messages of one home: counters bumped per message, a rate from periodic samples."""

    __slots__ = ("_samples", "received", "rejected")

    def __init__(self) -> None:
        """Nothing received yet."""
        self.received = 0  # every message from the home's nodes (ours echoed back excluded)
        self.rejected = 0  # of which invalid: bad topic, payload, unit or value
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float) -> None:
        """Record the counter at `now` (the slow timer calls this; keeps one minute)."""
        samples = self._samples
        samples.append((now, self.received))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()

    def per_minute(self) -> float | None:
        """Messages per minute over the sampled span (≤ 1 min); None before two samples."""
        if len(self._samples) < 2:
            return None
        (first_at, first), (last_at, last) = self._samples[0], self._samples[-1]
        span = last_at - first_at
        if span <= 0:
            return None
        return max(0, last - first) * 60.0 / span
