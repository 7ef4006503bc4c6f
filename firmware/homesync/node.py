"""Node logic: relay, LED, commands, request-id memory, heartbeat, telemetry, persistence.

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

REQUEST_MEMORY = 256  # request ids remembered (at least; config ``request_memory``)
REQUEST_WINDOW_S = 120  # ... for this long: a retry arrives within ~30 s of the first attempt
PERSIST_LIMIT = 32  # state-changing entries also kept in state.json (survive a reset)
SOURCES = ("command", "button", "boot")
RSSI_STEP_DB = 3
BUSY = "busy"


class RequestMemory:
    """Every request id executed in the last ``window_ms``, at most ``capacity`` of them.

    An entry is ``[ticks, result, extra, persist, unix stamp]`` (the response is rebuilt from
    it: a few dozen bytes per id, so 256 ids fit an ESP32 heap).  When ``full()`` the node must not
    execute a new request, or it could no longer recognise that request's retry: it answers
    ``busy`` instead (shedding load, never executing twice).

    The ids live in a ring of ``capacity`` slots allocated once, at boot, while the heap is still
    in one piece.  A dict (or a list that grows and shrinks) asks for a new, larger contiguous
    block exactly when the node is busiest: 2.7 KB at the 128th id of a burst, which a fragmented
    heap cannot give, so every later command was answered "out of memory" until the window
    passed.  A lookup scans at most ``capacity`` ids, in C: microseconds, commands are rare.
    """

    def __init__(self, clock, capacity=REQUEST_MEMORY, window_s=REQUEST_WINDOW_S):
        self._clock = clock
        self.capacity = capacity
        self.window_ms = int(window_s * 1000)
        self._rids = [None] * capacity  # slot -> request id
        self._entries = [None] * capacity  # slot -> entry
        self._first = 0  # slot of the oldest id
        self._count = 0

    def _expire(self):
        clock = self._clock
        now = clock.ticks_ms()
        entries = self._entries
        while self._count:
            first = self._first
            age = clock.ticks_diff(now, entries[first][0])
            if 0 <= age <= self.window_ms:
                return
            self._rids[first] = None
            entries[first] = None
            self._first = (first + 1) % self.capacity
            self._count -= 1

    def _find(self, rid):
        # Two scans rather than index() in a try: a raised ValueError allocates on MicroPython.
        rids = self._rids
        return rids.index(rid) if rid in rids else -1

    def _remove(self, slot):
        """Close the gap at ``slot``: the younger ids move one slot towards the oldest."""
        cap = self.capacity
        rids = self._rids
        entries = self._entries
        last = (self._first + self._count - 1) % cap
        while slot != last:
            after = (slot + 1) % cap
            rids[slot] = rids[after]
            entries[slot] = entries[after]
            slot = after
        rids[last] = None
        entries[last] = None
        self._count -= 1

    def get(self, rid):
        self._expire()
        slot = self._find(rid)
        return None if slot < 0 else self._entries[slot]

    def full(self):
        self._expire()
        return self._count >= self.capacity

    def size(self):
        self._expire()
        return self._count

    def add(self, rid, result, extra=None, persist=False, stamp=None):
        self._expire()
        slot = self._find(rid)
        if slot >= 0:
            self._remove(slot)
        entry = [self._clock.ticks_ms(), result, extra, persist, stamp]
        cap = self.capacity
        if self._count >= cap:  # the oldest id makes room
            self._rids[self._first] = None
            self._entries[self._first] = None
            self._first = (self._first + 1) % cap
            self._count -= 1
        slot = (self._first + self._count) % cap
        self._rids[slot] = rid
        self._entries[slot] = entry
        self._count += 1

    def forget(self, rid):
        slot = self._find(rid)
        if slot >= 0:
            self._remove(slot)

    def persisted(self, limit=PERSIST_LIMIT):
        """The newest ``limit`` state-changing entries, oldest first.  Collected from the newest
        end, so the list never holds more than ``limit`` (it is built at every save)."""
        out = []
        cap = self.capacity
        k = self._count
        while k and len(out) < limit:
            k -= 1
            slot = (self._first + k) % cap
            entry = self._entries[slot]
            if entry[3]:
                out.append([self._rids[slot], entry[1], entry[2]])
        out.reverse()
        return out


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
        self.announced = False  # the birth of the current connection is (being) published
        self.announces = 0  # connections that got as far as their birth, since boot
        self.stopping = False
        self.reading = {}
        self.uptime = Uptime(hal)
        self._rebirth_at = None
        self._warned = {}
        capacity = config.get("request_memory", REQUEST_MEMORY)
        self.memory = RequestMemory(hal, capacity)
        for entry in state.get("requests") or []:
            self._restore(entry)

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

    def _restore(self, entry):
        """A persisted request: ``[rid, result, extra]`` (or ``[rid, response]``, older)."""
        if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
            return
        if len(entry) == 2 and isinstance(entry[1], dict):
            if entry[1].get("status") == "success":
                self._remember(entry[0], entry[1], True)
        elif len(entry) == 3 and isinstance(entry[1], str):
            extra = entry[2] if isinstance(entry[2], dict) else None
            self.memory.add(entry[0], entry[1], extra, True)

    def state(self):
        requests = self.memory.persisted()
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
            self._warn("save", "node: saving state failed: {}".format(err), 5000)

    def energy_unsaved(self):
        return self.energy_uwh != self._saved_energy

    # ----------------------------------------------------------------- connection lifecycle

    def will(self):
        return (self.topic("status", "online"), protocol.encode(protocol.will()), 1, True)

    def birth(self):
        reason = "boot" if self.announces <= 1 else "reconnect"
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
        """A fresh connection: count it.  The app subscribes, sets ``announced`` and publishes
        birth and state, each message built just before it is queued (a state built earlier
        could go out stale)."""
        self.connects += 1
        self.connected = True
        self.announced = False

    def mark_announced(self):
        """Subscribed: the birth of this connection goes out now."""
        self.announced = True
        self.announces += 1

    def announce(self, rssi=None):
        """Birth first, then the retained state, then rssi (built now: the current truth)."""
        self.mark_announced()
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
        """Persist first, then switch: after a crash the stored state is the truth.  If the
        switch itself fails, the previous state is restored (and the error raised): what the
        node reports is always what the relay does."""
        on = bool(on)
        changed = on != self.relay
        before = (self.relay, self.relay_source)
        self.relay = on
        self.relay_source = source
        self.save_state()
        try:
            self.hal.relay_set(on)
        except BaseException:
            self.relay, self.relay_source = before
            self.save_state()
            raise
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
            if retain:
                # Commands are never retained (docs/protocol.md); a retained one would run
                # again at every fresh subscription.
                self._warn(
                    "retained", "node: ignored a retained command on {}".format(topic), 10000
                )
                return [], None
            return self.command(name, payload)
        return [], None

    def is_command(self, topic):
        return isinstance(topic, str) and topic.startswith(self.topic("command", ""))

    def refuse(self, topic, request_id, reason, log=True):
        """The answer to a command that could not be processed at all (too large, out of
        memory, a bug): an error response when the request id is known, else nothing."""
        parts = protocol.parse_topic(topic) if isinstance(topic, str) else None
        if parts is None or parts[0] != self.home_id or parts[1] != self.node_id:
            return []
        if parts[2] != "command" or not isinstance(request_id, str):
            return []
        if not 1 <= len(request_id) <= protocol.MAX_REQUEST_ID:
            return []
        hit = self.memory.get(request_id)
        if hit is not None:  # it was executed before the failure: that is the answer
            return [self._response(self._replay(request_id, hit), parts[3])]
        if log:
            self._warn(
                "refused", "node: command/{} {}: {}".format(parts[3], request_id, reason), 5000
            )
        resp = protocol.response(request_id, "error", error=reason, now=self.now())
        return [self._response(resp, parts[3])]

    def _warn(self, key, text, every_ms=60000):
        """Rate-limited log line (bad input must not flood the console)."""
        hal = self.hal
        now = hal.ticks_ms()
        last = self._warned.get(key)
        if last is None or not 0 <= hal.ticks_diff(now, last) < every_ms:
            self._warned[key] = now
            hal.log(text)

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
        if not self.announced:
            # Our previous connection's will, queued in the session and delivered while we
            # subscribe: the birth that follows the SUBACK overwrites it (docs/protocol.md).
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
            self._warn("bad", "node: bad command/{}: {} ({})".format(name, err.message, text), 5000)
            if err.request_id is None:
                return [], None
            resp = protocol.response(err.request_id, "error", error=err.message, now=self.now())
            return [self._response(resp, name)], None
        rid = cmd["request_id"]
        hit = self.memory.get(rid)
        if hit is not None:
            self._warn(
                "duplicate", "node: duplicate request {}, answering from memory".format(rid), 1000
            )
            return [self._response(self._replay(rid, hit), name)], None
        now = self.now()
        if protocol.from_future(cmd, now):
            resp = protocol.response(rid, "error", error="timestamp in the future", now=now)
            return [self._response(resp, name)], None
        if protocol.is_expired(cmd, now):
            resp = protocol.response(rid, "expired", error="command expired", now=now)
            return [self._response(resp, name)], None
        if name == "ota":
            return [], ("ota", cmd)  # homesync.ota answers on response/ota
        if self.memory.full():
            self._warn(
                "busy",
                "node: {} requests in {} s, answering busy".format(
                    self.memory.capacity, REQUEST_WINDOW_S
                ),
                5000,
            )
            resp = protocol.response(rid, "error", error=BUSY, now=now)
            return [self._response(resp, name)], None
        return self._execute(cmd, now)

    def _replay(self, rid, entry):
        """The stored answer again, with its original timestamp when it had one."""
        stamp = entry[4] if entry[4] is not None else self.now()
        return protocol.response(rid, "success", entry[1], now=stamp, extra=entry[2])

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
            try:
                changed = self.set_relay(target, "command")  # persists the memory entry too
            except Exception:
                self.memory.forget(rid)  # not executed: a retry may try again
                raise
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
        """Remember an executed request (only successes: errors and expiries are answered the
        same way again, so they need no memory)."""
        if resp.get("status") != "success":
            return
        extra = None
        for key in resp:
            if key not in ("request_id", "status", "result", "error", "timestamp"):
                if extra is None:
                    extra = {}
                extra[key] = resp[key]
        stamp = protocol.parse_iso(resp.get("timestamp")) if resp.get("timestamp") else None
        self.memory.add(rid, resp.get("result"), extra, persist, stamp)

    def cached(self, rid):
        """The response a retry of ``rid`` would get, or ``None``."""
        entry = self.memory.get(rid)
        return None if entry is None else self._replay(rid, entry)


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
