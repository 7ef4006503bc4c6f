"""HomeSync MQTT protocol v1: topics, payload schemas and the metric catalogue.

Pure module (no Home Assistant import) so it can be tested and reused on its own.
docs/protocol.md is the written contract; the firmware's side is firmware/homesync/protocol.py
and tests/test_protocol_contract.py checks that both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
import json
import math
import re
from typing import Any, Final, NamedTuple

import voluptuous as vol

try:  # orjson is what Home Assistant itself uses; fall back for plain environments.
    import orjson

    # The C function itself, not a Python wrapper: one call less per message.
    _loads: Callable[[bytes], Any] = orjson.loads
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

# Bounds of every number a node may send (docs/protocol.md "Limits"): anything outside is
# rejected like a malformed payload, so nothing derived from it (last boot = now - uptime,
# converted readings, diagnostics) can overflow or leave the datetime range.
MAX_UPTIME: Final = 10 * 366 * 86400  # seconds: ten years of uptime
MAX_SEQ: Final = 2**53 - 1  # the largest integer every JSON implementation keeps exact
MAX_INTERVAL: Final = 86400  # seconds between heartbeats
MAX_REASON: Final = 64  # why a telemetry value is null ("below_range")
MAX_READING: Final = 1e15  # |value| of a reading (telemetry, rssi) in the payload's unit
# A command's `ttl` (seconds after its timestamp during which a node may still execute it).
MIN_COMMAND_TTL: Final = 1
MAX_COMMAND_TTL: Final = 86400

# The written rules for ids and names. parse_topic checks them with string methods (no regex on
# the hot path); tests/test_protocol_hostile.py proves both accept exactly the same strings.
ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_PATTERN: Final = re.compile(r"^[a-z0-9_]{1,32}$")
_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS: Final = _ALNUM + "_-"
_NAME_CHARS: Final = "abcdefghijklmnopqrstuvwxyz0123456789_"


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


_CATEGORIES: Final[dict[str, Category]] = {category.value: category for category in Category}


class Topic(NamedTuple):
    """A parsed HomeSync topic (a tuple: built per message, ~4x cheaper than a frozen dataclass)."""

    home_id: str
    node_id: str
    category: Category
    name: str


def is_valid_id(value: str) -> bool:
    """Return True for a valid home or node id (ID_PATTERN, without a regex).

    `str.strip(chars)` leaves nothing exactly when every character is one of `chars`.
    """
    return 0 < len(value) <= 64 and not value.strip(_ID_CHARS) and value[0] in _ALNUM


def is_valid_name(value: str) -> bool:
    """Return True for a valid metric / status / command name (NAME_PATTERN, without a regex)."""
    return 0 < len(value) <= 32 and not value.strip(_NAME_CHARS)


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
    if (cat := _CATEGORIES.get(category)) is None:
        raise ProtocolError("bad_topic", f"unknown category in {topic!r}")
    if not is_valid_name(name):
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
# HA's probe on the same topic, which nodes ignore (not `"online": true`): hearing it back tells
# the integration its subscriptions are live before it announces (announce.py).
HUB_PROBE_PAYLOAD: Final = '{"probe": true}'


def hub_status_topic(home_id: str) -> str:
    """`homesync/{home_id}/hub/status`, outside the nodes' subtree we subscribe to."""
    if not is_valid_id(home_id):
        raise ProtocolError("bad_id", f"invalid home id {home_id!r}")
    return f"{ROOT}/{home_id}/hub/status"


def decode_payload(payload: str | bytes | bytearray) -> dict[str, Any]:
    """Decode a payload into a JSON object, enforcing the 64 KiB limit."""
    # What MQTT hands over is bytes already: no conversion, no copy.
    if type(payload) is bytes:
        data = payload
    else:
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
    try:
        number = float(value)  # an int beyond the float range raises OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise vol.Invalid("expected a finite number")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise vol.Invalid("expected an integer")
    return int(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise vol.Invalid("expected true or false")
    return value


MAX_TEXT: Final = 256
MAX_UNIT: Final = 16
MAX_TIMESTAMP: Final = 64
RELAY_STATES: Final = ("on", "off")
LED_STATES: Final = ("on", "off", "blink")

_TEXT = vol.All(str, vol.Length(max=MAX_TEXT))
_NULL_OR_TEXT = f"expected null or a string of at most {MAX_TEXT} characters"
_TIMESTAMP = vol.All(str, vol.Length(max=MAX_TIMESTAMP))
_OPTIONAL_COMMON: dict[vol.Marker, Any] = {vol.Optional("timestamp"): _TIMESTAMP}
_READING = vol.All(_number, vol.Range(min=-MAX_READING, max=MAX_READING))
_UPTIME = vol.All(_integer, vol.Range(min=0, max=MAX_UPTIME))

TELEMETRY_SCHEMA: Final = vol.Schema(
    {
        # null: the meter cannot measure it now ("reason" says why, e.g. below_range).
        vol.Required("value"): vol.Any(None, _READING),
        vol.Optional("reason"): vol.All(str, vol.Length(max=MAX_REASON)),
        vol.Optional("unit"): vol.All(str, vol.Length(max=MAX_UNIT)),
        vol.Optional("quality"): vol.All(_number, vol.Range(min=0, max=100)),
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
ONLINE_SCHEMA: Final = vol.Schema(
    {
        vol.Required("online"): _boolean,
        vol.Optional("reason"): _TEXT,
        vol.Optional("uptime"): _UPTIME,
        vol.Optional("firmware"): _TEXT,
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)
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
    {vol.Required("value"): _READING, vol.Optional("unit"): _TEXT, **_OPTIONAL_COMMON},
    extra=vol.ALLOW_EXTRA,
)
HEARTBEAT_SCHEMA: Final = vol.Schema(
    {
        vol.Required("seq"): vol.All(_integer, vol.Range(min=0, max=MAX_SEQ)),
        vol.Required("uptime"): _UPTIME,
        vol.Optional("interval"): vol.All(_number, vol.Range(min=1, max=MAX_INTERVAL)),
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
        vol.Optional("result"): vol.Any(None, _TEXT, msg=_NULL_OR_TEXT),
        vol.Optional("error"): vol.Any(None, _TEXT, msg=_NULL_OR_TEXT),
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
OTA_STATUSES: Final = (
    "downloading",
    "verifying",
    "installing",
    "rebooting",
    "success",
    "error",
    "expired",
)
OTA_RESPONSE_SCHEMA: Final = vol.Schema(
    {
        vol.Required("request_id"): REQUEST_ID,
        vol.Required("status"): vol.In(OTA_STATUSES),
        vol.Optional("progress"): vol.All(_integer, vol.Range(min=0, max=100)),
        vol.Optional("version"): vol.Any(None, _TEXT),
        vol.Optional("error"): vol.Any(None, _TEXT),
        **_OPTIONAL_COMMON,
    },
    extra=vol.ALLOW_EXTRA,
)

RESPONSE_SCHEMAS: Final[dict[str, vol.Schema]] = {
    "command": RESPONSE_SCHEMA,
    "ota": OTA_RESPONSE_SCHEMA,  # firmware updates (docs/protocol.md, "Firmware updates")
}


def schema_for(topic: Topic) -> vol.Schema | None:
    """The payload schema of a topic (None: a name we do not interpret, e.g. an unknown status).

    Every telemetry name is interpreted (a generic sensor); status and response names only when
    they have a schema here. See check_payload for what the hub does with the others.
    """
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


# --- the hot path: heartbeat and telemetry checked by hand ---------------------------------
#
# Two payloads make up nearly all traffic; voluptuous costs 4-6 µs each (benchmarks/). The
# checks below apply exactly the schemas' rules to what a JSON decoder produces and build the
# same result (numbers as the schemas convert them). Whatever they do not accept is handed to
# the schema itself, so a rejection carries voluptuous's own message, and anything they are
# unsure of (a type JSON cannot produce) still gets the schema's verdict.
# tests/test_protocol_hostile.py runs both on the same generated inputs.

_MISSING: Final[Any] = object()


def _fast_telemetry(data: dict[str, Any]) -> dict[str, Any] | None:
    """TELEMETRY_SCHEMA's result for `data`, or None: let the schema decide.

    The result is `data` itself, its numbers converted as the schema converts them, and only
    once every rule passed (a None leaves `data` as it was, for the schema's verdict). Keys are
    counted so that a payload of only known keys (the common case) stops looking early.
    """
    value = data.get("value", _MISSING)
    kind = type(value)
    # Chained comparisons are False for NaN; ints compare exactly, however large.
    if kind is float or kind is int:
        if not -MAX_READING <= value <= MAX_READING:
            return None
    elif value is not None:  # None: the meter cannot measure it now
        return None
    size = len(data)
    seen = 1
    if size > seen and (unit := data.get("unit", _MISSING)) is not _MISSING:
        if type(unit) is not str or len(unit) > MAX_UNIT:
            return None
        if size == 2:  # value and unit: what a meter sends, done
            if kind is int:
                data["value"] = float(value)
            return data
        seen += 1
    if size > seen and (reason := data.get("reason", _MISSING)) is not _MISSING:
        if type(reason) is not str or len(reason) > MAX_REASON:
            return None
        seen += 1
    quality = data.get("quality", _MISSING) if size > seen else _MISSING
    if quality is not _MISSING:
        kind_q = type(quality)
        if (kind_q is not float and kind_q is not int) or not 0 <= quality <= 100:
            return None
        seen += 1
    stamp = data.get("timestamp", _MISSING) if size > seen else _MISSING
    if stamp is not _MISSING and (type(stamp) is not str or len(stamp) > MAX_TIMESTAMP):
        return None
    if kind is int:
        data["value"] = float(value)
    if quality is not _MISSING and type(quality) is not float:
        data["quality"] = float(quality)
    return data


def _fast_heartbeat(data: dict[str, Any]) -> dict[str, Any] | None:
    """HEARTBEAT_SCHEMA's result for `data`, or None: let the schema decide.

    Like _fast_telemetry: `data` itself, converted only once every rule passed. The sizes a
    node sends (seq, uptime and maybe interval, nothing else) return as soon as they can.
    """
    seq = data.get("seq")  # None (absent or null) is not an int either
    uptime = data.get("uptime")
    if (
        type(seq) is not int
        or type(uptime) is not int
        or not 0 <= seq <= MAX_SEQ
        or not 0 <= uptime <= MAX_UPTIME
    ):
        return None
    size = len(data)
    if size == 2:
        return data
    seen = 2
    interval = data.get("interval", _MISSING)
    if interval is not _MISSING:
        kind = type(interval)
        if (kind is not int and kind is not float) or not 1 <= interval <= MAX_INTERVAL:
            return None
        if size == 3:
            if kind is int:
                data["interval"] = float(interval)
            return data
        seen = 3
    if (relay := data.get("relay", _MISSING)) is not _MISSING:
        if relay not in RELAY_STATES:
            return None
        seen += 1
    if size > seen and (led := data.get("led", _MISSING)) is not _MISSING:
        if led not in LED_STATES:
            return None
        seen += 1
    stamp = data.get("timestamp", _MISSING) if size > seen else _MISSING
    if stamp is not _MISSING and (type(stamp) is not str or len(stamp) > MAX_TIMESTAMP):
        return None
    if interval is not _MISSING and type(interval) is not float:
        data["interval"] = float(interval)
    return data


def _quiet_decoder(
    check: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> Callable[[str | bytes | bytearray], dict[str, Any] | None]:
    """A decoder for the hub's quiet path (issue 14): `decode_payload`, then `check` (one of
    the hand checks above), in one call, with the same result as `check_payload`.

    None when anything is unusual (not bytes, over 64 KiB, not JSON, not an object, any rule
    the hand check leaves to the schema): the caller then runs decode_payload and
    check_payload, which give the verdict and its message. Built per check rather than taking
    it as an argument, so the hot path pays no second call. tests/test_protocol_hostile.py
    runs both decoders against decode_payload + check_payload on the same generated payloads.
    """

    def decode(payload: str | bytes | bytearray) -> dict[str, Any] | None:
        if type(payload) is not bytes or len(payload) > MAX_PAYLOAD_BYTES:
            return None
        try:
            data = _loads(payload)
        except _DECODE_ERRORS:
            return None
        return check(data) if type(data) is dict else None

    return decode


# The decoded heartbeat / reading if `check_payload` accepts it without question, else None.
decode_heartbeat = _quiet_decoder(_fast_heartbeat)
decode_telemetry = _quiet_decoder(_fast_telemetry)


def check_payload(topic: Topic, data: dict[str, Any]) -> dict[str, Any] | None:
    """The payload of `topic`, validated; None for a name we do not interpret.

    The two hot payloads come back as `data` itself with numbers converted in place (no copy
    per message): pass a dict you own, as the hub does with the one it just decoded.
    Raises ProtocolError (kind "bad_payload", voluptuous's message) for an invalid payload. A
    name without a schema (status/foo, response/bar) must be ignored before discovery: it is
    neither a device nor proof of life.
    """
    category = topic.category
    if category is Category.TELEMETRY:
        if (out := _fast_telemetry(data)) is not None:
            return out
        return validate(TELEMETRY_SCHEMA, data)
    if category is Category.STATUS:
        if topic.name == "heartbeat":
            if (out := _fast_heartbeat(data)) is not None:
                return out
            return validate(HEARTBEAT_SCHEMA, data)
        schema = STATUS_SCHEMAS.get(topic.name)
    elif category is Category.RESPONSE:
        schema = RESPONSE_SCHEMAS.get(topic.name)
    else:
        return None
    return None if schema is None else validate(schema, data)


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
            converted = value * factor
            if not math.isfinite(converted):  # e.g. 1e308 kW
                raise ProtocolError("bad_value", f"{value!r} {unit} for {spec.key} is out of range")
            return converted
    raise ProtocolError(
        "bad_unit", f"unit {unit!r} is not usable for {spec.key} (expected {spec.unit!r})"
    )
