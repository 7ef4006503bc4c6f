"""The node application: asyncio tasks around ``Node`` and ``MQTTClient``.

Tasks
  mqtt        connection supervisor (connect, keep-alive, reconnect with backoff)
  measure     reads the meter every ``measure_interval_ms``; after a *healthy* cycle it publishes
              the heartbeat and telemetry, so a dead sensor/app loop stops the heartbeat even
              while TCP and MQTT keep-alive are fine (docs/protocol.md, status/heartbeat)
  commands    handles incoming messages in order; PUBACK only after the reply went out.  Every
              failure to process one message (too large, unparseable, out of memory, a bug) is
              contained: answered with an error when its request id is readable, acknowledged,
              and the task, the link and the node live on.  Overload (inbox full) is answered
              ``busy``.
  io          button (toggle) and LED (blink) at 20 Hz
  ntp         clock sync when Wi-Fi is up
  supervisor  feeds the watchdog only while the measurement loop makes progress, every task is
              alive and MQTT has not been down longer than ``reboot_after_offline_s``

Fault-injection seams: ``await hal.gate(point)`` and ``hal.checkpoint(point)`` (no-ops on the
device; the simulator's HAL freezes, delays or crashes there).
"""

import asyncio

from homesync import VERSION, protocol
from homesync.clock import Every
from homesync.mqtt import AUTH_REFUSALS, MQTTClient, Oversize, describe, tls_context
from homesync.node import BUSY, REQUEST_MEMORY, Node
from homesync.ota import OtaHooks

DEFAULTS = {
    "heartbeat_interval": 30,
    "telemetry_interval": 10,
    "measure_interval_ms": 1000,
    "stall_timeout_s": 10,
    "watchdog_s": 30,
    "reboot_after_offline_s": 900,
    "energy_save_s": 900,
    "rssi_interval_s": 60,
    "rssi_check_s": 5,
    "announce_spread_s": 5,
    "request_memory": REQUEST_MEMORY,
    "ntp_interval_s": 21600,
    "relay_boot": "restore",
}
MQTT_DEFAULTS = {
    "host": "127.0.0.1",
    "port": None,
    "brokers": None,
    "keepalive": 60,
    "username": None,
    "password": None,
    "tls": False,
    "ca_file": None,
    "tls_insecure": False,
    "backoff_min_s": 1,
    "backoff_max_s": 60,
    "stable_s": 60,
    "auth_backoff_max_s": 600,
}
# Numeric settings checked at boot: (low, high, integer).  A value outside is replaced by its
# default, and the console says so (0 used to mean "no heartbeat ever", silently).
RANGES = {
    "heartbeat_interval": (1, 3600, True),
    "telemetry_interval": (1, 3600, True),
    "measure_interval_ms": (10, 60000, False),
    "stall_timeout_s": (0.1, 3600, False),
    "watchdog_s": (0, 3600, False),
    "reboot_after_offline_s": (0, 604800, False),
    "energy_save_s": (1, 86400, False),
    "rssi_interval_s": (1, 86400, False),
    "rssi_check_s": (0.01, 3600, False),
    "announce_spread_s": (0, 60, False),
    "ntp_interval_s": (60, 604800, False),
    "request_memory": (REQUEST_MEMORY, 4096, True),
}
MQTT_RANGES = {
    "port": (1, 65535, True),
    "keepalive": (0, 65535, True),
    "backoff_min_s": (0.01, 3600, False),
    "backoff_max_s": (0.01, 86400, False),
    "stable_s": (0, 86400, False),
    "auth_backoff_max_s": (0.01, 86400, False),
}
RELAY_BOOT = ("restore", "on", "off")
# An incoming packet may hold a maximal command plus its topic and header; anything larger is
# skipped by the client in bounded memory and answered "too large".
MAX_PACKET = protocol.MAX_COMMAND_BYTES + 512
CRITICAL_TASKS = ("mqtt", "measure", "commands", "io")
# Messages waiting for the command task (the client stops reading at this many); QoS 1 commands
# arriving beyond it (only while our own window waits for PUBACKs) are answered busy at once.
INBOX_LIMIT = 16
AUTH_BLINK_MS = 100  # LED pattern while the broker refuses our credentials: fast blink (5 Hz)


def with_defaults(config):
    """A config dict with every field present (the file's values win)."""
    out = {}
    for key, value in DEFAULTS.items():
        out[key] = value
    for key in config:
        out[key] = config[key]
    mqtt = {}
    for key, value in MQTT_DEFAULTS.items():
        mqtt[key] = value
    given = config.get("mqtt") or {}
    for key in given:
        mqtt[key] = given[key]
    if mqtt["port"] is None:
        mqtt["port"] = 8883 if mqtt["tls"] else 1883
    out["mqtt"] = mqtt
    return out


def _in_range(value, low, high, integer):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not protocol.finite(value) or not low <= value <= high:
        return False
    return not integer or value == int(value)


def validate(cfg, log):
    """Check the settings of ``with_defaults(config)`` in place; bad ones get their default
    and one console line each."""

    def check(section, ranges, defaults, prefix):
        for key in ranges:
            low, high, integer = ranges[key]
            value = section.get(key)
            if value is None and defaults[key] is None:
                continue
            if _in_range(value, low, high, integer):
                if integer:
                    section[key] = int(value)
                continue
            log(
                "config: {}{}={!r} is not {} in {}..{}; using {}".format(
                    prefix,
                    key,
                    value,
                    "an integer" if integer else "a number",
                    low,
                    high,
                    defaults[key],
                )
            )
            section[key] = defaults[key]

    check(cfg, RANGES, DEFAULTS, "")
    mqtt = cfg["mqtt"]
    port_default = 8883 if mqtt.get("tls") else 1883
    defaults = {}
    for key, value in MQTT_DEFAULTS.items():
        defaults[key] = value
    defaults["port"] = port_default
    check(mqtt, MQTT_RANGES, defaults, "mqtt.")
    if mqtt["backoff_max_s"] < mqtt["backoff_min_s"]:
        log("config: mqtt.backoff_max_s is below mqtt.backoff_min_s; using both defaults")
        mqtt["backoff_min_s"] = MQTT_DEFAULTS["backoff_min_s"]
        mqtt["backoff_max_s"] = MQTT_DEFAULTS["backoff_max_s"]
    if cfg.get("relay_boot") not in RELAY_BOOT:
        log(
            "config: relay_boot={!r} is not one of {}; using restore".format(
                cfg.get("relay_boot"), ", ".join(RELAY_BOOT)
            )
        )
        cfg["relay_boot"] = "restore"
    return cfg


def broker_list(mqtt):
    """``mqtt.brokers`` (``["host:port", ...]``; wins over host/port) -> ``[(host, port)]``.

    An entry without a port gets ``mqtt.port``; unusable entries are skipped (the caller logs).
    """
    given = mqtt.get("brokers")
    if not given:
        return [(mqtt["host"], int(mqtt["port"]))]
    out = []
    for entry in given:
        if not isinstance(entry, str) or not entry:
            continue
        host = entry
        port = int(mqtt["port"])
        colon = entry.rfind(":")
        if colon > 0 and entry.find(":") == colon:  # one colon: host:port (not bare IPv6)
            host = entry[:colon]
            try:
                port = int(entry[colon + 1 :])
            except ValueError:
                continue
        if host and 0 < port < 65536:
            out.append((host, port))
    return out or [(mqtt["host"], int(mqtt["port"]))]


class App:
    def __init__(self, hal, config, firmware=None):
        self.hal = hal
        self.cfg = validate(with_defaults(config), hal.log)
        self.node = Node(hal, self.cfg, hal.load_state(), firmware or VERSION)
        self.mqtt = None
        self.opener = None  # tests inject an in-memory transport here
        self.tasks = {}
        self.inbox = []
        self._inbox_event = asyncio.Event()
        self._stopped = asyncio.Event()
        self._warned = {}
        self.last_progress = hal.ticks_ms()
        self.meter_errors = 0
        self.watchdog_ms = int(self.cfg["watchdog_s"] * 1000)
        self.stall_ms = int(self.cfg["stall_timeout_s"] * 1000)
        self.offline_reboot_ms = int(self.cfg["reboot_after_offline_s"] * 1000)
        self.problem = None
        self._announce_at = None  # ticks when a hub-requested re-announcement is due
        self._fatal = getattr(hal, "fatal_errors", ())  # exceptions not to contain (simulator)
        self.ota = OtaHooks(self)  # firmware updates (homesync/ota.py)

    # ----------------------------------------------------------------- lifecycle

    async def run(self):
        hal = self.hal
        self.node.boot()
        self.mqtt = self._make_client()
        if self.watchdog_ms:
            hal.wdt_init(self.watchdog_ms)
        self.last_progress = hal.ticks_ms()
        hal.log(
            "app: node {}/{} firmware {} relay={}".format(
                self.node.home_id, self.node.node_id, self.node.firmware, int(self.node.relay)
            )
        )
        self._spawn("mqtt", self.mqtt.run())
        self._spawn("measure", self._measure_loop())
        self._spawn("commands", self._command_loop())
        self._spawn("io", self._io_loop())
        self._spawn("ntp", self._ntp_loop())
        self._spawn("supervisor", self._supervisor())
        await self._stopped.wait()

    async def stop(self, reason="shutdown"):
        """Graceful stop: retained ``online: false, reason: shutdown``, DISCONNECT, save state."""
        node = self.node
        node.stopping = True
        client = self.mqtt
        if client is not None:
            if client.connected:
                pid = await client.publish(*node.shutdown())
                await client.wait_acked(pid, 3)
                await client.disconnect()
            else:
                client.stopping = True
                client.abort(reason)
        if node.energy_unsaved():
            node.save_state()
        self.hal.log("app: stopped ({}); mqtt {}".format(reason, client.stats if client else None))
        self._cancel_tasks()
        self._stopped.set()

    def kill(self):
        """Simulated reset: every task stops at once, the socket is left half-open."""
        writer = self.mqtt.abandon() if self.mqtt is not None else None
        self._cancel_tasks()
        self._stopped.set()
        return writer

    def _spawn(self, name, coro):
        self.tasks[name] = asyncio.create_task(coro)

    def _cancel_tasks(self):
        current = asyncio.current_task()
        for name in self.tasks:
            task = self.tasks[name]
            if task is not current and not task.done():
                task.cancel()

    def _warn(self, key, text, every_ms=60000):
        hal = self.hal
        now = hal.ticks_ms()
        last = self._warned.get(key)
        if last is None or hal.ticks_diff(now, last) >= every_ms:
            self._warned[key] = now
            hal.log(text)

    # ----------------------------------------------------------------- MQTT glue

    def _make_client(self):
        hal = self.hal
        mq = self.cfg["mqtt"]
        ssl = tls_context(mq["ca_file"], mq["tls_insecure"]) if mq["tls"] else None
        brokers = broker_list(mq)
        client = MQTTClient(
            hal,
            self.node.client_id(),
            brokers[0][0],
            brokers[0][1],
            brokers=brokers,
            keepalive=int(mq["keepalive"]),
            username=mq["username"] or None,
            password=mq["password"] or None,
            will=self.node.will(),
            clean_session=False,
            ssl=ssl,
            opener=self.opener,
            backoff_base=float(mq["backoff_min_s"]),
            backoff_cap=float(mq["backoff_max_s"]),
            auth_backoff_cap=float(mq["auth_backoff_max_s"]),
            stable_s=mq["stable_s"],
            max_packet=MAX_PACKET,
            max_unacked=INBOX_LIMIT,
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    async def _on_connect(self, session_present):
        # Subscribe first: once the integration sees the birth, commands reach us.  On EVERY
        # connect, whatever session_present says: a session can exist without subscriptions
        # (the first link died between CONNACK and SUBACK, or a topic was refused), and a node
        # that trusted it would look healthy while deaf for good.  SUBSCRIBE is idempotent.
        node = self.node
        node.on_connected()
        await self.mqtt.subscribe(node.subscriptions())
        node.mark_announced()
        await self._announce()
        await self.ota.on_connected()  # e.g. a pending "rolled back" report

    async def _announce(self):
        """Birth, relay, LED, firmware, rssi; each built right before it is queued, so a
        command handled meanwhile can never be overwritten by an older state."""
        node = self.node
        for build in (node.birth, node.relay_msg, node.led_msg, node.firmware_msg, self._rssi):
            if node.stopping:
                return
            msg = build()
            if msg is not None:
                await self._publish(msg)

    def _rssi(self):
        return self.node.rssi_msg(self.hal.rssi())

    def _on_message(self, topic, payload, retain, token):
        """Take a message into the inbox (``None``), or shed it when the inbox is full: the
        client then publishes the returned ``(topic, payload)`` (QoS 0, no window needed) and
        acknowledges the message in order."""
        if len(self.inbox) < INBOX_LIMIT:
            self.inbox.append((topic, payload, retain, token))
            self._inbox_event.set()
            return None
        if token is None:
            self._warn("inbox", "app: inbox full, dropped a QoS 0 message on {}".format(topic))
            return None
        node = self.node
        if retain or not node.is_command(topic):
            return ()
        raw = payload.head if isinstance(payload, Oversize) else payload
        rid = protocol.sniff_request_id(bytes(raw)) if raw else None
        self._warn("shed", "app: overloaded, answering busy", 5000)
        out = node.refuse(topic, rid, BUSY, False)
        return (out[0][0], out[0][1]) if out else ()

    async def _publish(self, msg):
        client = self.mqtt
        if client is None or msg is None:
            return False
        return await client.publish(msg[0], msg[1], msg[2], msg[3])

    # ----------------------------------------------------------------- tasks

    async def _command_loop(self):
        hal = self.hal
        while True:
            if not self.inbox:
                self._inbox_event.clear()
                await self._inbox_event.wait()
                continue
            topic, payload, retain, token = self.inbox.pop(0)
            await hal.gate("command")
            follow = None
            try:
                follow = await self._process(topic, payload, retain)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # MemoryError included: contain it, answer, ack
                if isinstance(err, self._fatal):
                    raise  # the HAL says the device is resetting right here (a simulated brownout)
                await self._contain(topic, payload, retain, err)
            await self.mqtt.ack(token)
            if follow is not None:
                try:
                    await self._follow(follow)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # contained like the message itself
                    self._warn("follow", "app: {} failed: {}".format(follow[0], describe(err)))

    async def _follow(self, follow):
        if follow[0] == "ota":
            for msg in self.ota.command(follow[1]):  # the update runs as its own task
                await self._publish(msg)
        elif follow[0] == "announce":
            self._schedule_announce()

    async def _process(self, topic, payload, retain):
        node = self.node
        if isinstance(payload, Oversize):
            rid = None if retain else protocol.sniff_request_id(payload.head)
            reason = "command too large ({} bytes, limit {})".format(
                payload.size, protocol.MAX_COMMAND_BYTES
            )
            await self._answer(topic, rid, reason)
            return None
        node.connected = self.mqtt.connected
        out, follow = node.handle(topic, payload, retain)
        self.hal.checkpoint("command_handled")
        for msg in out:
            await self._publish(msg)
        return follow

    async def _answer(self, topic, rid, reason):
        """An error response for a message that could not be processed (if it is a command
        whose request id is known)."""
        for msg in self.node.refuse(topic, rid, reason):
            await self._publish(msg)

    async def _contain(self, topic, payload, retain, err):
        hal = self.hal
        hal.collect_garbage()
        self._warn("contain", "app: message on {} failed: {}".format(topic, describe(err)), 5000)
        reason = "out of memory" if isinstance(err, MemoryError) else "internal error"
        raw = payload.head if isinstance(payload, Oversize) else payload
        try:
            rid = None
            if not retain and isinstance(raw, (bytes, bytearray)):
                rid = protocol.sniff_request_id(bytes(raw))
            await self._answer(topic, rid, reason)
        except asyncio.CancelledError:
            raise
        except Exception as again:
            self._warn("contain2", "app: could not answer it: {}".format(describe(again)), 5000)

    def _schedule_announce(self):
        """The hub came (back): re-announce after a random 0..announce_spread_s delay (many
        nodes answer one announcement; the spread avoids a thundering herd).  Announcements
        arriving while one is pending are folded into it."""
        if self._announce_at is not None:
            return
        hal = self.hal
        delay_ms = int(float(self.cfg["announce_spread_s"]) * 1000 * hal.random())
        self._announce_at = hal.ticks_add(hal.ticks_ms(), delay_ms)

    async def _measure_loop(self):
        hal = self.hal
        node = self.node
        heartbeat = Every(hal, node.heartbeat_interval * 1000)
        telemetry = Every(hal, node.telemetry_interval * 1000)
        rssi = Every(hal, self.cfg["rssi_interval_s"] * 1000, False)
        rssi_check = Every(hal, self.cfg["rssi_check_s"] * 1000, False)
        save = Every(hal, self.cfg["energy_save_s"] * 1000, False)
        pause = self.cfg["measure_interval_ms"] / 1000
        while True:
            await hal.gate("measure")
            healthy = self._measure_once()
            node.uptime.update()
            if heartbeat.interval_ms != node.heartbeat_interval * 1000:
                heartbeat.set_interval(node.heartbeat_interval * 1000)
            if telemetry.interval_ms != node.telemetry_interval * 1000:
                telemetry.set_interval(node.telemetry_interval * 1000)
            if healthy:
                self.last_progress = hal.ticks_ms()
                if node.connects and heartbeat.due():
                    beat = node.heartbeat()  # seq counts beats missed while disconnected
                    # QoS 1: never queue stale beats in flight (docs/protocol.md, Heartbeat QoS)
                    if self.mqtt.connected and await self._publish(beat):
                        await self.ota.heartbeat_sent()  # healthy cycle: ends OTA probation
                if self.mqtt.connected and telemetry.due():
                    for msg in node.telemetry():
                        await self._publish(msg)
            if self.mqtt.connected and rssi.due():
                await self._publish(self._rssi())
            elif self.mqtt.connected and rssi_check.due():
                value = hal.rssi()
                if node.rssi_changed(value):
                    await self._publish(node.rssi_msg(value))
            due = self._announce_at
            if due is not None and hal.ticks_diff(hal.ticks_ms(), due) >= 0:
                self._announce_at = None
                if self.mqtt.connected:
                    await self._announce()
            if save.due() and node.energy_unsaved():
                node.save_state()
            hal.collect_garbage()
            await asyncio.sleep(pause)

    def _measure_once(self):
        try:
            reading, energy_wh = self.hal.read_meter(self.node.relay)
        except Exception as err:
            self.meter_errors += 1
            self._warn("meter", "app: meter read failed: {}".format(err))
            return False
        self.node.update_reading(reading, energy_wh)
        return True

    async def _io_loop(self):
        hal = self.hal
        node = self.node
        blink = Every(hal, 500)
        fast = Every(hal, AUTH_BLINK_MS)
        phase = False
        fast_phase = False
        level = None
        while True:
            if hal.button_pressed():
                for msg in node.button():
                    await self._publish(msg)
            if blink.due():
                phase = not phase
            if fast.due():
                fast_phase = not fast_phase
            # While the broker refuses our credentials the plug itself says so: fast blink.
            want = fast_phase if self.credentials_refused() else node.led_level(phase)
            if want != level:
                hal.led_set(want)
                level = want
            await asyncio.sleep(0.05)

    async def _ntp_loop(self):
        hal = self.hal
        while True:
            if hal.wifi_connected():
                ok = False
                try:
                    ok = hal.ntp_sync()
                except Exception as err:
                    self._warn("ntp", "app: ntp failed: {}".format(err))
                await asyncio.sleep(self.cfg["ntp_interval_s"] if ok else 60)
            else:
                await asyncio.sleep(5)

    def credentials_refused(self):
        client = self.mqtt
        return client is not None and not client.connected and client.refused in AUTH_REFUSALS

    def health_problem(self):
        """``None`` when healthy, else why the watchdog is being starved."""
        hal = self.hal
        now = hal.ticks_ms()
        stalled = hal.ticks_diff(now, self.last_progress)
        if stalled > self.stall_ms:
            return "measurement loop made no progress for {} ms".format(stalled)
        for name in CRITICAL_TASKS:
            task = self.tasks.get(name)
            if task is not None and task.done():
                return "task {} died".format(name)
        client = self.mqtt
        if self.offline_reboot_ms and client is not None and not client.connected:
            down = hal.ticks_diff(now, client.down_since)
            if down > self.offline_reboot_ms:
                return "mqtt down for {} s".format(down // 1000)
        return None

    async def _supervisor(self):
        hal = self.hal
        period = 1.0
        if self.watchdog_ms and self.watchdog_ms < 4000:
            period = self.watchdog_ms / 4000
        while True:
            await asyncio.sleep(period)
            problem = self.health_problem()
            if problem is None:
                if self.watchdog_ms:
                    hal.wdt_feed()
            elif problem != self.problem:
                hal.log("supervisor: {}; not feeding the watchdog".format(problem))
            self.problem = problem
