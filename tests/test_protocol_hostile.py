"""Hostile input at the protocol layer: property-based tests (hypothesis).

Every entry point that takes bytes from the broker — the topic parser, the payload decoder, the
payload checks (hand-written for the two hot payloads, voluptuous for the rest) and unit
conversion — either returns a well-formed value or raises ProtocolError: nothing else escapes,
whatever a broker writer sends (issue 16 item 10). The hand-written hot-path checks and the
regex-free topic parser are proven equal to their written rules (the voluptuous schemas and the
id / name regexes) on the same generated inputs (issue 14).
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from hypothesis import HealthCheck, example, given, settings, strategies as st
import pytest

from custom_components.heartbeat_iot.homesync import protocol
from custom_components.heartbeat_iot.homesync.protocol import (
    HEARTBEAT_SCHEMA,
    ID_PATTERN,
    MAX_READING,
    MAX_SEQ,
    MAX_UPTIME,
    METRICS,
    NAME_PATTERN,
    ONLINE_SCHEMA,
    RSSI_SCHEMA,
    TELEMETRY_SCHEMA,
    Category,
    ProtocolError,
    Topic,
    check_payload,
    decode_payload,
    is_valid_id,
    is_valid_name,
    metric_spec,
    normalize_value,
    parse_topic,
    validate,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generators ----------------------------------------------------------------------------

# Characters that matter to the rules (the allowed sets, their neighbours, MQTT wildcards,
# separators, whitespace, non-ASCII letters and digits that str.isalnum() would accept).
_TRICKY = "aZz09_-+#/ .\n\t\x00AÉé٣ß\u212a"
segments = st.one_of(
    st.text(alphabet=_TRICKY, max_size=70),
    st.text(max_size=8),
    st.sampled_from(["", "a", "A" * 64, "a" * 65, "p" * 32, "p" * 33, "-a", "_a", "a-", "a_"]),
)
categories = st.one_of(st.sampled_from([c.value for c in Category]), segments)


@st.composite
def topics(draw: st.DrawFn) -> str:
    """Mostly nearly-valid topics, so every rule is exercised, plus arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    levels = [
        draw(st.sampled_from(["homesync", "homesync", "homesyn", "Homesync", ""])),
        draw(segments),
        draw(st.sampled_from(["nodes", "nodes", "node", "devices"])),
        draw(segments),
        draw(categories),
        draw(segments),
    ]
    if draw(st.booleans()):
        del levels[draw(st.integers(0, 5))]
    elif draw(st.integers(0, 4)) == 0:
        levels.append(draw(segments))
    return "/".join(levels)


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            0,
            1,
            -1,
            100,
            101,
            86400,
            86401,
            MAX_SEQ,
            MAX_SEQ + 1,
            MAX_UPTIME,
            MAX_UPTIME + 1,
            MAX_READING,
            -MAX_READING,
            MAX_READING * 1.0000001,
            1e308,
            -0.0,
            0.5,
            10**400,
        ]
    ),
    st.text(max_size=300),
    st.sampled_from(["on", "off", "blink", "ON", "W", "kW", "", "x" * 16, "x" * 17, "x" * 64]),
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


def payloads(*keys: str) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects using the schema's keys (each maybe absent), plus extra keys."""
    known = st.dictionaries(st.sampled_from([*keys, "timestamp"]), json_values, max_size=8)
    extra = st.dictionaries(st.text(max_size=6), json_values, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, extra)


def _reference_parse_topic(topic: str) -> Topic:
    """The parser as it was (regexes, Enum lookup): the rules parse_topic must keep."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "homesync" or parts[2] != "nodes":
        raise ProtocolError("bad_topic", f"not a HomeSync topic: {topic!r}")
    _, home_id, _, node_id, category, name = parts
    if ID_PATTERN.fullmatch(home_id) is None:
        raise ProtocolError("bad_id", f"invalid home id in {topic!r}")
    if ID_PATTERN.fullmatch(node_id) is None:
        raise ProtocolError("bad_id", f"invalid node id in {topic!r}")
    try:
        cat = Category(category)
    except ValueError as err:
        raise ProtocolError("bad_topic", f"unknown category in {topic!r}") from err
    if NAME_PATTERN.fullmatch(name) is None:
        raise ProtocolError("bad_topic", f"invalid name in {topic!r}")
    return Topic(home_id, node_id, cat, name)


def _outcome(func: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", func(*args)
    except ProtocolError as err:
        return "error", (err.kind, str(err))


# --- topics --------------------------------------------------------------------------------


@FAST
@given(segments)
@example("a\n")
@example("\u212a")  # KELVIN SIGN: lower() is ASCII "k", isalnum() is True
def test_id_and_name_checks_accept_exactly_what_the_regexes_accept(text: str) -> None:
    assert is_valid_id(text) == (ID_PATTERN.fullmatch(text) is not None)
    assert is_valid_name(text) == (NAME_PATTERN.fullmatch(text) is not None)


@FAST
@given(topics())
@example("homesync/h/nodes/n/telemetry/power")
@example("homesync/h/nodes/n/telemetry/power\n")
@example("homesync/h/nodes/n/Telemetry/power")
def test_topic_parser_keeps_the_written_rules(topic: str) -> None:
    """Same topics accepted, same Topic, same error kind and message for the rest."""
    assert _outcome(parse_topic, topic) == _outcome(_reference_parse_topic, topic)


# --- payloads: the hot-path checks against the schemas ---------------------------------------

# The schema the hand-written check must equal, and a topic that reaches it.
HOT = {
    "telemetry": (TELEMETRY_SCHEMA, Topic("h", "n", Category.TELEMETRY, "power")),
    "heartbeat": (HEARTBEAT_SCHEMA, Topic("h", "n", Category.STATUS, "heartbeat")),
}


def _check_against_schema(kind: str, data: dict[str, Any]) -> None:
    schema, topic = HOT[kind]
    fast = protocol._fast_telemetry if kind == "telemetry" else protocol._fast_heartbeat
    expected = _outcome(validate, schema, dict(data))
    # What the hub calls: same result, or same error kind and message.
    assert _outcome(check_payload, topic, dict(data)) == expected
    # The hand-written check alone: it decides every JSON input itself (None only where the
    # schema rejects), so valid messages never pay for voluptuous.
    by_hand = fast(dict(data))
    if expected[0] == "ok":
        assert by_hand == expected[1]
        assert {k: type(v) for k, v in by_hand.items()} == {
            k: type(v) for k, v in expected[1].items()
        }
    else:
        assert by_hand is None
    _check_decoder(kind, data)


def _check_decoder(kind: str, data: dict[str, Any]) -> None:
    """The hub's one-call decoders accept a payload exactly when decode + check do, and
    return what they return, numbers converted the same way."""
    _, topic = HOT[kind]
    raw = json.dumps(data).encode()  # NaN / Infinity come out as tokens JSON rejects
    decoder = protocol.decode_telemetry if kind == "telemetry" else protocol.decode_heartbeat
    direct = decoder(raw)
    decoded = _outcome(decode_payload, raw)
    full = _outcome(check_payload, topic, decoded[1]) if decoded[0] == "ok" else decoded
    if full[0] != "ok":
        assert direct is None
        return
    assert direct == full[1]
    assert {k: type(v) for k, v in direct.items()} == {k: type(v) for k, v in full[1].items()}


@FAST
@given(payloads("value", "reason", "unit", "quality"))
@example({"value": 125.5, "unit": "W", "quality": 99, "timestamp": "2026-01-01T00:00:00Z"})
@example({"value": 1, "quality": 100})
@example({"value": True})
@example({"value": 10**400})
@example({"value": 1e308, "unit": "kW"})
@example({"value": None, "reason": "below_range", "unit": "A"})
@example({"value": 1.5, "reason": 7})
def test_telemetry_check_equals_schema(data: dict[str, Any]) -> None:
    _check_against_schema("telemetry", data)


@FAST
@given(payloads("seq", "uptime", "interval", "relay", "led"))
@example({"seq": 1, "uptime": 2, "interval": 30, "relay": "on", "led": "blink"})
@example({"seq": 0, "uptime": MAX_UPTIME + 1})
@example({"seq": MAX_SEQ, "uptime": MAX_UPTIME, "interval": 86400})
@example({"seq": 1, "uptime": 2, "interval": 10**400})
@example({"seq": 1, "uptime": 2, "relay": ["on"]})
def test_heartbeat_check_equals_schema(data: dict[str, Any]) -> None:
    _check_against_schema("heartbeat", data)


def test_the_hand_checks_see_every_key_their_schema_knows() -> None:
    """A key added to a hot schema needs its hand-written check (the tests above find it)."""
    assert {str(k) for k in TELEMETRY_SCHEMA.schema} == {
        "value",
        "reason",
        "unit",
        "quality",
        "timestamp",
    }
    assert {str(k) for k in HEARTBEAT_SCHEMA.schema} == {
        "seq",
        "uptime",
        "interval",
        "relay",
        "led",
        "timestamp",
    }


# --- absurd but well-formed numbers are refused (issue 16 item 2) ----------------------------


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        (HEARTBEAT_SCHEMA, {"seq": 1, "uptime": 63_000_000_000}),
        (HEARTBEAT_SCHEMA, {"seq": MAX_SEQ + 1, "uptime": 1}),
        (HEARTBEAT_SCHEMA, {"seq": 1, "uptime": 1, "interval": 86401}),
        (ONLINE_SCHEMA, {"online": True, "uptime": 63_000_000_000}),
        (TELEMETRY_SCHEMA, {"value": 1e300}),
        (TELEMETRY_SCHEMA, {"value": 1, "quality": 1e300}),
        (TELEMETRY_SCHEMA, {"value": 1, "timestamp": "2" * 65}),
        (RSSI_SCHEMA, {"value": -1e300}),
    ],
)
def test_absurd_numbers_are_refused(schema: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        validate(schema, data)


@pytest.mark.parametrize(("value", "unit"), [(1e308, "kW"), (1e307, "MWh"), (-1e308, "kW")])
def test_conversion_overflow_is_refused(value: float, unit: str) -> None:
    """A finite reading that overflows when converted never becomes inf (issue 16 item 1)."""
    key = "power" if unit == "kW" else "energy"
    with pytest.raises(ProtocolError, match="out of range"):
        normalize_value(METRICS[key], value, unit)


# --- no exception but ProtocolError, from bytes to a converted reading -----------------------

_UNITS = st.one_of(
    st.none(),
    st.sampled_from(sorted({u for m in METRICS.values() for u, _ in m.conversions} | {"W", ""})),
    st.text(max_size=17),
)


@FAST
@given(
    st.sampled_from([*METRICS, "custom", "rssi"]),
    st.one_of(st.floats(), st.integers(-(2**1100), 2**1100)),
    _UNITS,
    _UNITS,
)
def test_unit_conversion_is_finite_or_refused(
    key: str, value: float, unit: str | None, first_unit: str | None
) -> None:
    spec = metric_spec(key, first_unit)
    try:
        data = validate(TELEMETRY_SCHEMA, {"value": value, "unit": unit})
    except ProtocolError:
        return
    try:
        converted = normalize_value(spec, data["value"], data.get("unit"))
    except ProtocolError:
        return
    assert isinstance(converted, float)
    assert math.isfinite(converted)


@st.composite
def raw_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A topic and payload bytes as a broker writer might send them."""
    topic = draw(
        st.one_of(
            topics(),
            st.builds(
                lambda c, n: f"homesync/h/nodes/n/{c}/{n}",
                st.sampled_from([c.value for c in Category]),
                st.sampled_from(
                    [
                        "power",
                        "heartbeat",
                        "online",
                        "relay",
                        "led",
                        "rssi",
                        "firmware",
                        "command",
                        "ota",
                        "foo",
                        "x",
                    ]
                ),
            ),
        )
    )
    body = draw(
        st.one_of(
            st.binary(max_size=64),
            json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
            payloads(
                "value",
                "unit",
                "quality",
                "seq",
                "uptime",
                "interval",
                "online",
                "state",
                "version",
                "request_id",
                "status",
                "result",
                "error",
            ).map(lambda v: json.dumps(v, allow_nan=True).encode()),
        )
    )
    return topic, body


@FAST
@given(raw_messages())
def test_broker_bytes_never_raise_anything_but_protocol_error(message: tuple[str, bytes]) -> None:
    """The whole per-message pipeline of the hub, minus Home Assistant."""
    topic_text, body = message
    try:
        topic = parse_topic(topic_text)
        data = check_payload(topic, decode_payload(body))
    except ProtocolError:
        return
    if data is None:
        # Not interpreted: an unknown status / response name, or a command (ours, echoed).
        assert topic.category is Category.COMMAND or protocol.schema_for(topic) is None
        return
    assert isinstance(data, dict)
    if topic.category is Category.TELEMETRY or topic.name == "rssi":
        if data["value"] is None:  # "cannot measure now": only telemetry may say so
            assert topic.category is Category.TELEMETRY
            return
        spec = metric_spec(topic.name, data.get("unit"))
        try:
            value = normalize_value(spec, data["value"], data.get("unit"))
        except ProtocolError:
            return
        assert math.isfinite(value)


@FAST
@given(st.binary(max_size=200))
def test_decoder_returns_an_object_or_refuses(body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_payload(body), dict)


@pytest.mark.parametrize(
    ("category", "name"),
    [("status", "foo"), ("status", "reboot"), ("response", "foo"), ("command", "relay")],
)
def test_unknown_names_are_not_interpreted(category: str, name: str) -> None:
    """The hub ignores them before discovery (issue 16 item 3)."""
    assert check_payload(Topic("h", "n", Category(category), name), {}) is None
