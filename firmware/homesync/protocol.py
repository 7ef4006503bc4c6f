"""HomeSync v1 wire contract, node side (docs/protocol.md).

Topics are ``homesync/{home_id}/nodes/{node_id}/{category}/{name}``; payloads are UTF-8 JSON
objects of at most 64 KiB.  This module mirrors the integration's ``protocol.py``: identifier
rules, topic build/parse, payload builders for everything a node publishes and validation of
everything it receives.  Pure code: no I/O, no clock (callers pass Unix seconds or ``None`` when
the node's clock is not synchronised).
"""

import json

PREFIX = "homesync"
CATEGORIES = ("telemetry", "status", "command", "response")
COMMANDS = ("relay", "led", "config", "ota")
ACTIONS = {
    "relay": ("on", "off", "toggle"),
    "led": ("on", "off", "blink"),
    "config": ("set",),
    "ota": ("update",),
}
# Settings a ``command/config`` may change, with their allowed ranges (seconds).
CONFIG_LIMITS = {
    "heartbeat_interval": (1, 3600),
    "telemetry_interval": (1, 3600),
}
METRIC_UNITS = {
    "power": "W",
    "voltage": "V",
    "current": "A",
    "energy": "kWh",
    "power_factor": None,
    "frequency": "Hz",
    "temperature": "\u00b0C",
}
# Decimal places published per metric (keeps payloads short, hides float32 noise on the ESP32).
METRIC_DIGITS = {
    "power": 1,
    "voltage": 1,
    "current": 3,
    "energy": 4,
    "power_factor": 2,
    "frequency": 2,
    "temperature": 1,
}
MAX_PAYLOAD = 65536  # node -> HA payloads (docs/protocol.md)
# A command payload (the JSON bytes) is at most this long; the integration refuses larger ones
# before sending and a contract test compares both constants (docs/protocol.md "Size limits").
MAX_COMMAND_BYTES = 4096
MAX_REQUEST_ID = 64  # the integration's limit too
MAX_JSON_DEPTH = 16  # deeper payloads are refused before parsing (json.loads recurses)
DEFAULT_TTL = 30
# A larger ttl is cut to this: the node remembers executed request ids for 120 s, so a command
# must not stay valid longer than a retry of it can still be recognised (docs/protocol.md).
MAX_TTL = 120
# A timestamp further ahead of our (synchronised) clock than this is refused: its age, and so
# its expiry, cannot be judged (a year-9999 stamp would otherwise never expire).
MAX_FUTURE_S = 60
ONLINE_REASONS = ("boot", "reconnect", "shutdown", "unexpected_disconnect")
LED_STATES = ("on", "off", "blink")
LED_SOURCES = ("command", "boot", "relay")

_ID_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ID_REST = _ID_FIRST + "_-"
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_HEX = "0123456789abcdefABCDEF"


class ProtocolError(ValueError):
    """A payload that breaks the contract (bad JSON, wrong type, missing key)."""


class CommandError(ProtocolError):
    """An invalid command; ``request_id`` is set when it could be read (then we answer)."""

    def __init__(self, request_id, message):
        super().__init__(message)
        self.request_id = request_id
        self.message = message


# --------------------------------------------------------------------------- identifiers


def valid_id(value):
    """``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`` without ``re`` (MicroPython's lacks ``{m,n}``)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    if value[0] not in _ID_FIRST:
        return False
    return all(ch in _ID_REST for ch in value)


def valid_name(value):
    """``^[a-z0-9_]{1,32}$``."""
    if not isinstance(value, str) or not 1 <= len(value) <= 32:
        return False
    return all(ch in _NAME_CHARS for ch in value)


def topic(home_id, node_id, category, name):
    return "{}/{}/nodes/{}/{}/{}".format(PREFIX, home_id, node_id, category, name)


def hub_topic(home_id):
    """``homesync/{home_id}/hub/status``: the integration's non-retained announcement."""
    return "{}/{}/hub/status".format(PREFIX, home_id)


def parse_topic(value):
    """Return ``(home_id, node_id, category, name)`` or ``None`` for anything off-contract."""
    if not isinstance(value, str):
        return None
    parts = value.split("/")
    if len(parts) != 6 or parts[0] != PREFIX or parts[2] != "nodes":
        return None
    home_id, node_id, category, name = parts[1], parts[3], parts[4], parts[5]
    if not (valid_id(home_id) and valid_id(node_id)):
        return None
    if category not in CATEGORIES or not valid_name(name):
        return None
    return (home_id, node_id, category, name)


# --------------------------------------------------------------------------- time


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400
    if m <= 2:
        y += 1
    return y, m, d


def iso_utc(unix):
    """``1738852200`` -> ``"2025-02-06T14:30:00Z"`` (integer seconds; no float timestamps)."""
    unix = int(unix)
    days = unix // 86400
    rem = unix - days * 86400
    y, m, d = _civil_from_days(days)
    return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(
        y, m, d, rem // 3600, (rem // 60) % 60, rem % 60
    )


def _digits(text, start, count):
    part = text[start : start + count]
    if len(part) != count:
        raise ValueError("short")
    for ch in part:
        if ch not in "0123456789":
            raise ValueError("digit")
    return int(part)


def parse_iso(text):
    """ISO 8601 date-time -> Unix seconds (int), or ``None`` when unparseable.

    Accepts ``YYYY-MM-DDTHH:MM:SS`` with optional fraction and ``Z``/``+HH:MM``/``-HH:MM``
    (no zone means UTC).
    """
    if not isinstance(text, str) or len(text) < 19 or len(text) > 40:
        return None
    try:
        year = _digits(text, 0, 4)
        month = _digits(text, 5, 2)
        day = _digits(text, 8, 2)
        hour = _digits(text, 11, 2)
        minute = _digits(text, 14, 2)
        second = _digits(text, 17, 2)
        if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":":
            return None
        if text[16] != ":":
            return None
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59):
            return None
        if second > 60:
            return None
        pos = 19
        if pos < len(text) and text[pos] in ".,":
            pos += 1
            while pos < len(text) and text[pos] in "0123456789":
                pos += 1
        offset = 0
        rest = text[pos:]
        if rest in ("", "Z", "z"):
            offset = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = _digits(rest, 1, 2) * 3600 + _digits(rest, 4, 2) * 60
            if rest[0] == "-":
                offset = -offset
        else:
            return None
    except ValueError:
        return None
    days = _days_from_civil(year, month, day)
    return days * 86400 + hour * 3600 + minute * 60 + second - offset


# --------------------------------------------------------------------------- payloads


def encode(obj):
    return json.dumps(obj).encode()


def json_depth(text, limit):
    """Nesting depth of JSON ``text`` (brackets inside strings do not count), scanning only
    until it exceeds ``limit``.  Cheap when the text has few brackets at all."""
    if text.count("[") + text.count("{") <= limit:
        return 0
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def decode(payload, max_bytes=MAX_PAYLOAD):
    """Bytes/str -> dict; raises ``ProtocolError`` for oversize, non-UTF-8, too deeply nested,
    bad JSON or non-object payloads, and when the parser runs out of memory or stack."""
    if payload is None:
        raise ProtocolError("empty payload")
    if len(payload) > max_bytes:
        raise ProtocolError(
            "payload too large ({} bytes, limit {})".format(len(payload), max_bytes)
        )
    if isinstance(payload, (bytes, bytearray, memoryview)):
        try:
            payload = str(bytes(payload), "utf-8")
        except (UnicodeError, ValueError):
            raise ProtocolError("payload is not UTF-8")
    if json_depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ProtocolError("payload nested deeper than {} levels".format(MAX_JSON_DEPTH))
    try:
        obj = json.loads(payload)
    except ValueError:
        raise ProtocolError("payload is not JSON")
    except (MemoryError, RuntimeError):  # RecursionError is a RuntimeError
        raise ProtocolError("payload too complex to parse")
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    return obj


def sniff_request_id(raw):
    """The ``request_id`` string of a payload that cannot be parsed (too large, truncated, not
    JSON), read from the raw bytes without parsing; ``None`` when not readable."""
    if not isinstance(raw, (bytes, bytearray)):
        return None
    key = b'"request_id"'
    at = raw.find(key)
    if at < 0:
        return None
    pos = at + len(key)
    end = len(raw)
    while pos < end and raw[pos] in b" \t\r\n":
        pos += 1
    if pos >= end or raw[pos] != 0x3A:  # ':'
        return None
    pos += 1
    while pos < end and raw[pos] in b" \t\r\n":
        pos += 1
    if pos >= end or raw[pos] != 0x22:  # '"'
        return None
    close = raw.find(b'"', pos + 1)
    if close < 0 or close - pos - 1 > MAX_REQUEST_ID or close == pos + 1:
        return None
    value = bytes(raw[pos + 1 : close])
    if b"\\" in value:
        return None
    try:
        return str(value, "utf-8")
    except UnicodeError:
        return None


def _stamp(obj, now):
    if now is not None:
        obj["timestamp"] = iso_utc(now)
    return obj


def finite(value):
    return value - value == 0  # False for NaN and +-inf, True for every int and finite float


def telemetry(name, value, now=None, quality=None):
    """``{"value": 125.5, "unit": "W", "timestamp": ...}``; ``None`` for non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):
        return None
    digits = METRIC_DIGITS.get(name)
    if digits is not None and isinstance(value, float):
        value = round(value, digits)
    obj = {"value": value}
    unit = METRIC_UNITS.get(name)
    if unit is not None:
        obj["unit"] = unit
    if quality is not None:
        obj["quality"] = int(quality)
    return _stamp(obj, now)


def unmeasured(name, reason, now=None):
    """``{"value": null, "reason": ...}``: the meter cannot measure ``name`` right now.

    Publishing it (instead of nothing) clears the last reading in Home Assistant, so a kettle's
    8.7 A never stays next to a standby TV's 8 W. Reasons: ``below_range``, ``no_load``.
    """
    obj = {"value": None, "reason": reason}
    unit = METRIC_UNITS.get(name)
    if unit is not None:
        obj["unit"] = unit
    return _stamp(obj, now)


def online(reason, uptime, firmware, now=None):
    obj = {"online": True, "reason": reason, "uptime": int(uptime), "firmware": firmware}
    return _stamp(obj, now)


def offline(reason, now=None):
    return _stamp({"online": False, "reason": reason}, now)


def will():
    """The LWT registered in CONNECT; the broker publishes it, so it carries no timestamp."""
    return {"online": False, "reason": "unexpected_disconnect"}


def relay_status(state, source, now=None):
    return _stamp({"state": "on" if state else "off", "source": source}, now)


def led_status(state, source, now=None):
    """``{"state": "on"|"off"|"blink", "source": "command"|"boot"|"relay"}`` (retained)."""
    return _stamp({"state": state, "source": source}, now)


def firmware_status(version, now=None):
    return _stamp({"version": version}, now)


def rssi(value):
    return {"value": int(value), "unit": "dBm"}


def heartbeat(seq, uptime, interval, relay=None, led=None):
    """``relay`` (bool) and ``led`` (``on``/``off``/``blink``) are the node's current state."""
    obj = {"seq": int(seq), "uptime": int(uptime), "interval": int(interval)}
    if relay is not None:
        obj["relay"] = "on" if relay else "off"
    if led is not None:
        obj["led"] = led
    return obj


def response(request_id, status, result=None, error=None, now=None, extra=None):
    obj = {"request_id": request_id, "status": status}
    if result is not None:
        obj["result"] = result
    if error is not None:
        obj["error"] = error
    if extra:
        for key in extra:
            obj[key] = extra[key]
    return _stamp(obj, now)


# --------------------------------------------------------------------------- commands


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and finite(value)


def parse_command(name, payload):
    """Validate a ``command/{name}`` payload.

    Returns a dict with ``name``, ``action``, ``request_id``, ``timestamp`` (Unix seconds or
    ``None``), ``ttl`` and the action's parameters.  Raises ``CommandError`` whose
    ``request_id`` is ``None`` when even the request id is unreadable (the node cannot answer).
    """
    if payload is not None and len(payload) > MAX_COMMAND_BYTES:
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        raid = sniff_request_id(raw)
        raise CommandError(
            raid,
            "command too large ({} bytes, limit {})".format(len(payload), MAX_COMMAND_BYTES),
        )
    try:
        obj = decode(payload, MAX_COMMAND_BYTES)
    except ProtocolError as err:
        raw = payload.encode() if isinstance(payload, str) else payload
        raise CommandError(sniff_request_id(raw), str(err))
    request_id = obj.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID:
        raise CommandError(None, "missing or invalid request_id")
    if name not in COMMANDS:
        raise CommandError(request_id, "unknown command: {}".format(name))
    action = obj.get("action")
    if action not in ACTIONS[name]:
        shown = str(action)[:32]
        raise CommandError(request_id, "unknown action for {}: {}".format(name, shown))
    cmd = {"name": name, "action": action, "request_id": request_id}
    stamp = obj.get("timestamp")
    if stamp is None:
        cmd["timestamp"] = None
    else:
        parsed = parse_iso(stamp)
        if parsed is None:
            raise CommandError(request_id, "invalid timestamp")
        cmd["timestamp"] = parsed
    ttl = obj.get("ttl", DEFAULT_TTL)
    if not _is_number(ttl) or ttl <= 0:
        raise CommandError(request_id, "invalid ttl")
    cmd["ttl"] = ttl if ttl <= MAX_TTL else MAX_TTL
    if name == "config":
        cmd["config"] = _parse_config(request_id, obj.get("config"))
    elif name == "ota":
        cmd["url"] = obj.get("url")
        cmd["version"] = obj.get("version")
        cmd["sha256"] = obj.get("sha256")
        cmd["size"] = obj.get("size")
        _check_ota(cmd)
    return cmd


def _parse_config(request_id, values):
    if not isinstance(values, dict) or not values:
        raise CommandError(request_id, "config must be a non-empty object")
    out = {}
    for key in values:
        limits = CONFIG_LIMITS.get(key)
        if limits is None:
            raise CommandError(request_id, "unknown config key: {}".format(key))
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise CommandError(request_id, "{} must be an integer".format(key))
        if not limits[0] <= value <= limits[1]:
            raise CommandError(
                request_id, "{} out of range {}..{}".format(key, limits[0], limits[1])
            )
        out[key] = value
    return out


def _check_ota(cmd):
    rid = cmd["request_id"]
    url = cmd["url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CommandError(rid, "ota url must be http(s)")
    if not isinstance(cmd["version"], str) or not cmd["version"]:
        raise CommandError(rid, "ota version missing")
    digest = cmd["sha256"]
    if not isinstance(digest, str) or len(digest) != 64:
        raise CommandError(rid, "ota sha256 must be 64 hex digits")
    for ch in digest:
        if ch not in _HEX:
            raise CommandError(rid, "ota sha256 must be 64 hex digits")
    size = cmd["size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise CommandError(rid, "ota size must be a positive integer")


def from_future(cmd, now):
    """A timestamp further ahead of our synchronised clock than ``MAX_FUTURE_S``."""
    if now is None or cmd.get("timestamp") is None:
        return False
    return cmd["timestamp"] > now + MAX_FUTURE_S


def is_expired(cmd, now):
    """Late delivery check: only when our clock is synced (``now`` not None) and stamped."""
    if now is None or cmd.get("timestamp") is None:
        return False
    return now > cmd["timestamp"] + cmd["ttl"]
