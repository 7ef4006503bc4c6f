"""The hot path's pure checks: topic parsing and the two hot payloads, before and after.

Issue 14: voluptuous validation of heartbeat / telemetry (4-6 µs) and regex topic parsing
(2.6 µs) were the largest parts of the integration's per-message cost. This benchmark times,
side by side in one run, what the hub runs now against what it ran before:

- `parse_topic` (string methods, NamedTuple) vs the previous parser (regexes, Enum lookup,
  frozen dataclass; copied below as the reference, like tests/test_protocol_hostile.py does);
- `check_payload` (hand-written checks, voluptuous only for what they do not accept) vs
  `validate(SCHEMA, …)` (voluptuous), for a heartbeat, a telemetry reading, and a rejected
  telemetry payload (the fallback path: what garbage costs now).

Pure Python (no Home Assistant import): the library is loaded by path. CPU time, median of
reps with min-max spread, variants alternating rep by rep. Writes results/bench_protocol.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import gc
import importlib.util
import re
import sys
import time
from types import ModuleType
from typing import Any

from _benchlib import ROOT, SMOKE, fmt, fmt_stat, report, reps, table


def load_protocol() -> ModuleType:
    """Import homesync/protocol.py without the integration package (its __init__ imports HA)."""
    library = ROOT / "custom_components" / "heartbeat_iot" / "homesync"
    spec = importlib.util.spec_from_file_location(
        "homesync_lib", library / "__init__.py", submodule_search_locations=[str(library)]
    )
    assert spec is not None
    assert spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module("homesync_lib.protocol")


P = load_protocol()
CALLS = 2_000 if SMOKE else 200_000


# --- the parser before issue 14 (reference) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class OldTopic:
    home_id: str
    node_id: str
    category: Any
    name: str


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


def old_parse_topic(topic: str) -> OldTopic:
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "homesync" or parts[2] != "nodes":
        raise P.ProtocolError("bad_topic", f"not a HomeSync topic: {topic!r}")
    _, home_id, _, node_id, category, name = parts
    if _ID.fullmatch(home_id) is None:
        raise P.ProtocolError("bad_id", f"invalid home id in {topic!r}")
    if _ID.fullmatch(node_id) is None:
        raise P.ProtocolError("bad_id", f"invalid node id in {topic!r}")
    try:
        cat = P.Category(category)
    except ValueError as err:
        raise P.ProtocolError("bad_topic", f"unknown category in {topic!r}") from err
    if _NAME.fullmatch(name) is None:
        raise P.ProtocolError("bad_topic", f"invalid name in {topic!r}")
    return OldTopic(home_id, node_id, cat, name)


# --- cases --------------------------------------------------------------------------------------

TOPIC = "homesync/home1/nodes/node-0042/telemetry/power"
HEARTBEAT_TOPIC = P.Topic("home1", "node-0042", P.Category.STATUS, "heartbeat")
TELEMETRY_TOPIC = P.Topic("home1", "node-0042", P.Category.TELEMETRY, "power")
HEARTBEAT = {"seq": 1234, "uptime": 86400, "interval": 30, "relay": "on", "led": "on"}
TELEMETRY = {"value": 125.5, "unit": "W", "quality": 99}
BAD_TELEMETRY = {"value": "high", "unit": "W"}


def _rejecting(func: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return func()
        except P.ProtocolError:
            return None

    return call


CASES: list[tuple[str, str, Callable[[], Any]]] = [
    # (row, variant, one call)
    ("topic parsing", "before: regexes + Enum + frozen dataclass", lambda: old_parse_topic(TOPIC)),
    (
        "topic parsing",
        "now: `parse_topic` (string methods, NamedTuple)",
        lambda: P.parse_topic(TOPIC),
    ),
    (
        "heartbeat payload",
        "before: `validate(HEARTBEAT_SCHEMA)` (voluptuous)",
        lambda: P.validate(P.HEARTBEAT_SCHEMA, HEARTBEAT),
    ),
    (
        "heartbeat payload",
        "now: `check_payload` (by hand)",
        # A fresh dict per call, as the decoder hands over (the check converts in place).
        lambda: P.check_payload(HEARTBEAT_TOPIC, dict(HEARTBEAT)),
    ),
    (
        "telemetry payload",
        "before: `validate(TELEMETRY_SCHEMA)` (voluptuous)",
        lambda: P.validate(P.TELEMETRY_SCHEMA, TELEMETRY),
    ),
    (
        "telemetry payload",
        "now: `check_payload` (by hand)",
        lambda: P.check_payload(TELEMETRY_TOPIC, dict(TELEMETRY)),
    ),
    (
        "rejected telemetry",
        "before: `validate` raises",
        _rejecting(lambda: P.validate(P.TELEMETRY_SCHEMA, BAD_TELEMETRY)),
    ),
    (
        "rejected telemetry",
        "now: hand check declines, voluptuous raises",
        _rejecting(lambda: P.check_payload(TELEMETRY_TOPIC, dict(BAD_TELEMETRY))),
    ),
]


def time_once(call: Callable[[], Any]) -> float:
    """µs per call over CALLS calls (CPU time)."""
    gc.collect()
    start = time.process_time()
    for _ in range(CALLS):
        call()
    return (time.process_time() - start) / CALLS * 1e6


def main() -> None:
    wall = time.perf_counter()
    n_reps = reps()
    samples: dict[str, list[float]] = {variant: [] for _, variant, _ in CASES}
    for rep in range(n_reps):
        rotated = CASES[rep % len(CASES) :] + CASES[: rep % len(CASES)]
        for _, variant, call in rotated:
            samples[variant].append(time_once(call))

    rows = []
    by_row: dict[str, list[tuple[str, list[float]]]] = {}
    for row, variant, _ in CASES:
        by_row.setdefault(row, []).append((variant, samples[variant]))
    for row, variants in by_row.items():
        (_, before), (_, now) = variants
        before_med = sorted(before)[len(before) // 2]
        for variant, values in variants:
            med, spread = fmt_stat(values)
            ratio = sorted(values)[len(values) // 2] / before_med
            rows.append([row, variant, med, spread, f"{fmt(ratio)}×"])
        rows.append(["", "", "", "", ""])
    body = table(["input", "variant", "µs/call (median)", "spread", "÷ before"], rows[:-1])
    report(
        "bench_protocol",
        "bench_protocol — the hot path's pure checks, before and after issue 14",
        ".venv/bin/python benchmarks/bench_protocol.py",
        [
            f"- method: CPU time (`time.process_time`), {CALLS:,} calls per timed block, median "
            f"of {n_reps} reps with min–max spread; variants alternate (rotating order) rep by "
            "rep in this one run; `gc.collect()` before every timed block",
            "- 'before' is the code the hub ran before issue 14 (the regex parser is copied into "
            "this file; the voluptuous schemas are still the module's own); equality of "
            "behaviour is proven by tests/test_protocol_hostile.py (hypothesis), not here",
        ],
        [("Per call", body)],
        time.perf_counter() - wall,
        extra_dists=("voluptuous", "orjson"),
    )


if __name__ == "__main__":
    main()
