"""Node logic: relay, LED, commands, idempotency cache, heartbeat, telemetry, persistence.

No sockets and no ``asyncio`` here.  Every method returns the messages to publish as
``(topic, payload_bytes, qos, retain)`` tuples; the app sends them.  Hardware and time come from
the HAL:

* ``ticks_ms()``, ``ticks_diff(a, b)``, ``ticks_add(t, d)``
* ``now_unix()`` -> Unix seconds, ``clock_synced()`` -> bool
* ``relay_set(on)``, ``led_set(on)``
* ``save_state(dict)``, ``save_config(dict)``
* ``log(text)``
"""

from homesync import VERSION, protocol
from homesync.clock import MIN_VALID_UNIX, Uptime

CACHE_SIZE = 32
SOURCES = ("command", "button", "boot")
RSSI_STEP_DB = 3


class Node:
    def __init__(self, hal, config, state=None, firmware=VERSION):
        self.hal = hal
        self.config = config
        self.home_id = config["home_id"]
        self.node_id = config["node_id"]
        if not (protocol.valid_id(self.home_id) and protocol.valid_id(self.node_id)):
            raise ValueError("home_id/node_id must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
        self.firmware = firmware
        self.heartbeat_interval = int(config.get("heartbeat_interval", 30))
        self.telemetry_interval = int(config.get("telemetry_interval", 10))
        state = state or {}
        self.client_suffix = state.get("client_suffix")
        self.relay = bool(state.get("relay", False))
        self.relay_source = "boot"
        self.led_mode = "relay"  # "relay" follows the relay; "on"/"off"/"blink" after a command
        self.led_source = "boot"
        self.rssi_published = None  # last rssi value published (change detection, >= 3 dB)
        self.energy_uwh = int(state.get("energy_uwh", 0))  # integer micro-Wh: no float drift
        self._saved_energy = self.energy_uwh
        self.seq = 0
        self.connects = 0
        self.connected = False
        self.stopping = False
        self.reading = {}
        self.uptime = Uptime(hal)
        self._rebirth_at = None
        self._cache = {}  # request_id -> response dict
        self._cache_order = []
        self._persist_cache = {}
        entries = state.get("requests") or []
        for entry in entries:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict):
                self._remember(entry[0], entry[1], True)

    # ----------------------------------------------------------------- identity / topics

    def topic(self, category, name):
        return protocol.topic(self.home_id, self.node_id, category, name)

    def client_id(self):
        return "homesync_{}_{}_{}".format(self.home_id, self.node_id, self.client_suffix)

    def hub_topic(self):
        return protocol.hub_topic(self.home_id)

    def subscriptions(self):
        return [
            (self.topic("command", "+"), 1),
            (self.topic("status", "online"), 1),
            (self.hub_topic(), 1),
        ]

    def now(self):
        """Unix seconds when the clock is synchronised and plausible, else ``None``."""
        if not self.hal.clock_synced():
            return None
        now = self.hal.now_unix()
        return now if now >= MIN_VALID_UNIX else None

    def _msg(self, category, name, obj, qos=1, retain=False):
        return (self.topic(category, name), protocol.encode(obj), qos, retain)

    # ----------------------------------------------------------------- boot & persistence

    def boot(self):
        """Apply the configured power-on relay state before any network activity."""
        mode = self.config.get("relay_boot", "restore")
        if mode == "on":
            self.relay = True
        elif mode == "off":
            self.relay = False
        self.relay_source = "boot"
        self.hal.relay_set(self.relay)
        self.apply_led()
        if not self.client_suffix:
            self.client_suffix = self.hal.random_hex(6)
            self.save_state()

    def state(self):
        requests = []
        for rid in self._cache_order:
            if rid in self._persist_cache:
                requests.append([rid, self._cache[rid]])
        return {
            "client_suffix": self.client_suffix,
            "relay": self.relay,
            "energy_uwh": self.energy_uwh,
            "requests": requests,
        }

    def save_state(self):
        try:
            self.hal.save_state(self.state())
            self._saved_energy = self.energy_uwh
        except Exception as err:
            self.hal.log("node: saving state failed: {}".format(err))

    def energy_unsaved(self):
        return self.energy_uwh != self._saved_energy

    # ----------------------------------------------------------------- connection lifecycle

    def will(self):
        return (self.topic("status", "online"), protocol.encode(protocol.will()), 1, True)

    def birth(self):
        reason = "boot" if self.connects <= 1 else "reconnect"
        obj = protocol.online(reason, self.uptime.seconds(), self.firmware, self.now())
        return self._msg("status", "online", obj, 1, True)

    def shutdown(self):
        return self._msg("status", "online", protocol.offline("shutdown", self.now()), 1, True)

    def relay_msg(self):
        obj = protocol.relay_status(self.relay, self.relay_source, self.now())
        return self._msg("status", "relay", obj, 1, True)

    def led_state(self):
        """What the LED shows: ``on``/``off``/``blink`` (``relay`` mode follows the relay)."""
        if self.led_mode == "relay":
            return "on" if self.relay else "off"
        return self.led_mode

    def led_msg(self):
        obj = protocol.led_status(self.led_state(), self.led_source, self.now())
        return self._msg("status", "led", obj, 1, True)

    def firmware_msg(self):
        return self._msg(
            "status", "firmware", protocol.firmware_status(self.firmware, self.now()), 1, True
        )

    def rssi_msg(self, value):
        if value is None:
            return None
        self.rssi_published = int(value)
        return self._msg("status", "rssi", protocol.rssi(value), 1, False)

    def rssi_changed(self, value):
        """True when ``value`` differs from the last published rssi by >= 3 dB."""
        if value is None:
            return False
        last = self.rssi_published
        return last is None or abs(int(value) - last) >= RSSI_STEP_DB

    def on_connected(self):
        """A fresh connection: count it.  The app then publishes ``ANNOUNCE`` in order, each
        message built just before it is sent (a state built earlier could go out stale)."""
        self.connects += 1
        self.connected = True

    def announce(self, rssi=None):
        """Birth first, then the retained state, then rssi (built now: the current truth)."""
        out = [self.birth(), self.relay_msg(), self.led_msg(), self.firmware_msg()]
        msg = self.rssi_msg(rssi)
        if msg is not None:
            out.append(msg)
        return out

    def on_disconnected(self):
        self.connected = False

    # ----------------------------------------------------------------- periodic

    def heartbeat(self):
        """Next heartbeat; ``seq`` starts at 0 on boot and counts every healthy cycle's beat."""
        obj = protocol.heartbeat(
            self.seq, self.uptime.seconds(), self.heartbeat_interval, self.relay, self.led_state()
        )
        self.seq += 1
        # QoS 1: a broker under load drops QoS 0 first (docs/protocol.md, "Heartbeat QoS").
        return self._msg("status", "heartbeat", obj, 1, False)

    def update_reading(self, reading, energy_wh=0.0):
        """Store a meter reading (dict of metric -> number); relay off forces zero load."""
        self.reading = reading
        if energy_wh > 0:
            self.energy_uwh += int(energy_wh * 1000000 + 0.5)

    def telemetry(self):
        now = self.now()
        out = []
        reading = self.reading
        for name in reading:
            if name == "energy":
                continue
            value = reading[name]
            if value is None:  # the meter cannot measure it now (cse7766.parse_frame)
                reason = "no_load" if not reading.get("power") else "below_range"
                obj = protocol.unmeasured(name, reason, now)
            else:
                obj = protocol.telemetry(name, value, now)
            if obj is not None and protocol.valid_name(name):
                out.append(self._msg("telemetry", name, obj, 0, False))
        energy = protocol.telemetry("energy", self.energy_uwh / 1e9, now)
        out.append(self._msg("telemetry", "energy", energy, 0, False))
        return out

    # ----------------------------------------------------------------- local inputs

    def set_relay(self, on, source):
        """Persist first, then switch: after a crash the stored state is the truth."""
        on = bool(on)
        changed = on != self.relay
        self.relay = on
        self.relay_source = source
        self.save_state()
        self.hal.relay_set(on)
        if changed and self.led_mode == "relay":
            self.led_source = "relay"
        self.apply_led()
        return changed

    def relay_msgs(self, changed):
        """``status/relay``, plus ``status/led`` when the LED follows the relay and it changed."""
        out = [self.relay_msg()]
        if changed and self.led_mode == "relay":
            out.append(self.led_msg())
        return out

    def button(self):
        return self.relay_msgs(self.set_relay(not self.relay, "button"))

    def apply_led(self):
        mode = self.led_mode
        if mode == "relay":
            self.hal.led_set(self.relay)
        elif mode in ("on", "off"):
            self.hal.led_set(mode == "on")

    def led_level(self, blink_phase):
        if self.led_mode == "blink":
            return blink_phase
        if self.led_mode == "relay":
            return self.relay
        return self.led_mode == "on"

    # ----------------------------------------------------------------- incoming messages

    def handle(self, topic, payload, retain=False):
        """Process one incoming message -> ``(messages, action)``.

        ``action`` is ``None`` or a follow-up for the app (``("ota", cmd)``,
        ``("config", values)``).  Never raises for bad input.
        """
        if topic == self.hub_topic():
            return [], self._hub_status(payload, retain)
        parts = protocol.parse_topic(topic)
        if parts is None or parts[0] != self.home_id or parts[1] != self.node_id:
            self.hal.log("node: ignored message on {}".format(topic))
            return [], None
        category, name = parts[2], parts[3]
        if category == "status" and name == "online":
            return self._own_online(payload, retain), None
        if category == "command":
            return self.command(name, payload)
        return [], None

    def _hub_status(self, payload, retain):
        """The integration (re)started: ``("announce", None)`` asks the app to re-publish birth
        and state after a random delay (docs/protocol.md "Hub announcement")."""
        if retain:
            return None  # the contract says non-retained; a stale retained one is no news
        try:
            obj = protocol.decode(payload)
        except protocol.ProtocolError:
            return None
        if obj.get("online") is not True or self.stopping:
            return None
        return ("announce", None)

    def _own_online(self, payload, retain):
        """A will published for a session we already replaced: restore the retained truth.

        Only live messages count: a retained ``online: false`` delivered on subscribe is the
        previous session's will, which the birth that follows the subscription overwrites.
        """
        if retain:
            return []
        try:
            obj = protocol.decode(payload)
        except protocol.ProtocolError:
            return []
        if obj.get("online") is not False or not self.connected or self.stopping:
            return []
        now = self.hal.ticks_ms()
        if self._rebirth_at is not None and self.hal.ticks_diff(now, self._rebirth_at) < 1000:
            return []
        self._rebirth_at = now
        self.hal.log(
            "node: saw online=false ({}) while connected, re-publishing birth".format(
                obj.get("reason")
            )
        )
        return [self.birth()]

    def command(self, name, payload):
        try:
            cmd = protocol.parse_command(name, payload)
        except protocol.CommandError as err:
            text = _clip(payload)
            self.hal.log("node: bad command/{}: {} ({})".format(name, err.message, text))
            if err.request_id is None:
                return [], None
            resp = protocol.response(err.request_id, "error", error=err.message, now=self.now())
            self._remember(err.request_id, resp, False)
            return [self._response(resp, name)], None
        rid = cmd["request_id"]
        cached = self._cache.get(rid)
        if cached is not None:
            self.hal.log("node: duplicate request {}, answering from cache".format(rid))
            return [self._response(cached, name)], None
        now = self.now()
        if protocol.is_expired(cmd, now):
            resp = protocol.response(rid, "expired", error="command expired", now=now)
            self._remember(rid, resp, False)
            return [self._response(resp, name)], None
        if name == "ota":
            return [], ("ota", cmd)  # homesync.ota answers on response/ota
        return self._execute(cmd, now)

    def _execute(self, cmd, now):
        rid = cmd["request_id"]
        name = cmd["name"]
        action = cmd["action"]
        out = []
        follow = None
        if name == "relay":
            target = (not self.relay) if action == "toggle" else action == "on"
            resp = protocol.response(rid, "success", "on" if target else "off", now=now)
            self._remember(rid, resp, True)
            changed = self.set_relay(target, "command")  # persists the cache entry too
            out.extend(self.relay_msgs(changed))
        elif name == "led":
            self.led_mode = action
            self.led_source = "command"
            self.apply_led()
            resp = protocol.response(rid, "success", action, now=now)
            self._remember(rid, resp, False)
            out.append(self.led_msg())
        elif name == "config":
            values = cmd["config"]
            for key in values:
                setattr(self, key, values[key])
                self.config[key] = values[key]
            effective = {
                "heartbeat_interval": self.heartbeat_interval,
                "telemetry_interval": self.telemetry_interval,
            }
            resp = protocol.response(rid, "success", "ok", now=now, extra={"config": effective})
            self._remember(rid, resp, True)
            self.save_state()
            try:
                self.hal.save_config(self.config)
            except Exception as err:
                self.hal.log("node: saving config failed: {}".format(err))
            follow = ("config", values)
        out.append(self._response(resp))  # after status/relay: confirmed state is already out
        return out, follow

    def _response(self, resp, name="command"):
        # OTA answers go to response/ota, every other command's to response/command.
        return self._msg("response", "ota" if name == "ota" else "command", resp, 1, False)

    def _remember(self, rid, resp, persist):
        if rid in self._cache:
            self._cache_order.remove(rid)
        self._cache[rid] = resp
        self._cache_order.append(rid)
        if persist:
            self._persist_cache[rid] = True
        while len(self._cache_order) > CACHE_SIZE:
            old = self._cache_order.pop(0)
            self._cache.pop(old, None)
            self._persist_cache.pop(old, None)

    def cached(self, rid):
        return self._cache.get(rid)


def _clip(payload, limit=80):
    try:
        text = (
            str(bytes(payload[:limit]), "utf-8")
            if not isinstance(payload, str)
            else payload[:limit]
        )
    except Exception:
        text = repr(payload[:limit])
    return text
