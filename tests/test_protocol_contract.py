"""One wire format: the firmware's and the integration's protocol modules agree.

Both sides keep their own copy (the firmware must run on MicroPython, the integration must not
import firmware code), so this test imports both and compares what both define: topics and
categories, identifier rules, command names and actions, payload keys (every payload the node
builds passes the integration's schema; every command the integration builds parses on the
node), metric names and units, and the size limits. docs/protocol.md is the written contract.
Anything only one side defines yet (a new status name, a new constant) is skipped, not failed,
until the other side adds it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from custom_components.heartbeat_iot.control import ACTIONS as SENDABLE
from custom_components.heartbeat_iot.homesync import protocol as ha
from custom_components.heartbeat_iot.homesync.commands import CommandManager
from custom_components.heartbeat_iot.homesync.protocol import Category

FIRMWARE_PROTOCOL = Path(__file__).parents[1] / "firmware" / "homesync" / "protocol.py"
NOW = 1_738_852_200.0  # 2025-02-06T14:30:00Z


def _load_firmware_protocol() -> ModuleType:
    """By path, under its own name: no firmware directory on sys.path for the other tests."""
    spec = importlib.util.spec_from_file_location("_firmware_protocol", FIRMWARE_PROTOCOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fw = _load_firmware_protocol()


# --- topics and identifiers -------------------------------------------------------------------


def test_topic_layout_and_categories() -> None:
    assert fw.PREFIX == ha.ROOT
    assert set(fw.CATEGORIES) == {category.value for category in Category}
    for category in Category:
        assert fw.topic("home1", "plug-1", category.value, "relay") == ha.build_topic(
            "home1", "plug-1", category, "relay"
        )


IDS = ["a", "A1", "plug_1", "plug-1", "0", "x" * 64, "x" * 65, "", "_a", "-a", "a/b", "a+", "ä"]
NAMES = ["power", "power_factor", "rssi", "a" * 32, "a" * 33, "Power", "", "a-b", "a b", "#"]


@pytest.mark.parametrize("value", IDS)
def test_identifier_rules_agree(value: str) -> None:
    assert fw.valid_id(value) == ha.is_valid_id(value)


@pytest.mark.parametrize("name", NAMES)
def test_topic_parsing_agrees(name: str) -> None:
    for node in IDS:
        topic = f"homesync/home1/nodes/{node}/telemetry/{name}"
        try:
            parsed = ha.parse_topic(topic)
        except ha.ProtocolError:
            assert fw.parse_topic(topic) is None, topic
        else:
            assert fw.parse_topic(topic) == (
                parsed.home_id,
                parsed.node_id,
                parsed.category.value,
                parsed.name,
            )


# --- commands ---------------------------------------------------------------------------------


def test_command_names_and_actions() -> None:
    assert set(fw.COMMANDS) == set(ha.COMMAND_ACTIONS)
    assert {k: tuple(v) for k, v in fw.ACTIONS.items()} == ha.COMMAND_ACTIONS
    # What Home Assistant lets a user send is a subset of what the node accepts.
    for command, actions in SENDABLE.items():
        assert set(actions) <= set(fw.ACTIONS[command])


def test_command_defaults() -> None:
    ttl = inspect.signature(CommandManager).parameters["command_ttl"].default
    assert ttl == fw.DEFAULT_TTL


PARAMS: dict[str, dict[str, Any]] = {"config": {"config": {"heartbeat_interval": 30}}}


@pytest.mark.parametrize(
    ("command", "action"),
    [(command, action) for command, actions in SENDABLE.items() for action in actions],
)
async def test_every_command_the_integration_sends_parses_on_the_node(
    command: str, action: str
) -> None:
    published: list[tuple[str, str]] = []
    manager: CommandManager

    async def publish(topic: str, payload: str) -> None:
        published.append((topic, payload))
        request_id = json.loads(payload)["request_id"]
        manager.handle_response("plug1", fw.response(request_id, "success", result=action))

    manager = CommandManager("home1", publish, clock=lambda: NOW)
    result = await asyncio.wait_for(
        manager.send("plug1", command, action, PARAMS.get(command)), timeout=10
    )
    assert result.status.value == "success"

    [(topic, payload)] = published
    assert fw.parse_topic(topic) == ("home1", "plug1", "command", command)
    assert len(payload.encode()) <= fw.MAX_COMMAND_BYTES
    parsed = fw.parse_command(command, payload)
    assert parsed["action"] == action
    assert parsed["request_id"] == result.request_id
    assert parsed["timestamp"] == NOW
    assert parsed["ttl"] == fw.DEFAULT_TTL
    if command == "config":
        assert parsed["config"] == PARAMS["config"]["config"]


# --- node -> HA payloads ----------------------------------------------------------------------

NODE_PAYLOADS: list[tuple[str, str, Any]] = [
    ("telemetry", "power", fw.telemetry("power", 125.5, NOW, quality=99)),
    ("telemetry", "energy", fw.telemetry("energy", 1.25)),
    ("status", "online", fw.online("boot", 0, "1.2.3", NOW)),
    ("status", "online", fw.offline("shutdown", NOW)),
    ("status", "online", fw.will()),
    ("status", "relay", fw.relay_status(True, "button", NOW)),
    ("status", "firmware", fw.firmware_status("1.2.3", NOW)),
    ("status", "rssi", fw.rssi(-61)),
    ("status", "heartbeat", fw.heartbeat(5, 3000, 30)),
    ("status", "heartbeat", fw.heartbeat(5, 3000, 30, relay=True, led="blink")),
    ("response", "command", fw.response("r1", "success", result="on", now=NOW)),
    ("response", "command", fw.response("r1", "error", error="busy")),
    ("response", "command", fw.response("r1", "expired")),
]
if hasattr(fw, "led_status"):
    NODE_PAYLOADS.append(("status", "led", fw.led_status("blink", "command", NOW)))


@pytest.mark.parametrize(
    ("category", "name", "payload"),
    NODE_PAYLOADS,
    ids=[f"{c}/{n}-{i}" for i, (c, n, _) in enumerate(NODE_PAYLOADS)],
)
def test_every_payload_the_node_builds_passes_the_integration(
    category: str, name: str, payload: Any
) -> None:
    topic = ha.parse_topic(fw.topic("home1", "plug1", category, name))
    schema = ha.schema_for(topic)
    if schema is None:
        pytest.skip(f"the integration does not interpret {category}/{name} yet")
    encoded = fw.encode(payload)
    assert len(encoded) <= ha.MAX_PAYLOAD_BYTES
    data = ha.validate(schema, ha.decode_payload(encoded))
    # No key is lost or renamed on the way: the schema keeps everything the node sent.
    assert set(payload) <= set(data)


def test_response_statuses() -> None:
    for status in ha.RESPONSE_STATUSES:
        ha.validate(ha.RESPONSE_SCHEMA, fw.response("r1", status))


# --- metrics and limits -----------------------------------------------------------------------


def test_metric_names_and_units() -> None:
    for key, unit in fw.METRIC_UNITS.items():
        assert key in ha.METRICS, key
        assert ha.METRICS[key].unit == unit, key
    assert set(fw.METRIC_DIGITS) == set(fw.METRIC_UNITS)


def test_telemetry_units_need_no_conversion() -> None:
    """What the node publishes is already in the integration's unit for every metric."""
    for key in fw.METRIC_UNITS:
        payload = fw.telemetry(key, 1.0)
        spec = ha.metric_spec(key, payload.get("unit"))
        assert ha.normalize_value(spec, payload["value"], payload.get("unit")) == 1.0


LIMITS = [
    ("MAX_PAYLOAD", "MAX_PAYLOAD_BYTES"),
    ("MAX_COMMAND_BYTES", "MAX_COMMAND_BYTES"),
    ("MAX_REQUEST_ID", "MAX_REQUEST_ID"),
]


@pytest.mark.parametrize(("firmware_name", "integration_name"), LIMITS)
def test_limits(firmware_name: str, integration_name: str) -> None:
    if not hasattr(fw, firmware_name) or not hasattr(ha, integration_name):
        pytest.skip(f"{firmware_name} / {integration_name} is defined on one side only")
    assert getattr(fw, firmware_name) == getattr(ha, integration_name)


def test_request_id_limit_is_what_the_schema_enforces() -> None:
    longest = "r" * ha.MAX_REQUEST_ID
    ha.validate(ha.RESPONSE_SCHEMA, fw.response(longest, "success"))
    with pytest.raises(ha.ProtocolError):
        ha.validate(ha.RESPONSE_SCHEMA, fw.response(longest + "r", "success"))
