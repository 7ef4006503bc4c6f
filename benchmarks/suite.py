"""Every benchmark of the project, and the targets they check (read by ``scripts/bench``).

Adding a benchmark is one line in ``BENCHMARKS``: ``script("bench_x.py")`` for a plain Python
program, ``harness("bench_x.py")`` for a pytest file that uses Home Assistant's test harness.
The file must write its results with ``_benchlib.report(name, ...)`` where ``name`` is the file
name without ``.py``; targets it checks are ``_benchlib.Target`` objects passed to ``report``,
with a ``target_id`` from ``TARGETS`` below. ``BENCH_SMOKE=1`` (what ``--quick`` sets) must make
it finish in seconds. A test checks that every ``benchmarks/bench_*.py`` file is listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
import sys


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One benchmark file and how to run it (argv relative to the repository root)."""

    name: str
    argv: tuple[str, ...]
    timeout_s: float  # a full run
    quick_timeout_s: float  # BENCH_SMOKE=1


def script(file: str, *, timeout_s: float = 3600, quick_timeout_s: float = 300) -> Benchmark:
    """A plain Python benchmark: ``python benchmarks/<file>``."""
    return Benchmark(
        file.removesuffix(".py"),
        (sys.executable, f"benchmarks/{file}"),
        timeout_s,
        quick_timeout_s,
    )


def harness(file: str, *, timeout_s: float = 3600, quick_timeout_s: float = 300) -> Benchmark:
    """A benchmark on Home Assistant's pytest harness (never ``-v``: DEBUG logs per message)."""
    return Benchmark(
        file.removesuffix(".py"),
        (
            sys.executable,
            "-m",
            "pytest",
            f"benchmarks/{file}",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
        ),
        timeout_s,
        quick_timeout_s,
    )


# In run order. One line per benchmark.
BENCHMARKS: tuple[Benchmark, ...] = (
    script("bench_tracker.py"),
    script("bench_protocol.py"),
    harness("bench_hub.py"),
    harness("bench_relay.py"),
    harness("bench_flood.py", timeout_s=1800),
    harness("bench_entity_cost.py"),
    script("bench_system.py"),
    script("bench_brokers.py", timeout_s=1800, quick_timeout_s=120),
)

# The targets of issue 14, by id: what RESULTS.md reports as met / missed / not measured.
TARGETS: dict[str, str] = {
    "heartbeat_vs_floor": "heartbeat that changes nothing ≤ 2× the floor",
    "same_value_vs_floor": "telemetry with the same value ≤ 2× the floor",
    "changed_value_vs_floor_write": "telemetry with a changed value ≤ floor + one state write",
    "heartbeat_vs_builtin": "heartbeat that changes nothing ≤ 0.5× HA's built-in MQTT entities",
    "same_value_vs_builtin": "same-value telemetry ≤ 0.5× HA's built-in MQTT sensor",
    "changed_value_vs_builtin": "changed-value telemetry ≤ 0.5× HA's built-in MQTT sensor",
    "relay_p50_vs_raw": "confirmed relay ≤ 1.5× the raw MQTT round trip, p50",
    "relay_p99_vs_raw": "confirmed relay ≤ 1.5× the raw MQTT round trip, p99",
    "tracker_flat": "tracker per-message cost flat within 10 % from 1 k to 100 k nodes",
    "tracker_memory": "tracker memory per node ≤ 1.5 KB",
    "mass_expiry_lag": "event-loop lag ≤ 100 ms for any number of simultaneous expiries",
    "false_offline_table": "false offline per node-hour at 1/5/10 % loss × multipliers 2/3/5",
    "system_rss_per_node": "RSS per node in a real hass < 100 KB",
    "system_startup_restore": "start-up cost with 1 000 nodes restored below the 3.1 s measured",
}
