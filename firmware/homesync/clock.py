"""Tick arithmetic, schedules and epoch handling.

All firmware code reads time through a HAL that offers ``ticks_ms()``, ``ticks_diff(a, b)`` and
``ticks_add(t, d)`` with MicroPython semantics: ticks wrap around (every 2**30 ms, about 12.4 days,
on the ESP32) and only differences computed with ``ticks_diff`` are meaningful.  The classes here
give CPython the same semantics and give tests a clock they can move by hand, including across
the wrap.
"""

ESP32_TICKS_PERIOD = 1 << 30
UNIX_2000 = 946684800  # seconds from 1970-01-01 to 2000-01-01 (the ESP32 port's epoch)
# Wall-clock readings before this moment (2020-01-01) mean "never synchronised".
MIN_VALID_UNIX = 1577836800


def wrap_diff(a, b, period):
    """Signed difference ``a - b`` of two wrapping tick values (MicroPython ``ticks_diff``)."""
    half = period >> 1
    return ((a - b + half) % period) - half


def epoch_offset(gmtime):
    """Seconds to add to ``time.time()`` to get Unix time (the ESP32 port counts from 2000)."""
    return UNIX_2000 if gmtime(0)[0] == 2000 else 0


class ManualClock:
    """A tick clock for tests: time moves only when ``advance`` is called."""

    def __init__(self, start=0, period=ESP32_TICKS_PERIOD):
        self.period = period
        self._now = start % period

    def ticks_ms(self):
        return self._now

    def ticks_diff(self, a, b):
        return wrap_diff(a, b, self.period)

    def ticks_add(self, t, delta):
        return (t + delta) % self.period

    def advance(self, ms):
        self._now = (self._now + ms) % self.period


class WrappingClock:
    """Real time from a monotonic millisecond source, wrapped like the ESP32.

    ``offset`` shifts the starting point so a host run can cross the wrap within seconds.
    """

    def __init__(self, source_ms, period=ESP32_TICKS_PERIOD, offset=0):
        self.period = period
        self._source = source_ms
        self._base = source_ms()
        self._offset = offset % period

    def ticks_ms(self):
        return (self._source() - self._base + self._offset) % self.period

    def ticks_diff(self, a, b):
        return wrap_diff(a, b, self.period)

    def ticks_add(self, t, delta):
        return (t + delta) % self.period


class Every:
    """A fixed-rate schedule on a wrapping tick clock.

    ``due()`` is True once per interval.  Deadlines advance by whole intervals so the rate does
    not drift; after a long stall the schedule restarts from now instead of firing a burst.
    """

    def __init__(self, clock, interval_ms, fire_first=True):
        self._clock = clock
        self.interval_ms = max(1, int(interval_ms))
        now = clock.ticks_ms()
        self._next = now if fire_first else clock.ticks_add(now, self.interval_ms)

    def due(self):
        clock = self._clock
        now = clock.ticks_ms()
        late = clock.ticks_diff(now, self._next)
        if late < 0:
            return False
        if late >= self.interval_ms:
            self._next = clock.ticks_add(now, self.interval_ms)
        else:
            self._next = clock.ticks_add(self._next, self.interval_ms)
        return True

    def set_interval(self, interval_ms):
        """Change the period; the next event comes one new interval from now."""
        self.interval_ms = max(1, int(interval_ms))
        self._next = self._clock.ticks_add(self._clock.ticks_ms(), self.interval_ms)


class Uptime:
    """Milliseconds since boot, accumulated across tick wraps.

    ``ticks_diff`` can only span half a period (6.2 days on the ESP32), so uptime is summed from
    small steps; ``update`` must run at least once per few days (the measurement loop calls it
    every second).
    """

    def __init__(self, clock):
        self._clock = clock
        self._last = clock.ticks_ms()
        self._total_ms = 0

    def update(self):
        now = self._clock.ticks_ms()
        step = self._clock.ticks_diff(now, self._last)
        if step > 0:
            self._total_ms += step
            self._last = now
        return self._total_ms

    def seconds(self):
        return self.update() // 1000
