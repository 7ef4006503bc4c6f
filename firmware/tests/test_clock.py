"""Tick arithmetic across the ESP32's 2**30 wrap, schedules and uptime (both runtimes)."""

from homesync.clock import (
    ESP32_TICKS_PERIOD,
    UNIX_2000,
    Every,
    ManualClock,
    Uptime,
    epoch_offset,
    wrap_diff,
)


def test_wrap_diff_signed_across_wrap():
    p = ESP32_TICKS_PERIOD
    assert wrap_diff(5, p - 5, p) == 10
    assert wrap_diff(p - 5, 5, p) == -10
    assert wrap_diff(100, 40, p) == 60


def test_manual_clock_wraps_like_esp32():
    clock = ManualClock(start=ESP32_TICKS_PERIOD - 10)
    t0 = clock.ticks_ms()
    clock.advance(25)
    assert clock.ticks_ms() == 15
    assert clock.ticks_diff(clock.ticks_ms(), t0) == 25
    assert clock.ticks_add(t0, 25) == 15


def test_every_fires_once_per_interval_across_wrap():
    clock = ManualClock(start=ESP32_TICKS_PERIOD - 1500)
    sched = Every(clock, 1000)
    fired = 0
    for _ in range(50):  # 5 s in 100 ms steps, crossing the wrap
        if sched.due():
            fired += 1
        clock.advance(100)
    assert fired == 5


def test_every_restarts_after_long_stall():
    clock = ManualClock()
    sched = Every(clock, 1000, fire_first=False)
    assert not sched.due()
    clock.advance(10500)
    assert sched.due()
    assert not sched.due()  # no burst of missed events
    clock.advance(1000)
    assert sched.due()


def test_every_set_interval():
    clock = ManualClock()
    sched = Every(clock, 1000)
    assert sched.due()
    sched.set_interval(5000)
    clock.advance(4000)
    assert not sched.due()
    clock.advance(1000)
    assert sched.due()


def test_uptime_accumulates_beyond_half_period():
    clock = ManualClock(start=123)
    up = Uptime(clock)
    step = 3600 * 1000
    for _ in range(24 * 20):  # 20 days in 1 h steps: longer than the 12.4-day tick period
        clock.advance(step)
        up.update()
    assert up.seconds() == 20 * 24 * 3600


def test_epoch_offset_handles_2000_epoch():
    assert epoch_offset(lambda t: (2000, 1, 1, 0, 0, 0, 5, 1)) == UNIX_2000
    assert epoch_offset(lambda t: (1970, 1, 1, 0, 0, 0, 3, 1)) == 0
