"""Unit tests of the pure protocol module."""

from __future__ import annotations

import json

import pytest

from custom_components.heartbeat_iot.homesync.protocol import (
    HEARTBEAT_SCHEMA,
    MAX_PAYLOAD_BYTES,
    METRICS,
    ONLINE_SCHEMA,
    RELAY_SCHEMA,
    RESPONSE_SCHEMA,
    TELEMETRY_SCHEMA,
    Category,
    ProtocolError,
    Topic,
    build_topic,
    decode_payload,
    is_valid_id,
    metric_spec,
    normalize_value,
    parse_topic,
    subscription_topic,
    truncate,
    validate,
)


def test_parse_topic_ok() -> None:
    assert parse_topic("homesync/home-1/nodes/plug_2/telemetry/power") == Topic(
        "home-1", "plug_2", Category.TELEMETRY, "power"
    )


@pytest.mark.parametrize(
    "topic",
    [
        "homesync/h/nodes/n/telemetry",  # too few levels
        "homesync/h/nodes/n/telemetry/power/extra",  # extra level
        "homesync/h/nodes//telemetry/power",  # empty level
        "homesync/+/nodes/n/telemetry/power",
        "homesync/h/nodes/#/telemetry/power",
        "homesync/h/devices/n/telemetry/power",
        "other/h/nodes/n/telemetry/power",
        "homesync/h/nodes/n/weather/power",  # unknown category
        "homesync/h/nodes/n/telemetry/Power",  # names are lower case
        "homesync/h/nodes/-n/telemetry/power",  # ids start alphanumeric
        "homesync/h/nodes/" + "n" * 65 + "/telemetry/power",
        "homesync/h/nodes/n/telemetry/" + "p" * 33,
    ],
)
def test_parse_topic_rejects(topic: str) -> None:
    with pytest.raises(ProtocolError):
        parse_topic(topic)


def test_id_limits() -> None:
    assert is_valid_id("a" * 64)
    assert not is_valid_id("a" * 65)
    assert not is_valid_id("")
    assert not is_valid_id("a/b")


def test_build_topic_round_trip_and_refusal() -> None:
    built = build_topic("h", "n1", Category.COMMAND, "relay")
    assert built == "homesync/h/nodes/n1/command/relay"
    assert parse_topic(built).name == "relay"
    with pytest.raises(ProtocolError):
        build_topic("h", "n/1", Category.COMMAND, "relay")


def test_subscription_topic() -> None:
    assert subscription_topic("home1") == "homesync/home1/nodes/#"
    with pytest.raises(ProtocolError):
        subscription_topic("home+")


def test_decode_payload() -> None:
    assert decode_payload(b'{"value": 1}') == {"value": 1}
    assert decode_payload('{"value": 1}') == {"value": 1}
    for bad in (b"{", b"[1]", b"42", b"\xff\xfe", b""):
        with pytest.raises(ProtocolError) as err:
            decode_payload(bad)
        assert err.value.kind == "bad_json"
    big = json.dumps({"value": 1, "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    with pytest.raises(ProtocolError) as err:
        decode_payload(big)
    assert err.value.kind == "oversized"


def test_truncate() -> None:
    assert truncate(b"abc") == "abc"
    assert truncate("x" * 500, 10) == "x" * 10 + "…"


def test_telemetry_schema() -> None:
    assert validate(TELEMETRY_SCHEMA, {"value": 1, "unit": "W", "future": 1})["value"] == 1.0
    for bad in (
        {"unit": "W"},
        {"value": "12"},
        {"value": True},
        {"value": float("nan")},
        {"value": 1, "quality": 101},
    ):
        with pytest.raises(ProtocolError):
            validate(TELEMETRY_SCHEMA, bad)


def test_status_schemas() -> None:
    assert validate(ONLINE_SCHEMA, {"online": False, "reason": "shutdown"})["online"] is False
    with pytest.raises(ProtocolError):
        validate(ONLINE_SCHEMA, {"online": "yes"})
    with pytest.raises(ProtocolError):
        validate(RELAY_SCHEMA, {"state": "ON"})
    assert validate(HEARTBEAT_SCHEMA, {"seq": 0, "uptime": 5, "interval": 30})["seq"] == 0
    with pytest.raises(ProtocolError):
        validate(HEARTBEAT_SCHEMA, {"seq": -1, "uptime": 5})
    with pytest.raises(ProtocolError):
        validate(HEARTBEAT_SCHEMA, {"seq": 1.5, "uptime": 5})
    with pytest.raises(ProtocolError):
        validate(RESPONSE_SCHEMA, {"request_id": "", "status": "success"})


def test_catalogue() -> None:
    energy = METRICS["energy"]
    assert (energy.unit, energy.device_class, energy.state_class) == (
        "kWh",
        "energy",
        "total_increasing",
    )
    assert METRICS["rssi"].diagnostic
    assert METRICS["power_factor"].unit is None
    generic = metric_spec("co2", "ppm")
    assert (generic.unit, generic.device_class, generic.state_class) == ("ppm", None, "measurement")


def test_normalize_value() -> None:
    assert normalize_value(METRICS["energy"], 1500, "Wh") == pytest.approx(1.5)
    assert normalize_value(METRICS["power"], 2, "kW") == 2000
    assert normalize_value(METRICS["power"], 2, None) == 2
    assert normalize_value(METRICS["power_factor"], 0.9, "") == 0.9
    with pytest.raises(ProtocolError) as err:
        normalize_value(METRICS["power"], 1, "dBm")
    assert err.value.kind == "bad_unit"
