"""Topics, payloads, ISO time and command validation (both runtimes)."""

import json

from fakes import raises

from homesync import protocol


def test_valid_ids():
    assert protocol.valid_id("home1")
    assert protocol.valid_id("a")
    assert protocol.valid_id("Plug_01-x")
    assert protocol.valid_id("x" * 64)
    for bad in ("", "-x", "_x", "a/b", "a+b", "a#", "x" * 65, "é", None, 5):
        assert not protocol.valid_id(bad), bad


def test_valid_names():
    assert protocol.valid_name("power_factor")
    for bad in ("", "Power", "a-b", "x" * 33, "+", None):
        assert not protocol.valid_name(bad), bad


def test_topic_round_trip():
    t = protocol.topic("home1", "plug-1", "telemetry", "power")
    assert t == "homesync/home1/nodes/plug-1/telemetry/power"
    assert protocol.parse_topic(t) == ("home1", "plug-1", "telemetry", "power")


def test_parse_topic_rejects_off_contract():
    for bad in (
        "homesync/home1/nodes/plug-1/telemetry",
        "homesync/home1/nodes/plug-1/telemetry/power/extra",
        "homesync/home1/devices/plug-1/telemetry/power",
        "other/home1/nodes/plug-1/telemetry/power",
        "homesync/home1/nodes/plug-1/bogus/power",
        "homesync/home1/nodes//telemetry/power",
        "homesync/+/nodes/plug-1/telemetry/power",
        "homesync/home1/nodes/plug-1/command/+",
        "homesync/home1/nodes/plug-1/telemetry/Power",
    ):
        assert protocol.parse_topic(bad) is None, bad


def test_iso_round_trip():
    assert protocol.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert protocol.iso_utc(1738852200) == "2025-02-06T14:30:00Z"
    assert protocol.iso_utc(951782400) == "2000-02-29T00:00:00Z"
    assert protocol.iso_utc(4102444799) == "2099-12-31T23:59:59Z"
    for value in (0, 951782400, 1738852200, 1709164800, 4102444799):
        assert protocol.parse_iso(protocol.iso_utc(value)) == value


def test_parse_iso_variants():
    base = 1738852200
    assert protocol.parse_iso("2025-02-06T14:30:00Z") == base
    assert protocol.parse_iso("2025-02-06T14:30:00.123456Z") == base
    assert protocol.parse_iso("2025-02-06T14:30:00+00:00") == base
    assert protocol.parse_iso("2025-02-06T15:30:00+01:00") == base
    assert protocol.parse_iso("2025-02-06T09:30:00-05:00") == base
    assert protocol.parse_iso("2025-02-06 14:30:00") == base
    for bad in ("", "2025-02-06", "2025-13-06T14:30:00Z", "2025-02-06T14:30:00Q", "x" * 25, 5):
        assert protocol.parse_iso(bad) is None, bad


def test_decode_rejects_bad_payloads():
    assert protocol.decode(b'{"a": 1}') == {"a": 1}
    for bad in (b"", b"{", b"[1, 2]", b"42", b'"x"', b"\xff\xfe", None, b"x" * 70000):
        raises(protocol.ProtocolError, protocol.decode, bad)


def test_telemetry_payload():
    obj = protocol.telemetry("power", 125.54, 1738852200)
    assert obj == {"value": 125.5, "unit": "W", "timestamp": "2025-02-06T14:30:00Z"}
    assert protocol.telemetry("power_factor", 0.934) == {"value": 0.93}
    assert protocol.telemetry("energy", 1.23456789)["value"] == 1.2346
    assert protocol.telemetry("power", float("nan")) is None
    assert protocol.telemetry("power", float("inf")) is None
    assert protocol.telemetry("power", True) is None
    assert protocol.telemetry("rssi_like", 3)["value"] == 3


def test_status_payloads():
    assert protocol.online("boot", 12, "1.2.3") == {
        "online": True,
        "reason": "boot",
        "uptime": 12,
        "firmware": "1.2.3",
    }
    assert protocol.will() == {"online": False, "reason": "unexpected_disconnect"}
    assert protocol.offline("shutdown", 0)["timestamp"] == "1970-01-01T00:00:00Z"
    assert protocol.relay_status(True, "button") == {"state": "on", "source": "button"}
    assert protocol.rssi(-61) == {"value": -61, "unit": "dBm"}
    assert protocol.heartbeat(3, 40, 30) == {"seq": 3, "uptime": 40, "interval": 30}
    beat = protocol.heartbeat(3, 40, 30, True, "blink")
    assert (beat["relay"], beat["led"]) == ("on", "blink")
    assert protocol.led_status("on", "relay") == {"state": "on", "source": "relay"}
    assert protocol.hub_topic("h1") == "homesync/h1/hub/status"
    assert protocol.MAX_COMMAND_BYTES == 4096
    resp = protocol.response("r1", "error", error="boom")
    assert resp == {"request_id": "r1", "status": "error", "error": "boom"}
    assert json.loads(protocol.encode(resp)) == resp


def test_parse_command_relay():
    payload = b'{"action": "on", "request_id": "r1", "timestamp": "2025-02-06T14:30:00Z", "ttl": 5}'
    cmd = protocol.parse_command("relay", payload)
    assert cmd["action"] == "on"
    assert cmd["request_id"] == "r1"
    assert cmd["timestamp"] == 1738852200
    assert cmd["ttl"] == 5
    cmd = protocol.parse_command("relay", b'{"action": "toggle", "request_id": "r2"}')
    assert cmd["timestamp"] is None
    assert cmd["ttl"] == protocol.DEFAULT_TTL


def test_parse_command_errors_carry_request_id_when_readable():
    err = raises(protocol.CommandError, protocol.parse_command, "relay", b"{not json")
    assert err.request_id is None
    err = raises(protocol.CommandError, protocol.parse_command, "relay", b'{"action": "on"}')
    assert err.request_id is None
    err = raises(
        protocol.CommandError, protocol.parse_command, "relay", b'{"action": "on", "request_id": 7}'
    )
    assert err.request_id is None
    long_id = protocol.encode({"action": "on", "request_id": "x" * 65})
    assert (
        raises(protocol.CommandError, protocol.parse_command, "relay", long_id).request_id is None
    )
    huge = protocol.encode({"action": "y" * 5000, "request_id": "r"})
    assert len(raises(protocol.CommandError, protocol.parse_command, "relay", huge).message) < 80
    cases = (
        ("relay", {"action": "dim"}),
        ("fan", {"action": "on"}),
        ("relay", {"action": "on", "timestamp": "yesterday"}),
        ("relay", {"action": "on", "ttl": -1}),
        ("relay", {"action": "on", "ttl": "30"}),
        ("config", {"action": "set"}),
        ("config", {"action": "set", "config": {"heartbeat_interval": 0}}),
        ("config", {"action": "set", "config": {"heartbeat_interval": 1.5}}),
        ("config", {"action": "set", "config": {"wifi_password": "x"}}),
        ("ota", {"action": "update", "url": "ftp://x", "version": "1", "sha256": "0" * 64}),
        ("ota", {"action": "update", "url": "http://x", "version": "1", "sha256": "z" * 64}),
    )
    for name, body in cases:
        body["request_id"] = "rid"
        err = raises(protocol.CommandError, protocol.parse_command, name, protocol.encode(body))
        assert err.request_id == "rid", (name, body)


def test_parse_command_config_and_ota():
    body = {"action": "set", "request_id": "c1", "config": {"heartbeat_interval": 5}}
    cmd = protocol.parse_command("config", protocol.encode(body))
    assert cmd["config"] == {"heartbeat_interval": 5}
    body = {
        "action": "update",
        "request_id": "o1",
        "url": "https://example.invalid/fw.bin",
        "version": "1.2.3",
        "sha256": "ab" * 32,
    }
    assert protocol.parse_command("ota", protocol.encode(body))["version"] == "1.2.3"


def test_expiry_rules():
    cmd = {"timestamp": 1000, "ttl": 30}
    assert not protocol.is_expired(cmd, 1030)
    assert protocol.is_expired(cmd, 1031)
    assert not protocol.is_expired(cmd, None)  # clock not synced: never expire
    assert not protocol.is_expired({"timestamp": None, "ttl": 30}, 99999)


def test_decode_refuses_deep_nesting_without_recursing():
    """A nested command must be refused before json.loads recurses (MemoryError on the ESP32,
    RecursionError on CPython): both escaped ``decode``."""
    deep = b'{"request_id": "deep", "a": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    err = raises(protocol.ProtocolError, protocol.decode, deep)
    assert "nested" in str(err)
    ok = b'{"a": {"b": [1, [2, {"c": "[[[[[[[[[[[[[[[[[[[[[["}]]}}'
    assert protocol.decode(ok)["a"]["b"][0] == 1  # brackets inside strings do not count
    err = raises(protocol.CommandError, protocol.parse_command, "relay", deep)
    assert err.request_id == "deep"  # still answerable


def test_sniff_request_id_from_raw_bytes():
    assert protocol.sniff_request_id(b'{"action": "on", "request_id": "r-1", "x": [') == "r-1"
    assert protocol.sniff_request_id(b'{"request_id":"a_b-9"}') == "a_b-9"
    assert protocol.sniff_request_id(b'{"request_id": 7}') is None
    assert protocol.sniff_request_id(b'{"request_id": "' + b"x" * 65 + b'"}') is None
    assert protocol.sniff_request_id(b'{"request_id": "unterminated') is None
    assert protocol.sniff_request_id(b"\xff\xfe") is None
    assert protocol.sniff_request_id(None) is None
    err = raises(protocol.CommandError, protocol.parse_command, "relay", b'{"request_id": "q", ')
    assert err.request_id == "q"  # unparseable, yet the id is readable: it gets an answer


def test_command_size_limit():
    body = {"action": "on", "request_id": "big", "pad": "x" * protocol.MAX_COMMAND_BYTES}
    err = raises(protocol.CommandError, protocol.parse_command, "relay", protocol.encode(body))
    assert err.request_id == "big"
    assert "4096" in err.message
    body["pad"] = "x" * (protocol.MAX_COMMAND_BYTES - 60)
    assert len(protocol.encode(body)) <= protocol.MAX_COMMAND_BYTES
    assert protocol.parse_command("relay", protocol.encode(body))["request_id"] == "big"


def test_ttl_and_timestamp_are_bounded():
    huge = b'{"action": "on", "request_id": "t", "ttl": 1' + b"0" * 400 + b"}"
    cmd = protocol.parse_command("relay", huge)
    assert cmd["ttl"] == protocol.MAX_TTL
    now = 1738852200
    cmd["timestamp"] = now - protocol.MAX_TTL - 1
    assert protocol.is_expired(cmd, now)  # 10**400 s no longer means "never"
    far = protocol.encode({"action": "on", "request_id": "f", "timestamp": "9999-12-31T23:59:59Z"})
    cmd = protocol.parse_command("relay", far)
    assert protocol.from_future(cmd, now)
    cmd["timestamp"] = now + 30  # small clock skew is tolerated
    assert not protocol.from_future(cmd, now)
    assert not protocol.from_future(cmd, None)  # unsynced: cannot judge
    inf = b'{"action": "on", "request_id": "i", "ttl": 1e400}'
    assert raises(protocol.CommandError, protocol.parse_command, "relay", inf).request_id == "i"
