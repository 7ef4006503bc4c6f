"""The per-minute message rate behind the home's 'messages per minute' sensor."""

from __future__ import annotations

from hypothesis import given, strategies as st

from custom_components.heartbeat_iot.homesync.stats import MessageStats


def test_rate_over_the_last_minute() -> None:
    stats = MessageStats()
    assert stats.per_minute() is None
    stats.sample(0.0)
    assert stats.per_minute() is None  # one sample says nothing
    for t in range(10, 121, 10):
        stats.received += 50  # 5 messages per second
        stats.sample(float(t))
    assert stats.per_minute() == 300.0
    # Traffic stops: within a minute the rate says so.
    for t in range(130, 191, 10):
        stats.sample(float(t))
    assert stats.per_minute() == 0.0


def test_rate_before_a_full_minute_uses_the_span_so_far() -> None:
    stats = MessageStats()
    stats.sample(0.0)
    stats.received += 20
    stats.sample(10.0)
    assert stats.per_minute() == 120.0


@given(st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 10_000)), max_size=50))
def test_rate_is_never_negative_nor_unbounded_in_memory(steps: list[tuple[float, int]]) -> None:
    stats = MessageStats()
    now = 0.0
    for dt, count in steps:
        now += dt
        stats.received += count
        stats.sample(now)
        rate = stats.per_minute()
        assert rate is None or rate >= 0
    assert len(stats._samples) <= max(2, len(steps))
