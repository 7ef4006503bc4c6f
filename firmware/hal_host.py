"""Host HAL for the simulator and tests: a simulated smart plug on CPython or unix MicroPython.

The plug has a relay, a button, an LED, a CSE7766 energy meter fed with frames computed from a
realistic appliance load (the firmware's own frame parser decodes them), simulated Wi-Fi, a
simulated watchdog and JSON persistence in a state directory.  Faults are injected here:

=============  ==============================================================================
freeze         measurement and command loops stop; MQTT keep-alive goes on (the case LWT misses)
sensor_crash   the measurement loop raises and dies
meter_fail     the meter UART goes silent (unhealthy cycles, no heartbeat)
wifi_down      Wi-Fi lost: the socket dies without DISCONNECT, reconnect waits for Wi-Fi
flap           Wi-Fi up ``a`` s / down ``b`` s, repeating (value ``"a/b"``)
crash_command  the next command resets the node right after the relay switched (brownout),
               before the reply and the PUBACK
reboot         immediate reset (socket left half-open, as when a real node resets)
unsynced       wall clock not synchronised (reads year 2000 like a fresh ESP32)
delay          each command is answered ``value`` seconds late
=============  ==============================================================================

A reset clears freeze, sensor_crash and crash_command (the hang was in RAM); the others are
environmental and last until they expire or are cleared.
"""

import asyncio
import binascii
import math
import os
import random as _random
import sys
import time

from homesync import cse7766
from homesync.clock import UNIX_2000, WrappingClock, epoch_offset
from homesync.store import load_json, save_json

MICROPYTHON = sys.implementation.name == "micropython"
FAULTS = (
    "freeze",
    "sensor_crash",
    "meter_fail",
    "wifi_down",
    "flap",
    "crash_command",
    "reboot",
    "unsynced",
    "delay",
)
CLEARED_BY_RESET = ("freeze", "sensor_crash", "crash_command")
LOADS = ("fridge", "tv", "kettle", "lamp", "washer", "charger", "heater", "idle")


class SensorLoopCrash(Exception):
    pass


class SimulatedReset(Exception):
    pass


def monotonic_ms():
    if MICROPYTHON:
        return time.ticks_ms()
    return time.monotonic_ns() // 1000000


def _uniform(rand, low, high):
    return low + (high - low) * rand()


class PlugLoad:
    """Power drawn by an appliance behind the plug, as a function of time.

    ``scale`` compresses the appliance's cycle (0.1 = ten times faster) so a demo shows a fridge
    compressor cycle in minutes.  Returns ``(watts, power_factor)``.
    """

    def __init__(self, kind, rand, scale=1.0):
        if kind not in LOADS:
            raise ValueError("unknown load {}; choose from {}".format(kind, ", ".join(LOADS)))
        self.kind = kind
        self._rand = rand
        self.scale = scale
        self._phase = rand() * 3600

    def sample(self, t):
        kind = self.kind
        rand = self._rand
        s = self.scale
        t = t + self._phase
        if kind == "fridge":
            period = 900 * s
            pos = t % period
            if pos < 0.35 * period:
                if pos < 2:
                    return 420 + _uniform(rand, -20, 20), 0.6  # compressor inrush
                return 105 + 8 * math.sin(t / 40) + _uniform(rand, -2, 2), 0.82
            return 1.2 + _uniform(rand, -0.1, 0.1), 0.35
        if kind == "tv":
            if (t % (1800 * s)) < 0.3 * 1800 * s:
                return 0.5, 0.3  # standby
            return 80 + 25 * (0.5 + 0.5 * math.sin(t / 7)) + _uniform(rand, -3, 3), 0.93
        if kind == "kettle":
            if (t % (600 * s)) < 120 * s:
                return 2050 + _uniform(rand, -20, 20), 1.0
            return 0.0, 1.0
        if kind == "lamp":
            return 8.5 + _uniform(rand, -0.1, 0.1), 0.55
        if kind == "washer":
            pos = (t % (3600 * s)) / (3600 * s)
            if pos < 0.1:
                return 5 + _uniform(rand, -0.5, 0.5), 0.5
            if pos < 0.35:
                return 2100 + _uniform(rand, -30, 30), 0.99
            if pos < 0.8:
                return 150 + 120 * abs(math.sin(t / 3)) + _uniform(rand, -5, 5), 0.6
            if pos < 0.9:
                return 420 + _uniform(rand, -15, 15), 0.75
            return 2.0, 0.4
        if kind == "charger":
            tau = 1200 * s
            return 3 + 15 * math.exp(-(t % (4 * tau)) / tau) + _uniform(rand, -0.2, 0.2), 0.55
        if kind == "heater":
            if (t % (300 * s)) < 150 * s:
                return 1500 + _uniform(rand, -10, 10), 1.0
            return 0.0, 1.0
        return 0.0, 1.0


class SimMeter:
    """Electrical state of the plug and the CSE7766 UART byte stream describing it."""

    FRAME_MS = 50

    def __init__(self, load, clock, rand):
        self.load = load
        self._clock = clock
        self._rand = rand
        self._t0 = clock.ticks_ms()
        self._last = self._t0
        self._cf = int(rand() * 65536)
        self._cf_frac = 0.0
        self.wh_per_pulse = 5116280 / 3.6e9
        self.temperature = 24.0
        self.frequency = 50.0
        self.silent = False
        self.corrupt_every = 25  # a garbage byte now and then exercises resynchronisation
        self._reads = 0

    def uart_read(self, relay_on):
        clock = self._clock
        now = clock.ticks_ms()
        dt_ms = clock.ticks_diff(now, self._last)
        self._last = now
        t = clock.ticks_diff(now, self._t0) / 1000
        rand = self._rand
        watts, pf = self.load.sample(t) if relay_on else (0.0, 1.0)
        if watts < 0:
            watts = 0.0
        volts = 230 + 1.5 * math.sin(t / 600) + _uniform(rand, -0.4, 0.4)
        amps = watts / (volts * pf) if watts > 0 else 0.0
        volts -= 0.25 * amps
        self.frequency = 50 + 0.02 * math.sin(t / 50) + _uniform(rand, -0.005, 0.005)
        target = 24 + watts * 0.006
        self.temperature += (target - self.temperature) * min(1.0, dt_ms / 120000)
        self._cf_frac += watts * dt_ms / 3600000 / self.wh_per_pulse
        whole = int(self._cf_frac)
        self._cf_frac -= whole
        self._cf = (self._cf + whole) & 0xFFFF
        if self.silent:
            return b""
        frames = dt_ms // self.FRAME_MS
        frames = 1 if frames < 1 else (3 if frames > 3 else frames)
        frame = cse7766.encode_frame(volts, amps, watts, self._cf)
        data = frame * frames
        self._reads += 1
        if self.corrupt_every and self._reads % self.corrupt_every == 0:
            data = bytes((0x5A, 0x13)) + data
        return data


class HostHAL:
    ota_supported = True
    # A simulated reset must escape the app's per-message containment like a real one does.
    fatal_errors = (SimulatedReset,)

    def __init__(
        self,
        node_id,
        state_dir,
        load="lamp",
        seed=None,
        clock=None,
        load_scale=1.0,
        rssi=-58,
        quiet=False,
    ):
        self.node_id = node_id
        self.state_dir = state_dir
        self.fs_root = state_dir  # the simulated flash file system (OTA slots live here)
        self.clock = clock or WrappingClock(monotonic_ms)
        rng = _random
        if seed is not None:
            rng.seed(seed)
        self._rng = rng
        self.quiet = quiet
        self._t_start = monotonic_ms()
        self._epoch = epoch_offset(time.gmtime)
        self.base_rssi = rssi
        self.meter = SimMeter(PlugLoad(load, self.random, load_scale), self.clock, self.random)
        self.cse = cse7766.Meter(self._uart_read)
        self.relay = False
        self.led = False
        self.relay_changes = 0
        self.faults = {}  # kind -> [until_ticks or None, value, started_ticks]
        self._button = 0
        self._gc_count = 0
        self._relay_for_meter = False
        self.new_boot()
        _ensure_dir(state_dir)

    # ----------------------------------------------------------------- boot / watchdog

    def new_boot(self):
        self.relay = False  # GPIOs come out of reset low: the relay drops until boot restores it
        self.led = False
        self.reset_requested = None
        self._wdt_ms = 0
        self._wdt_fed = self.clock.ticks_ms()
        for kind in CLEARED_BY_RESET:
            self.faults.pop(kind, None)

    def wdt_init(self, timeout_ms):
        self._wdt_ms = int(timeout_ms)
        self._wdt_fed = self.clock.ticks_ms()

    def wdt_feed(self):
        self._wdt_fed = self.clock.ticks_ms()

    def wdt_expired(self):
        if not self._wdt_ms:
            return False
        return self.clock.ticks_diff(self.clock.ticks_ms(), self._wdt_fed) > self._wdt_ms

    def reset(self):
        self.reset_requested = self.reset_requested or "reset"

    # ----------------------------------------------------------------- time & randomness

    def ticks_ms(self):
        return self.clock.ticks_ms()

    def ticks_diff(self, a, b):
        return self.clock.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return self.clock.ticks_add(t, delta)

    def clock_synced(self):
        return self.fault("unsynced") is None

    def now_unix(self):
        if not self.clock_synced():
            return UNIX_2000 + (monotonic_ms() - self._t_start) // 1000
        return int(time.time()) + self._epoch

    def ntp_sync(self):
        return self.clock_synced()

    def random(self):
        return self._rng.getrandbits(24) / 16777216

    def random_hex(self, nbytes):
        return binascii.hexlify(os.urandom(nbytes // 2 or 1)).decode()[:nbytes]

    # ----------------------------------------------------------------- I/O

    def relay_set(self, on):
        on = bool(on)
        if on != self.relay:
            self.relay_changes += 1
            self.log("hal: relay {}".format("on" if on else "off"))
        self.relay = on

    def led_set(self, on):
        self.led = bool(on)

    def press_button(self):
        self._button += 1

    def button_pressed(self):
        if self._button:
            self._button -= 1
            return True
        return False

    def _uart_read(self):
        return self.meter.uart_read(self._relay_for_meter)

    def read_meter(self, relay_on):
        self._relay_for_meter = relay_on
        self.meter.silent = self.fault("meter_fail") is not None
        values, energy_wh = self.cse.read()
        values["frequency"] = self.meter.frequency
        values["temperature"] = self.meter.temperature
        return values, energy_wh

    def rssi(self):
        base = self.base_rssi - (25 if self.fault("flap") is not None else 0)
        return int(base + _uniform(self.random, -4, 4))

    def wifi_connected(self):
        if self.fault("wifi_down") is not None:
            return False
        flap = self.faults.get("flap")
        if flap is not None and self.fault("flap") is not None:
            up_s, down_s = _flap_times(flap[1])
            cycle = int((up_s + down_s) * 1000)
            pos = self.clock.ticks_diff(self.clock.ticks_ms(), flap[2]) % cycle
            return pos < up_s * 1000
        return True

    def wifi_connect(self):
        return None

    def collect_garbage(self):
        if MICROPYTHON:
            self._gc_count += 1
            if self._gc_count % 10 == 0:
                import gc

                gc.collect()

    # ----------------------------------------------------------------- storage

    def _path(self, name):
        return self.state_dir + "/" + name

    def load_state(self):
        return load_json(self._path("state.json"), {})

    def save_state(self, state):
        save_json(self._path("state.json"), state)

    def load_config(self):
        return load_json(self._path("config.json"), None)

    def save_config(self, config):
        # The simulator keeps only non-secret settings on disk (no broker or Wi-Fi credentials).
        kept = {}
        for key in config:
            if key not in ("mqtt", "wifi"):
                kept[key] = config[key]
        save_json(self._path("config.json"), kept)

    # ----------------------------------------------------------------- faults

    def inject(self, kind, duration=None, value=None):
        if kind not in FAULTS:
            raise ValueError("unknown fault {}".format(kind))
        now = self.clock.ticks_ms()
        if kind == "reboot":
            self.reset_requested = "fault reboot"
            return
        until = None if duration is None else self.clock.ticks_add(now, int(duration * 1000))
        self.faults[kind] = [until, value, now]
        self.log(
            "hal: fault {} on{}".format(
                kind, "" if duration is None else " for {} s".format(duration)
            )
        )

    def clear(self, kind=None):
        if kind is None or kind == "all":
            self.faults = {}
        else:
            self.faults.pop(kind, None)
        self.log("hal: fault {} cleared".format(kind or "all"))

    def fault(self, kind):
        """The fault's value (``True`` when it has none) while active, else ``None``."""
        entry = self.faults.get(kind)
        if entry is None:
            return None
        until = entry[0]
        if until is not None and self.clock.ticks_diff(self.clock.ticks_ms(), until) >= 0:
            del self.faults[kind]
            self.log("hal: fault {} ended".format(kind))
            return None
        return True if entry[1] is None else entry[1]

    def _take(self, kind):
        if self.fault(kind) is None:
            return False
        del self.faults[kind]
        return True

    async def gate(self, point):
        while self.fault("freeze") is not None:  # noqa: ASYNC110  (the fault can expire by time)
            await asyncio.sleep(0.05)
        if point == "measure" and self._take("sensor_crash"):
            raise SensorLoopCrash("simulated sensor loop crash")
        if point == "command":
            delay = self.fault("delay")
            if delay is not None:
                await asyncio.sleep(1.0 if delay is True else float(delay))

    def checkpoint(self, point):
        if point == "command_handled" and self._take("crash_command"):
            self.reset_requested = "crash mid-command"
            raise SimulatedReset("simulated brownout right after the relay switched")

    # ----------------------------------------------------------------- logging

    def log(self, text):
        if self.quiet:
            return
        elapsed = (monotonic_ms() - self._t_start) / 1000
        print("{:9.3f} [{}] {}".format(elapsed, self.node_id, text))
        flush = getattr(sys.stdout, "flush", None)
        if flush is not None:
            flush()


def _flap_times(value):
    if isinstance(value, str) and "/" in value:
        up, down = value.split("/", 1)
        return float(up), float(down)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(value[0]), float(value[1])
    return 5.0, 2.0


def _ensure_dir(path):
    parts = path.split("/")
    current = ""
    for i, part in enumerate(parts):
        if not part:
            if i == 0:
                current = "/"
            continue
        current = current + part if current.endswith("/") or not current else current + "/" + part
        try:
            os.mkdir(current)
        except OSError:
            pass
