"""The node application: asyncio tasks around ``Node`` and ``MQTTClient``.

Tasks
  mqtt        connection supervisor (connect, keep-alive, reconnect with backoff)
  measure     reads the meter every ``measure_interval_ms``; after a *healthy* cycle it publishes
              the heartbeat and telemetry, so a dead sensor/app loop stops the heartbeat even
              while TCP and MQTT keep-alive are fine (docs/protocol.md, status/heartbeat)
  commands    handles incoming messages in order; PUBACK only after the reply went out
  io          button (toggle) and LED (blink) at 20 Hz
  ntp         clock sync when Wi-Fi is up
  supervisor  feeds the watchdog only while the measurement loop makes progress, every task is
              alive and MQTT has not been down longer than ``reboot_after_offline_s``

Fault-injection seams: ``await hal.gate(point)`` and ``hal.checkpoint(point)`` (no-ops on the
device; the simulator's HAL freezes, delays or crashes there).
"""

import asyncio

from homesync import VERSION
from homesync.clock import Every
from homesync.mqtt import MQTTClient, tls_context
from homesync.node import Node
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
}
CRITICAL_TASKS = ("mqtt", "measure", "commands", "io")
INBOX_LIMIT = 32


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
        self.cfg = with_defaults(config)
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
        self.hal.log("app: stopped ({})".format(reason))
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
            stable_s=mq["stable_s"],
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    async def _on_connect(self, session_present):
        # Subscribe first: once the integration sees the birth, commands reach us.
        node = self.node
        if not session_present:
            await self.mqtt.subscribe(node.subscriptions())
        node.on_connected()
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
        if token is None and len(self.inbox) >= INBOX_LIMIT:
            self._warn("inbox", "app: inbox full, dropped a QoS 0 message on {}".format(topic))
            return
        self.inbox.append((topic, payload, retain, token))
        self._inbox_event.set()

    async def _publish(self, msg):
        client = self.mqtt
        if client is None or msg is None:
            return False
        return await client.publish(msg[0], msg[1], msg[2], msg[3])

    # ----------------------------------------------------------------- tasks

    async def _command_loop(self):
        hal = self.hal
        node = self.node
        while True:
            if not self.inbox:
                self._inbox_event.clear()
                await self._inbox_event.wait()
                continue
            topic, payload, retain, token = self.inbox.pop(0)
            await hal.gate("command")
            node.connected = self.mqtt.connected
            out, follow = node.handle(topic, payload, retain)
            hal.checkpoint("command_handled")
            for msg in out:
                await self._publish(msg)
            await self.mqtt.ack(token)
            if follow is not None and follow[0] == "ota":
                for msg in self.ota.command(follow[1]):  # the update runs as its own task
                    await self._publish(msg)
            elif follow is not None and follow[0] == "announce":
                self._schedule_announce()

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
        phase = False
        level = None
        while True:
            if hal.button_pressed():
                for msg in node.button():
                    await self._publish(msg)
            if blink.due():
                phase = not phase
            want = node.led_level(phase)
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
