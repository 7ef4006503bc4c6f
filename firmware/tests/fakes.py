"""Test doubles shared by the CPython (pytest) and MicroPython (mp_runner) unit tests.

Only the MicroPython-compatible subset of Python is used here.
"""

import asyncio
import json
import sys

from hal_host import monotonic_ms

from homesync import mqtt
from homesync.clock import ManualClock, WrappingClock

MICROPYTHON = sys.implementation.name == "micropython"
UNIX_NOW = 1738852200  # 2025-02-06T14:30:00Z


def run_async(factory, timeout=20):
    """Run ``factory()`` in a fresh event loop on either runtime, bounded by ``timeout``."""
    if MICROPYTHON:
        asyncio.new_event_loop()

    async def guarded():
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(guarded())


def raises(exc_type, fn, *args):
    """Call ``fn(*args)``; return the exception if it is an ``exc_type``, else fail."""
    try:
        fn(*args)
    except exc_type as err:
        return err
    raise AssertionError("{} not raised".format(exc_type.__name__))


def parsed(msg):
    """``(topic, payload_bytes, qos, retain)`` -> ``(topic, dict, qos, retain)``."""
    return msg[0], json.loads(msg[1]), msg[2], msg[3]


def near_wrap_clock(before_wrap_ms=300):
    """A real-time clock that wraps (2**30, like the ESP32) ``before_wrap_ms`` after start."""
    period = 1 << 30
    return WrappingClock(monotonic_ms, period, period - before_wrap_ms)


class FakeHAL:
    ota_supported = False

    def __init__(self, clock=None, synced=True, unix=UNIX_NOW):
        self.clock = clock or ManualClock(start=(1 << 30) - 5000)
        self.synced = synced
        self.unix = unix
        self.relay = False
        self.relay_changes = 0
        self.led = False
        self.state = {}
        self.config = None
        self.state_saves = 0
        self.logs = []
        self.wifi = True
        self.meter_error = None
        self.meter_values = {"power": 42.5, "voltage": 230.1, "current": 0.21}
        self.energy_wh = 0.5
        self.wdt_ms = 0
        self.feeds = 0
        self.buttons = 0
        self.resets = 0
        self.frozen = False
        self.rssi_value = -61

    # clock
    def ticks_ms(self):
        return self.clock.ticks_ms()

    def ticks_diff(self, a, b):
        return self.clock.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return self.clock.ticks_add(t, delta)

    def now_unix(self):
        return self.unix

    def clock_synced(self):
        return self.synced

    def ntp_sync(self):
        return self.synced

    def random(self):
        return 0.5

    def random_hex(self, nbytes):
        return "c0ffee"[:nbytes]

    # io
    def relay_set(self, on):
        if bool(on) != self.relay:
            self.relay_changes += 1
        self.relay = bool(on)

    def led_set(self, on):
        self.led = bool(on)

    def button_pressed(self):
        if self.buttons:
            self.buttons -= 1
            return True
        return False

    def read_meter(self, relay_on):
        if self.meter_error is not None:
            raise self.meter_error
        values = {}
        for key in self.meter_values:
            values[key] = self.meter_values[key] if relay_on else 0.0
        return values, self.energy_wh if relay_on else 0.0

    def rssi(self):
        return self.rssi_value

    def wifi_connected(self):
        return self.wifi

    def wifi_connect(self):
        return None

    def collect_garbage(self):
        return None

    # persistence (JSON round trip, like the real file)
    def load_state(self):
        return json.loads(json.dumps(self.state))

    def save_state(self, state):
        self.state_saves += 1
        self.state = json.loads(json.dumps(state))

    def load_config(self):
        return self.config

    def save_config(self, config):
        self.config = json.loads(json.dumps(config))

    # watchdog / reset
    def wdt_init(self, ms):
        self.wdt_ms = ms

    def wdt_feed(self):
        self.feeds += 1

    def reset(self):
        self.resets += 1

    # fault seams
    async def gate(self, point):
        while self.frozen:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def checkpoint(self, point):
        return None

    def log(self, text):
        self.logs.append(text)


# --------------------------------------------------------------------------- in-memory broker


class Pipe:
    """One direction of an in-memory byte stream with ``readexactly``."""

    def __init__(self):
        self.buf = b""
        self.closed = False
        self.event = asyncio.Event()

    def feed(self, data):
        if not self.closed:
            self.buf += bytes(data)
            self.event.set()

    def close(self):
        self.closed = True
        self.event.set()

    async def readexactly(self, n):
        while len(self.buf) < n:
            if self.closed:
                raise EOFError("stream closed")
            self.event.clear()
            await self.event.wait()
        out = self.buf[:n]
        self.buf = self.buf[n:]
        return out


class ClientWriter:
    def __init__(self, conn):
        self.conn = conn

    def write(self, data):
        if self.conn.closed:
            raise OSError(32, "broken pipe")
        self.conn.to_server.feed(data)

    async def drain(self):
        await asyncio.sleep(self.conn.drain_s)

    def close(self):
        self.conn.close()

    async def wait_closed(self):
        self.conn.close()


class Conn:
    def __init__(self):
        self.to_server = Pipe()
        self.to_client = Pipe()
        self.closed = False
        self.drain_s = 0
        self.packets = []  # (type, flags, body) received from the client
        self.unacked = []  # QoS 1 packet ids received and not acknowledged (auto_puback off)

    def close(self):
        self.closed = True
        self.to_server.close()
        self.to_client.close()

    def of_type(self, ptype):
        return [p for p in self.packets if p[0] == ptype]


class FakeBroker:
    """Just enough of a broker to test the client's framing, keep-alive and re-send logic."""

    def __init__(self):
        self.conns = []
        self.session_present = False
        self.auto_puback = True
        self.answer_pings = True
        self.refuse = 0  # CONNACK return code to answer with
        self.suback_code = 1  # granted QoS; 0x80 refuses the subscription
        self.drain_s = 0  # how long a client write takes to drain (a slow link)
        self.after_suback = []  # packets sent to the client right after the next SUBACK
        self.after_topic = {}  # topic -> packets sent to the client when it publishes there
        self.tasks = []

    async def open(self, host, port, ssl=None):
        conn = Conn()
        conn.drain_s = self.drain_s
        self.conns.append(conn)
        self.tasks.append(asyncio.create_task(self._serve(conn)))
        return conn.to_client, ClientWriter(conn)

    @property
    def conn(self):
        return self.conns[-1]

    async def _serve(self, conn):
        try:
            while True:
                ptype, flags, body = await mqtt.read_packet(conn.to_server)
                conn.packets.append((ptype, flags, body))
                if ptype == mqtt.CONNECT:
                    sp = 1 if self.session_present else 0
                    conn.to_client.feed(bytes((0x20, 2, sp, self.refuse)))
                elif ptype == mqtt.PUBLISH and (flags >> 1) & 3 == 1:
                    topic, _payload, _qos, _retain, _dup, pid = mqtt.parse_publish(flags, body)
                    for pkt in self.after_topic.pop(topic, ()):
                        conn.to_client.feed(pkt)
                    if self.auto_puback:
                        conn.to_client.feed(mqtt.encode_puback(pid))
                    else:
                        conn.unacked.append(pid)
                elif ptype == mqtt.SUBSCRIBE:
                    pid = mqtt.parse_pid(body)
                    code = self.suback_code
                    conn.to_client.feed(bytes((0x90, 3, pid >> 8, pid & 0xFF, code)))
                    for pkt in self.after_suback:
                        conn.to_client.feed(pkt)
                    self.after_suback = []
                elif ptype == mqtt.PINGREQ and self.answer_pings:
                    conn.to_client.feed(b"\xd0\x00")
                elif ptype == mqtt.DISCONNECT:
                    conn.close()
                    return
        except EOFError:
            return

    def publish(self, topic, payload, qos=1, pid=1, retain=False):
        self.conn.to_client.feed(mqtt.encode_publish(topic, payload, qos, retain, pid))

    def ack_all(self):
        """Acknowledge every QoS 1 message received so far (with ``auto_puback`` off)."""
        conn = self.conn
        while conn.unacked:
            conn.to_client.feed(mqtt.encode_puback(conn.unacked.pop(0)))

    def raw(self, data):
        self.conn.to_client.feed(data)

    def cut(self):
        """The link dies: the client sees EOF (no DISCONNECT from either side)."""
        self.conn.close()

    def stop(self):
        for task in self.tasks:
            if not task.done():
                task.cancel()
