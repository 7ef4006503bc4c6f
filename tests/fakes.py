"""The one fake clock of the tests (a homesync.clock.Clock the test moves by hand)."""

from __future__ import annotations

EPOCH = 1_738_852_200.0  # 2025-02-06T14:30:00Z


class FakeClock:
    """Seconds under the test's control: call it for the time, `advance` it to move on."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
