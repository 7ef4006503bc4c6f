"""Node logic: commands, idempotency, expiry, config, heartbeat, rebirth (both runtimes)."""

import json

from fakes import UNIX_NOW, FakeHAL, parsed

from homesync import protocol
from homesync.node import REQUEST_MEMORY, Node, RequestMemory

CONFIG = {"home_id": "home1", "node_id": "plug-1", "heartbeat_interval": 30}
BASE = "homesync/home1/nodes/plug-1/"


def make(hal=None, state=None, config=None):
    hal = hal or FakeHAL()
    cfg = {}
    for key in config or CONFIG:
        cfg[key] = (config or CONFIG)[key]
    node = Node(hal, cfg, state if state is not None else hal.load_state(), "1.2.3")
    node.boot()
    return node, hal


def cmd(name, action, rid, **extra):
    body = {"action": action, "request_id": rid}
    for key, value in extra.items():
        body[key] = value
    return BASE + "command/" + name, protocol.encode(body)


def by_topic(msgs):
    out = {}
    for msg in msgs:
        topic, obj, qos, retain = parsed(msg)
        out[topic[len(BASE) :]] = (obj, qos, retain)
    return out


def test_boot_restores_relay_and_creates_stable_client_id():
    hal = FakeHAL()
    hal.state = {"relay": True}
    node, hal = make(hal)
    assert hal.relay is True
    assert node.client_id() == "homesync_home1_plug-1_c0ffee"
    assert hal.state["client_suffix"] == "c0ffee"
    hal.random_hex = lambda n: "ffffff"
    again, _ = make(hal)
    assert again.client_id() == "homesync_home1_plug-1_c0ffee"  # persisted, not regenerated


def test_relay_boot_modes():
    hal = FakeHAL()
    hal.state = {"relay": True}
    cfg = {"home_id": "h", "node_id": "n", "relay_boot": "off"}
    make(hal, config=cfg)
    assert hal.relay is False


def test_connect_messages_birth_first():
    node, _ = make()
    node.on_connected()
    msgs = node.announce(rssi=-70)
    topics = [m[0][len(BASE) :] for m in msgs]
    assert topics == [
        "status/online",
        "status/relay",
        "status/led",
        "status/firmware",
        "status/rssi",
    ]
    got = by_topic(msgs)
    obj, qos, retain = got["status/online"]
    assert obj["online"] is True
    assert obj["reason"] == "boot"
    assert obj["firmware"] == "1.2.3"
    assert obj["timestamp"] == protocol.iso_utc(UNIX_NOW)
    assert (qos, retain) == (1, True)
    assert got["status/relay"][0]["source"] == "boot"
    assert got["status/relay"][2] is True
    assert got["status/rssi"] == ({"value": -70, "unit": "dBm"}, 1, False)
    assert got["status/led"][0]["state"] == "off"  # follows the relay (off) by default
    assert got["status/led"][0]["source"] == "boot"
    assert got["status/led"][1:] == (1, True)
    node.on_connected()
    second = by_topic(node.announce())
    assert second["status/online"][0]["reason"] == "reconnect"


def test_will_and_shutdown():
    node, _ = make()
    topic, payload, qos, retain = node.will()
    assert topic == BASE + "status/online"
    assert json.loads(payload) == {"online": False, "reason": "unexpected_disconnect"}
    assert (qos, retain) == (1, True)
    obj = parsed(node.shutdown())[1]
    assert obj["online"] is False
    assert obj["reason"] == "shutdown"


def test_relay_command_executes_and_confirms():
    node, hal = make()
    out, follow = node.handle(*cmd("relay", "on", "r1"))
    assert follow is None
    got = by_topic(out)
    assert got["status/relay"][0]["state"] == "on"
    assert got["status/relay"][0]["source"] == "command"
    resp, qos, retain = got["response/command"]
    assert resp["request_id"] == "r1"
    assert resp["status"] == "success"
    assert resp["result"] == "on"
    assert (qos, retain) == (1, False)
    assert out[-1][0].endswith("response/command")  # state first, then the confirmation
    assert hal.relay is True
    assert hal.state["relay"] is True


def test_duplicate_request_id_is_not_executed_twice():
    node, hal = make()
    first, _ = node.handle(*cmd("relay", "toggle", "dup-1"))
    assert hal.relay is True
    changes = hal.relay_changes
    hal.unix += 5  # the retry comes later: it gets the stored answer, timestamp included
    out, _ = node.handle(*cmd("relay", "toggle", "dup-1"))
    assert out[-1] == first[-1]
    assert hal.relay is True  # a second toggle would have switched it off
    assert hal.relay_changes == changes
    got = by_topic(out)
    assert list(got) == ["response/command"]
    assert got["response/command"][0]["result"] == "on"


def test_cache_survives_reboot_via_persisted_state():
    node, hal = make()
    node.handle(*cmd("relay", "toggle", "before-crash"))
    assert hal.relay is True
    rebooted, hal2 = make(hal)
    changes = hal2.relay_changes
    out, _ = rebooted.handle(*cmd("relay", "toggle", "before-crash"))
    assert hal2.relay is True
    assert hal2.relay_changes == changes
    assert by_topic(out)["response/command"][0]["status"] == "success"


def test_expired_command_is_rejected_when_clock_synced():
    node, hal = make()
    stale = protocol.iso_utc(UNIX_NOW - 60)
    out, _ = node.handle(*cmd("relay", "on", "old", timestamp=stale, ttl=30))
    resp = by_topic(out)["response/command"][0]
    assert resp["status"] == "expired"
    assert hal.relay is False
    fresh = protocol.iso_utc(UNIX_NOW - 10)
    out, _ = node.handle(*cmd("relay", "on", "new", timestamp=fresh, ttl=30))
    assert by_topic(out)["response/command"][0]["status"] == "success"


def test_no_expiry_without_synced_clock():
    hal = FakeHAL(synced=False)
    node, hal = make(hal)
    stale = protocol.iso_utc(UNIX_NOW - 3600)
    out, _ = node.handle(*cmd("relay", "on", "old", timestamp=stale))
    resp = by_topic(out)["response/command"][0]
    assert resp["status"] == "success"
    assert "timestamp" not in resp  # no timestamps from an unsynced clock


def test_bad_input_never_crashes():
    node, hal = make()
    out, _ = node.handle(BASE + "command/relay", b"{garbage")
    assert out == []
    out, _ = node.handle(BASE + "command/relay", b'{"action": "on"}')
    assert out == []
    out, _ = node.handle(*cmd("relay", "explode", "e1"))
    resp = by_topic(out)["response/command"][0]
    assert resp["status"] == "error"
    assert "explode" in resp["error"]
    out, _ = node.handle(*cmd("teleport", "on", "e2"))
    assert by_topic(out)["response/command"][0]["status"] == "error"
    out, _ = node.handle("homesync/home1/nodes/other/command/relay", b"{}")
    assert out == []
    out, _ = node.handle("random/topic", b"\x00\xff")
    assert out == []
    assert hal.relay is False


def test_led_command():
    node, hal = make()
    out, _ = node.handle(*cmd("led", "blink", "l1"))
    assert by_topic(out)["response/command"][0]["result"] == "blink"
    assert node.led_level(True) is True
    assert node.led_level(False) is False
    node.handle(*cmd("led", "on", "l2"))
    assert hal.led is True


def test_config_command_applies_and_persists():
    node, hal = make()
    topic, payload = cmd("config", "set", "c1", config={"heartbeat_interval": 5})
    out, follow = node.handle(topic, payload)
    resp = by_topic(out)["response/command"][0]
    assert resp["status"] == "success"
    assert resp["config"]["heartbeat_interval"] == 5
    assert follow == ("config", {"heartbeat_interval": 5})
    assert node.heartbeat_interval == 5
    assert hal.config["heartbeat_interval"] == 5
    assert parsed(node.heartbeat())[1]["interval"] == 5


def test_ota_is_handed_to_the_ota_agent_and_answered_on_response_ota():
    # The update itself runs in homesync/ota.py (test_ota.py); the node only validates it.
    node, _ = make()
    body = {"url": "http://127.0.0.1:1/fw", "version": "2.0.0", "sha256": "00" * 32, "size": 9}
    topic, payload = cmd("ota", "update", "o1", **body)
    out, follow = node.handle(topic, payload)
    assert out == []
    assert follow[0] == "ota"
    assert follow[1]["size"] == 9
    topic, payload = cmd("ota", "update", "o2", url="ftp://x", version="2", sha256="0" * 64)
    out, follow = node.handle(topic, payload)
    assert follow is None
    assert by_topic(out)["response/ota"][0]["status"] == "error"
    stale = protocol.iso_utc(UNIX_NOW - 120)
    topic, payload = cmd("ota", "update", "o3", timestamp=stale, ttl=60, **body)
    out, follow = node.handle(topic, payload)
    assert follow is None
    assert by_topic(out)["response/ota"][0]["status"] == "expired"


def test_heartbeat_sequence_starts_at_zero():
    node, hal = make()
    first = parsed(node.heartbeat())
    assert first[0] == BASE + "status/heartbeat"
    assert first[1] == {"seq": 0, "uptime": 0, "interval": 30, "relay": "off", "led": "off"}
    # QoS 1, not retained: a loaded broker drops QoS 0 first (docs/protocol.md, issue 16 #9).
    assert (first[2], first[3]) == (1, False)
    hal.clock.advance(30000)
    assert parsed(node.heartbeat())[1]["seq"] == 1
    assert parsed(node.heartbeat())[1]["uptime"] == 30


def test_telemetry_messages():
    node, _ = make()
    node.update_reading({"power": 125.54, "voltage": 230.04, "bad key": 1}, energy_wh=1500.0)
    got = by_topic(node.telemetry())
    assert got["telemetry/power"][0]["value"] == 125.5
    assert got["telemetry/power"][0]["unit"] == "W"
    assert got["telemetry/energy"][0]["value"] == 1.5
    assert got["telemetry/energy"][0]["unit"] == "kWh"
    assert got["telemetry/power"][1:] == (0, False)
    assert len(got) == 3  # the invalid metric name is not published


def test_unmeasurable_readings_are_published_as_null_with_a_reason():
    """A standby load below the meter's current floor: no current, no power factor."""
    node, _ = make()
    node.update_reading({"power": 8.4, "current": None, "power_factor": None})
    got = by_topic(node.telemetry())
    assert got["telemetry/power"][0]["value"] == 8.4
    assert got["telemetry/current"][0]["value"] is None
    assert got["telemetry/current"][0]["reason"] == "below_range"
    assert got["telemetry/current"][0]["unit"] == "A"
    assert got["telemetry/power_factor"][0]["value"] is None
    node.update_reading({"power": 0.0, "current": 0.0, "power_factor": None})
    got = by_topic(node.telemetry())
    assert got["telemetry/current"][0]["value"] == 0.0
    assert got["telemetry/power_factor"][0]["reason"] == "no_load"


def test_energy_is_integer_micro_wh():
    node, _ = make()
    for _ in range(1000):
        node.update_reading({}, energy_wh=0.001)
    assert node.energy_uwh == 1000000
    assert node.energy_unsaved()
    node.save_state()
    assert not node.energy_unsaved()


def test_button_toggles_with_source():
    node, hal = make()
    got = by_topic(node.button())
    assert got["status/relay"][0] == {
        "state": "on",
        "source": "button",
        "timestamp": protocol.iso_utc(UNIX_NOW),
    }
    assert hal.relay is True


def test_own_offline_while_connected_republishes_birth():
    node, hal = make()
    node.on_connected()
    will = protocol.encode(protocol.will())
    # Issue 15.8: the previous connection's will, queued in the session, arrives live while
    # we subscribe: the birth that follows overwrites it, no second birth needed.
    assert node.handle(BASE + "status/online", will)[0] == []
    node.mark_announced()
    will = protocol.encode(protocol.will())
    out, _ = node.handle(BASE + "status/online", will)
    assert len(out) == 1
    assert parsed(out[0])[1]["online"] is True
    out, _ = node.handle(BASE + "status/online", will)
    assert out == []  # rate limited
    hal.clock.advance(1500)
    assert len(node.handle(BASE + "status/online", will)[0]) == 1
    hal.clock.advance(1500)
    online = protocol.encode(protocol.online("boot", 1, "1.2.3"))
    assert node.handle(BASE + "status/online", online)[0] == []
    node.stopping = True
    assert node.handle(BASE + "status/online", will)[0] == []


def test_retained_own_offline_is_not_a_trigger():
    node, _ = make()
    node.on_connected()
    node.mark_announced()
    will = protocol.encode(protocol.will())
    assert node.handle(BASE + "status/online", will, retain=True)[0] == []


def test_own_offline_ignored_when_not_connected():
    node, _ = make()
    will = protocol.encode(protocol.will())
    assert node.handle(BASE + "status/online", will)[0] == []


def test_led_state_published_retained_on_change():
    node, hal = make()
    out, _ = node.handle(*cmd("relay", "on", "r-led"))
    got = by_topic(out)
    assert got["status/led"] == (
        {"state": "on", "source": "relay", "timestamp": protocol.iso_utc(UNIX_NOW)},
        1,
        True,
    )
    out, _ = node.handle(*cmd("led", "blink", "l-led"))
    got = by_topic(out)
    assert got["status/led"][0]["state"] == "blink"
    assert got["status/led"][0]["source"] == "command"
    assert [m[0][len(BASE) :] for m in out][-1] == "response/command"
    out, _ = node.handle(*cmd("relay", "off", "r-led2"))
    assert "status/led" not in by_topic(out)  # blinking: the relay no longer drives the LED
    got = by_topic(node.button())
    assert "status/led" not in got


def test_heartbeat_carries_relay_and_led():
    node, _ = make()
    assert parsed(node.heartbeat())[1]["relay"] == "off"
    node.handle(*cmd("relay", "on", "hb-1"))
    beat = parsed(node.heartbeat())[1]
    assert beat["relay"] == "on"
    assert beat["led"] == "on"
    node.handle(*cmd("led", "blink", "hb-2"))
    assert parsed(node.heartbeat())[1]["led"] == "blink"


def test_rssi_change_of_3_db_is_news():
    node, _ = make()
    assert node.rssi_changed(-60)  # nothing published yet
    node.rssi_msg(-60)
    assert not node.rssi_changed(-62)
    assert not node.rssi_changed(-58)
    assert node.rssi_changed(-63)
    assert node.rssi_changed(-57)
    assert not node.rssi_changed(None)


def test_hub_announcement_asks_for_reannounce():
    node, _ = make()
    topic = "homesync/home1/hub/status"
    assert (topic, 1) in node.subscriptions()
    assert node.handle(topic, b'{"online": true}') == ([], ("announce", None))
    assert node.handle(topic, b'{"online": true}', retain=True) == ([], None)
    assert node.handle(topic, b'{"online": false}') == ([], None)
    assert node.handle(topic, b"garbage") == ([], None)
    assert node.handle("homesync/other/hub/status", b'{"online": true}') == ([], None)


# --------------------------------------------------------------------------- issue 15 defects


def test_request_ids_remembered_for_120_s_and_overload_answered_busy():
    """A retry may come ~30 s after the first attempt: every id executed in the last 120 s is
    remembered (at least 256); beyond that the node sheds load instead of forgetting."""
    node, hal = make()
    statuses = []
    for i in range(300):
        out, _ = node.handle(*cmd("relay", "toggle", "b{}".format(i)))
        statuses.append(by_topic(out)["response/command"][0])
    executed = [r for r in statuses if r["status"] == "success"]
    assert len(executed) == REQUEST_MEMORY
    busy = statuses[REQUEST_MEMORY:]
    assert {(r["status"], r["error"]) for r in busy} == {("error", "busy")}
    changes = hal.relay_changes
    out, _ = node.handle(*cmd("relay", "toggle", "b0"))  # the retry of the oldest
    assert hal.relay_changes == changes  # not executed twice
    assert by_topic(out)["response/command"][0]["result"] == statuses[0]["result"]
    hal.clock.advance(121000)  # the window passed: room again, old ids forgotten
    out, _ = node.handle(*cmd("relay", "toggle", "b299"))
    assert by_topic(out)["response/command"][0]["status"] == "success"
    assert hal.relay_changes == changes + 1
    assert node.memory.size() == 1  # bounded: the expired ones were let go


def test_request_memory_ring_keeps_the_same_ids_as_an_ordered_list():
    """The fixed ring (no allocation that grows with a burst) remembers, expires, replaces,
    forgets and evicts exactly like the ordered list it replaced, over a long pseudo-random run
    that wraps the ring many times."""
    hal = FakeHAL()
    memory = RequestMemory(hal, capacity=8, window_s=1)
    model = []  # [rid, ticks, result], oldest first: the reference
    seed = 12345
    for step in range(3000):
        seed = (seed * 1103515245 + 12345) % 2147483648
        op = seed % 7
        rid = "r{}".format((seed >> 8) % 12)
        now = hal.clock.ticks_ms()
        model = [m for m in model if 0 <= hal.ticks_diff(now, m[1]) <= 1000]
        if op <= 2:
            memory.add(rid, "res{}".format(step), persist=op == 0)
            model = [m for m in model if m[0] != rid]
            model.append([rid, now, "res{}".format(step), op == 0])
            model = model[-8:]
        elif op == 3:
            memory.forget(rid)
            model = [m for m in model if m[0] != rid]
        elif op == 4:
            hal.clock.advance((seed >> 4) % 300)
            continue
        entry = memory.get(rid)
        expected = [m for m in model if m[0] == rid]
        assert (entry[1] if entry else None) == (expected[0][2] if expected else None), step
        assert memory.size() == len(model), step
        assert memory.full() == (len(model) >= 8), step
        kept = [[m[0], m[2], None] for m in model if m[3]]
        assert memory.persisted(limit=3) == kept[-3:], step


def test_retained_command_is_never_executed():
    node, hal = make()
    out, follow = node.handle(*cmd("relay", "on", "ret-1"), retain=True)
    assert (out, follow) == ([], None)
    assert hal.relay is False
    assert any("retained" in line for line in hal.logs)


def test_far_future_timestamp_and_huge_ttl_do_not_live_forever():
    node, hal = make()
    out, _ = node.handle(*cmd("relay", "on", "fut", timestamp="9999-12-31T23:59:59Z"))
    resp = by_topic(out)["response/command"][0]
    assert resp["status"] == "error"
    assert "future" in resp["error"]
    assert hal.relay is False
    topic = BASE + "command/relay"
    stale = protocol.iso_utc(UNIX_NOW - 600)
    body = '{"action": "on", "request_id": "ttl", "timestamp": "' + stale + '", "ttl": 1'
    out, _ = node.handle(topic, (body + "0" * 400 + "}").encode())
    assert by_topic(out)["response/command"][0]["status"] == "expired"
    assert hal.relay is False


def test_unprocessable_commands_answered_with_error_when_id_readable():
    node, hal = make()
    topic = BASE + "command/relay"
    deep = b'{"request_id": "deep", "action": "on", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    resp = by_topic(node.handle(topic, deep)[0])["response/command"][0]
    assert (resp["request_id"], resp["status"]) == ("deep", "error")
    big = b'{"request_id": "big", "action": "on", "pad": "' + b"x" * 5000 + b'"}'
    resp = by_topic(node.handle(topic, big)[0])["response/command"][0]
    assert (resp["request_id"], resp["status"]) == ("big", "error")
    assert "too large" in resp["error"]
    resp = by_topic(node.handle(topic, b'{"request_id": "half", "act')[0])["response/command"][0]
    assert (resp["request_id"], resp["status"]) == ("half", "error")
    out = node.refuse(topic, "gone", "out of memory")
    assert by_topic(out)["response/command"][0]["error"] == "out of memory"
    assert node.refuse(BASE + "status/online", "x", "too large") == []  # not a command
    assert hal.relay is False
