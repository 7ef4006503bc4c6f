"""Confirmed relay latency through Home Assistant vs the raw MQTT round trip, real broker.

Run: ``.venv/bin/python -m pytest benchmarks/bench_relay.py -q -s -p no:cacheprovider``
(``BENCH_SMOKE=1`` for a quick check that it still runs). Writes
``benchmarks/results/bench_relay.md``.

Nothing mocked: a real mosquitto on a free loopback port (``set_tcp_nodelay true``, the
project's broker settings), one firmware node (``firmware/simnode.py``; the firmware sets
TCP_NODELAY on its socket), Home Assistant's real MQTT integration connected to that broker,
and our integration. Latency is wall time (``time.perf_counter``), one command at a time, a
pause of ``GAP_MS`` between the answer and the next command (a burst, a scene, a retry: the
Nagle stall needs a previous write within the peer's delayed-ACK window). Variants, alternated
rep by rep in this one run (rotating order), all against the same node on the same broker:

- raw: a paho client (TCP_NODELAY on its socket) publishes ``command/relay`` (QoS 1, the
  payload our integration sends) and waits for the node's ``response/command`` with its
  request id: the floor any MQTT client pays.
- ours: ``switch.turn_on`` / ``turn_off`` with ``blocking=True`` (returns when the node's
  answer confirmed it), TCP_NODELAY set on Home Assistant's MQTT socket by our integration
  (option "TCP_NODELAY on Home Assistant's MQTT connection", on by default).
- stock: the same service call with that socket's TCP_NODELAY cleared (what Home Assistant
  does on its own, i.e. the option turned off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
import json
from pathlib import Path
import socket
from statistics import median
import threading
import time
from typing import Any
import uuid

from _benchlib import SMOKE, Target, fmt_stat, report, reps, table
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from paho.mqtt import client as paho
import pytest

from custom_components.heartbeat_iot.const import DOMAIN
from devstack.firmware import load_test_harness
from tests.e2e.inprocess import ha_mqtt_socket, homesync_on_broker, running_mosquitto, wait_until

ROOT = Path(__file__).resolve().parents[1]
HOME = "bench"
NODE = "relay1"
COMMANDS = 10 if SMOKE else 200  # per variant per rep
WARMUP = 3 if SMOKE else 20  # per variant, untimed, before the first rep
GAP_MS = 20.0
COMMAND = ".venv/bin/python -m pytest benchmarks/bench_relay.py -q -s -p no:cacheprovider"


harness = load_test_harness()
# The firmware remembers every request id of the last 120 s (exactly-once) and answers "busy"
# beyond `request_memory` (default 256) of them; this benchmark sends ~3 000 commands in a few
# minutes, so the node remembers up to 4 096. That many ids (~100 B each) do not fit the 256 KiB
# MicroPython heap of the tests: the benchmark measures latency, so the same firmware runs on
# CPython here, for the raw and the HA variants alike.
RUNTIME = "cpython"
REQUEST_MEMORY = 4096


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class RawRequester:
    """A paho client with TCP_NODELAY that sends relay commands and waits for the answers."""

    def __init__(self, port: int) -> None:
        self.base = f"homesync/{HOME}/nodes/{NODE}/"
        self._waiting: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="bench-raw-" + uuid.uuid4().hex[:8]
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        self.client.subscribe(self.base + "response/command", qos=1)
        if not subscribed.wait(5):
            raise AssertionError("raw requester could not subscribe")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            rid = json.loads(msg.payload).get("request_id")
        except (ValueError, AttributeError):
            return
        with self._lock:
            event = self._waiting.pop(rid, None)
        if event is not None:
            event.set()

    def round_trip(self, action: str) -> float:
        """Seconds from publishing one command to receiving its answer."""
        rid = uuid.uuid4().hex
        body = json.dumps(
            {
                "action": action,
                "request_id": rid,
                "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ttl": 30,
            }
        )
        done = threading.Event()
        with self._lock:
            self._waiting[rid] = done
        start = time.perf_counter()
        self.client.publish(self.base + "command/relay", body, qos=1)
        if not done.wait(5):
            raise AssertionError(f"no answer to raw command {rid}")
        return time.perf_counter() - start

    def run(self, count: int, first: int) -> list[float]:
        """`count` round trips (alternating on/off), GAP_MS apart; milliseconds each."""
        out = []
        for k in range(count):
            out.append(self.round_trip("on" if (first + k) % 2 == 0 else "off") * 1000)
            time.sleep(GAP_MS / 1000)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(socket_enabled: None, tmp_path: Path) -> Iterator[Any]:
    """A real mosquitto (set_tcp_nodelay true) on a free loopback port."""
    with running_mosquitto(tmp_path) as server:
        yield server


@pytest.fixture
def node(broker: Any, tmp_path: Path) -> Iterator[Any]:
    """One firmware node, started by the test once Home Assistant listens (its birth is live).

    Heartbeat and telemetry are rare, so commands dominate the node's work.
    """
    proc = harness.NodeProcess(
        str(tmp_path),
        broker.port,
        NODE,
        home=HOME,
        runtime=RUNTIME,
        relay=False,
        heartbeat_interval=30,
        telemetry_interval=30,
        measure_interval_ms=1000,
        watchdog_s=0,
        request_memory=REQUEST_MEMORY,
    )
    try:
        yield proc
    finally:
        proc.stop(timeout=5)
        proc.close()


def ha_socket(hass: HomeAssistant) -> socket.socket:
    sock = ha_mqtt_socket(hass)
    assert sock is not None
    return sock


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class Runner:
    """The three variants; on/off alternate across all of them (every command switches)."""

    def __init__(
        self,
        hass: HomeAssistant,
        relay_id: str,
        sock: socket.socket,
        raw: RawRequester,
        *,
        restore: bool,
    ) -> None:
        self.hass = hass
        self.relay_id = relay_id
        self.sock = sock
        self.raw = raw
        self.restore = 1 if restore else 0  # TCP_NODELAY as our integration left it
        self.flip = 0

    async def via_ha(self, count: int) -> list[float]:
        out = []
        for _ in range(count):
            service = "turn_on" if self.flip % 2 == 0 else "turn_off"
            self.flip += 1
            start = time.perf_counter()
            await self.hass.services.async_call(
                SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: self.relay_id}, blocking=True
            )
            out.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(GAP_MS / 1000)
        return out

    async def ours(self, count: int) -> list[float]:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, self.restore)
        return await self.via_ha(count)

    async def stock(self, count: int) -> list[float]:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        try:
            return await self.via_ha(count)
        finally:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, self.restore)

    async def raw_paho(self, count: int) -> list[float]:
        first = self.flip
        self.flip += count
        return await self.hass.async_add_executor_job(self.raw.run, count, first)


VARIANTS = {
    "raw": "raw paho request → node → response (both TCP_NODELAY)",
    "ours": "HA `switch.turn_on/off`, confirmed, our TCP_NODELAY on",
    "stock": "HA `switch.turn_on/off`, confirmed, HA's stock socket",
}


def summarize(samples: dict[str, list[list[float]]]) -> tuple[list[list[str]], list[Target]]:
    """Table rows (p50 / p99 per variant, ratios to raw) and the two relay targets."""

    def stats(key: str, q: float) -> list[float]:
        return [percentile(rep_samples, q) for rep_samples in samples[key]]

    rows = []
    for key, label in VARIANTS.items():
        p50 = stats(key, 50)
        p99 = stats(key, 99)
        raw50 = stats("raw", 50)
        raw99 = stats("raw", 99)
        ratio50 = [a / b for a, b in zip(p50, raw50, strict=True)]
        ratio99 = [a / b for a, b in zip(p99, raw99, strict=True)]
        rows.append(
            [
                label,
                *fmt_stat(p50),
                *fmt_stat(p99),
                f"{fmt_stat(ratio50)[0]}× / {fmt_stat(ratio99)[0]}×",
            ]
        )

    def median_ratio(q: float) -> float:
        return median(a / b for a, b in zip(stats("ours", q), stats("raw", q), strict=True))

    ours50, raw50m = median(stats("ours", 50)), median(stats("raw", 50))
    ours99, raw99m = median(stats("ours", 99)), median(stats("raw", 99))
    stock50 = median(stats("stock", 50))
    why50 = (
        f"ours {ours50:.2f} ms vs raw {raw50m:.2f} ms p50; HA's stock socket {stock50:.1f} ms. "
        "The difference to raw is Home Assistant's service call, our command manager, the "
        "entity's state write and HA's MQTT dispatch of the answer"
    )
    why99 = f"ours {ours99:.2f} ms vs raw {raw99m:.2f} ms p99 (per-rep p99 of {COMMANDS} commands)"
    targets = [
        Target("relay_p50_vs_raw", median_ratio(50), 1.5, "× raw", why50),
        Target("relay_p99_vs_raw", median_ratio(99), 1.5, "× raw", why99),
    ]
    return rows, targets


@pytest.mark.timeout(3600)
async def test_bench_relay(hass: HomeAssistant, broker: Any, node: Any) -> None:
    """Measure, print and write the table (no timing assertions: a benchmark, not a test)."""
    wall = time.perf_counter()
    raw: RawRequester | None = None
    try:
        async with homesync_on_broker(hass, broker.port, HOME, connect_timeout=10):
            await hass.async_add_executor_job(node.start)
            registry = er.async_get(hass)
            relay_id = await wait_until(
                lambda: registry.async_get_entity_id("switch", DOMAIN, f"{HOME}_{NODE}_relay"),
                20,
                "the node's relay switch",
            )
            await wait_until(
                lambda: (s := hass.states.get(relay_id)) is not None and s.state in ("on", "off"),
                20,
                f"the relay state ({hass.states.get(relay_id)})",
            )
            sock = ha_socket(hass)
            set_by_us = nodelay(sock)
            raw = await hass.async_add_executor_job(RawRequester, broker.port)

            runner = Runner(hass, relay_id, sock, raw, restore=set_by_us)
            variants: list[tuple[str, Callable[[int], Any]]] = [
                ("raw", runner.raw_paho),
                ("ours", runner.ours),
                ("stock", runner.stock),
            ]
            for _key, run in variants:
                await run(WARMUP)
            samples: dict[str, list[list[float]]] = {key: [] for key, _ in variants}
            n_reps = reps()
            for rep in range(n_reps):
                shift = rep % len(variants)
                for key, run in variants[shift:] + variants[:shift]:
                    samples[key].append(await run(COMMANDS))
                print(f"rep {rep + 1}/{n_reps} done", flush=True)
            still_set = nodelay(ha_socket(hass))
    finally:
        if raw is not None:
            await hass.async_add_executor_job(raw.close)
    wall = time.perf_counter() - wall

    rows, targets = summarize(samples)
    report(
        "bench_relay",
        "bench_relay — confirmed relay through Home Assistant vs the raw MQTT round trip",
        COMMAND,
        [
            f"- method: wall time per command (`time.perf_counter`), {COMMANDS} commands per "
            f"variant per rep, {n_reps} reps (rotating order), {WARMUP} untimed warm-up "
            f"commands per variant; {GAP_MS:.0f} ms pause between an answer and the next "
            "command; p50 / p99 per rep, median of the reps with the min–max spread; ratios "
            "paired per rep",
            f"- broker: mosquitto (`set_tcp_nodelay true`) on 127.0.0.1; node: firmware "
            f"`simnode.py` on {RUNTIME} (request_memory {REQUEST_MEMORY}; TCP_NODELAY on "
            "its socket); "
            "Home Assistant's real MQTT "
            "integration (not `mqtt_mock`), asyncio debug mode off (benchmarks/conftest.py)",
            f"- TCP_NODELAY on HA's MQTT socket after our entry loaded: {set_by_us} "
            f"(still {still_set} at the end)",
        ],
        [
            (
                "Results (ms)",
                table(
                    ["variant", "p50", "p50 spread", "p99", "p99 spread", "÷ raw (p50 / p99)"],
                    rows,
                ),
            )
        ],
        wall,
        ("pytest-homeassistant-custom-component", "paho-mqtt"),
        targets=targets,
    )
    assert set_by_us, "our integration did not set TCP_NODELAY on HA's MQTT socket"
