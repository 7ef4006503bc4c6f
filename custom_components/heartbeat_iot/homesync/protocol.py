"""HomeSync MQTT protocol v1: topics, payload schemas and the metric catalogue.

Pure module (no Home Assistant import) so it can be tested and reused on its own.
docs/protocol.md is the written contract; the firmware's side is firmware/homesync/protocol.py
and tests/test_protocol_contract.py checks that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
import json
import math
import re
from typing import Any, Final

import voluptuous as vol

try:  # orjson is what Home Assistant itself uses; fall back for plain environments.
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    _DECODE_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - orjson ships with Home Assistant

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    _DECODE_ERRORS = (ValueError, UnicodeDecodeError)

ROOT: Final = "homesync"
NODES: Final = "nodes"
MAX_PAYLOAD_BYTES: Final = 64 * 1024  # node -> HA payloads
# A command payload (the JSON bytes) is at most this long (docs/protocol.md "Size limits").
MAX_COMMAND_BYTES: Final = 4096
MAX_REQUEST_ID: Final = 64
MIN_QUALITY: Final = 50

# Every command a node understands, with its actions (HA lets users send all but ota).
COMMAND_ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    "relay": ("on", "off", "toggle"),
    "led": ("on", "off", "blink"),
    "config": ("set",),
    "ota": ("update",),
}
RESPONSE_STATUSES: Final = ("success", "error", "expired")

ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_PATTERN: Final = re.compile(r"^[a-z0-9_]{1,32}$")


class ProtocolError(ValueError):
    """Input that breaks the protocol contract; `kind` groups it for rate-limited logging."""

    def __init__(self, kind: str, message: str) -> None:
        """Store the kind next to the message."""
        super().__init__(message)
        self.kind = kind


class Category(StrEnum):
    """Topic categories."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    COMMAND = "command"
    RESPONSE = "response"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed HomeSync topic."""

    home_id: str
    node_id: str
    category: Category
    name: str


def is_valid_id(value: str) -> bool:
    """Return True for a valid home or node id."""
    return ID_PATTERN.fullmatch(value) is not None


def parse_topic(topic: str) -> Topic:
    """Parse `homesync/{home}/nodes/{node}/{category}/{name}`; raise ProtocolError otherwise."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != ROOT or parts[2] != NODES:
        raise ProtocolError("bad_topic", f"not a HomeSync topic: {topic!r}")
    _, home_id, _, node_id, category, name = parts
    if not is_valid_id(home_id):
        raise ProtocolError("bad_id", f"invalid home id in {topic!r}")
    if not is_valid_id(node_id):
        raise ProtocolError("bad_id", f"invalid node id in {topic!r}")
    try:
        cat = Category(category)
    except ValueError as err:
        raise ProtocolError("bad_topic", f"unknown category in {topic!r}") from err
    if NAME_PATTERN.fullmatch(name) is None:
        raise ProtocolError("bad_topic", f"invalid name in {topic!r}")
    return Topic(home_id, node_id, cat, name)


def build_topic(home_id: str, node_id: str, category: Category, name: str) -> str:
    """Build a topic, refusing anything parse_topic would reject."""
    topic = f"{ROOT}/{home_id}/{NODES}/{node_id}/{category}/{name}"
    parse_topic(topic)
    return topic


def subscription_topic(home_id: str) -> str:
    """The one wildcard subscription a home needs (extra levels are rejected after parsing)."""
    if not is_valid_id(home_id):
        raise ProtocolError("bad_id", f"invalid home id {home_id!r}")
    return f"{ROOT}/{home_id}/{NODES}/#"


DISCOVERY_TOPIC: Final = f"{ROOT}/+/{NODES}/+/status/online"

# The integration's own announcement (docs/protocol.md, hub announcement): nodes answer it by
# re-publishing their state, so nothing depends on the broker delivering retained messages.
HUB_ONLINE_PAYLOAD: Final = '{"online": true}'


def hub_status_topic(home_id: str) -> str:
    """`homesync/{home_id}/hub/status`, outside the nodes' subtree we subscribe to."""
    if not is_valid_id(home_id):
        raise ProtocolError("bad_id", f"invalid home id {home_id!r}")
    return f"{ROOT}/{home_id}/hub/status"


def decode_payload(payload: str | bytes | bytearray) -> dict[str, Any]:
    """Decode a payload into a JSON object, enforcing the 64 KiB limit."""
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"payload of {len(data)} bytes exceeds 64 KiB")
    try:
        value = _loads(data)
    except _DECODE_ERRORS as err:
        raise ProtocolError("bad_json", f"malformed JSON ({err})") from err
    if not isinstance(value, dict):
        raise ProtocolError("bad_json", "payload is not a JSON object")
    return value


def truncate(payload: str | bytes | bytearray, limit: int = 120) -> str:
    """A short printable excerpt of a payload for log lines."""
    text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


def _number(value: Any) -> float:
    """A finite JSON number; booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise vol.Invalid("expected a number")
    if not math.isfinite(value):
        raise vol.Invalid("expected a finite number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise vol.Invalid("expected an integer")
    return int(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise vol.Invalid("expected true or false")
    return value


_TEXT = vol.All(str, vol.Length(max=256))
_TIMESTAMP = vol.All(str, vol.Length(max=64))
_OPTIONAL_COMMON: dict[vol.Marker, Any] = {vol.Optional("timestamp"): _TIMESTAMP}

TELEMETRY_SCHEMA: Final = vol.Schema(
    {
        # null: the meter cannot measure it now ("reason" says why, e.g. below_range).
        vol.Required("value"): vol.Any(None, _number),
        vol.Optional("reason"): vol.All(str, vol.Length(max=64)),
        vol.Optional("unit"): vol.All(str, vol.Length(max=16)),
        vol.Optional("quality"): vol.All(_number, vol.Range(min=0, max=100)),
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
ONLINE_SCHEMA: Final = vol.Schema(
    {
        vol.Required("online"): _boolean,
        vol.Optional("reason"): _TEXT,
        vol.Optional("uptime"): vol.All(_integer, vol.Range(min=0)),
        vol.Optional("firmware"): _TEXT,
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
RELAY_STATES: Final = ("on", "off")
LED_STATES: Final = ("on", "off", "blink")
RELAY_SCHEMA: Final = vol.Schema(
    {
        vol.Required("state"): vol.In(RELAY_STATES),
        vol.Optional("source"): _TEXT,
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
LED_SCHEMA: Final = vol.Schema(
    {
        vol.Required("state"): vol.In(LED_STATES),
        vol.Optional("source"): _TEXT,
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
FIRMWARE_SCHEMA: Final = vol.Schema(
    {vol.Required("version"): _TEXT, **_OPTIONAL_COMMON}, extra=vol.ALLOW_EXTRA
)
RSSI_SCHEMA: Final = vol.Schema(
    {vol.Required("value"): _number, vol.Optional("unit"): _TEXT, **_OPTIONAL_COMMON},
    extra=vol.ALLOW_EXTRA,
)
HEARTBEAT_SCHEMA: Final = vol.Schema(
    {
        vol.Required("seq"): vol.All(_integer, vol.Range(min=0)),
        vol.Required("uptime"): vol.All(_integer, vol.Range(min=0)),
        vol.Optional("interval"): vol.All(_number, vol.Range(min=1, max=86400)),
        # The node's current outputs, so state never depends on retained delivery.
        vol.Optional("relay"): vol.In(RELAY_STATES),
        vol.Optional("led"): vol.In(LED_STATES),
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
REQUEST_ID: Final = vol.All(str, vol.Length(min=1, max=MAX_REQUEST_ID))
RESPONSE_SCHEMA: Final = vol.Schema(
    {
        vol.Required("request_id"): REQUEST_ID,
        vol.Required("status"): vol.In(RESPONSE_STATUSES),
        vol.Optional("result"): vol.Any(None, _TEXT),
        vol.Optional("error"): vol.Any(None, _TEXT),
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)

STATUS_SCHEMAS: Final[dict[str, vol.Schema]] = {
    "online": ONLINE_SCHEMA,
    "relay": RELAY_SCHEMA,
    "led": LED_SCHEMA,
    "firmware": FIRMWARE_SCHEMA,
    "rssi": RSSI_SCHEMA,
    "heartbeat": HEARTBEAT_SCHEMA,
}
RESPONSE_SCHEMAS: Final[dict[str, vol.Schema]] = {"command": RESPONSE_SCHEMA}


def schema_for(topic: Topic) -> vol.Schema | None:
    """The payload schema of a topic (None: a name we do not interpret, e.g. response/ota)."""
    if topic.category is Category.TELEMETRY:
        return TELEMETRY_SCHEMA
    if topic.category is Category.STATUS:
        return STATUS_SCHEMAS.get(topic.name)
    if topic.category is Category.RESPONSE:
        return RESPONSE_SCHEMAS.get(topic.name)
    return None


def validate(schema: vol.Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate against a schema, turning voluptuous errors into ProtocolError."""
    try:
        result: dict[str, Any] = schema(dict(data))
    except vol.Invalid as err:
        raise ProtocolError("bad_payload", f"invalid payload: {err}") from err
    return result


# --- metric catalogue ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """How one telemetry metric appears in Home Assistant.

    device_class / state_class hold Home Assistant's enum *values* so this module stays free
    of Home Assistant imports; the sensor platform turns them into the enums.
    """

    key: str
    unit: str | None
    device_class: str | None
    state_class: str | None = "measurement"
    precision: int | None = None
    diagnostic: bool = False
    # Payload units we convert into `unit` (factor to multiply by); anything else is rejected.
    conversions: tuple[tuple[str, float], ...] = ()


METRICS: Final[dict[str, MetricSpec]] = {
    spec.key: spec
    for spec in (
        MetricSpec("power", "W", "power", precision=1, conversions=(("kW", 1000.0),)),
        MetricSpec("voltage", "V", "voltage", precision=1, conversions=(("mV", 0.001),)),
        MetricSpec("current", "A", "current", precision=3, conversions=(("mA", 0.001),)),
        MetricSpec(
            "energy",
            "kWh",
            "energy",
            "total_increasing",
            precision=3,
            conversions=(("Wh", 0.001), ("MWh", 1000.0)),
        ),
        MetricSpec("power_factor", None, "power_factor", precision=2, conversions=(("%", 0.01),)),
        MetricSpec("frequency", "Hz", "frequency", precision=2),
        MetricSpec("temperature", "°C", "temperature", precision=1, conversions=(("C", 1.0),)),
        MetricSpec("rssi", "dBm", "signal_strength", precision=0, diagnostic=True),
    )
}


def generic_metric(key: str, unit: str | None) -> MetricSpec:
    """A metric we have no catalogue entry for: a plain measurement in the payload's unit."""
    return MetricSpec(key, unit or None, None)


def metric_spec(key: str, unit: str | None) -> MetricSpec:
    """The catalogue entry for a metric, or a generic one."""
    return METRICS.get(key) or generic_metric(key, unit)


def normalize_value(spec: MetricSpec, value: float, unit: str | None) -> float:
    """Convert a reading into the metric's unit; raise ProtocolError for an unknown unit."""
    if unit is None or unit == spec.unit or (spec.unit is None and unit == ""):
        return value
    for other, factor in spec.conversions:
        if unit == other:
            return value * factor
    raise ProtocolError(
        "bad_unit", f"unit {unit!r} is not usable for {spec.key} (expected {spec.unit!r})"
    )
