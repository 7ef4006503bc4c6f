"""Floods and mass expiry through Home Assistant's real MQTT dispatch, in real time.

Run: ``.venv/bin/python -m pytest benchmarks/bench_flood.py -q -s -p no:cacheprovider``
(``BENCH_SMOKE=1``: seconds). Writes ``benchmarks/results/bench_flood.md``.

Reproduces issue 16 #9 (a birth flood took every live node offline) and #3 (``{}`` on an unknown
status name created a device), and measures issue 14's mass-expiry target, each before / after
in the same run:

1. **Birth flood**: 20 live nodes heartbeat every 2 s (timeout 6 s); a flooder delivers births
   with invented node ids on the discovery topic (``status/online``) at FLOOD_RATE per second for
   FLOOD_S seconds, half on our home, half on an unconfigured one. Variants: Home Assistant's
   per-topic discovery (our takeover disabled: what the issue measured) and ours (one flow per
   home, discovery.py). Numbers: messages our hub handled, discovery flows started, false
   offline of the live nodes, event-loop lag (a 10 ms sleep probe), RSS growth, log lines.
2. **Garbage flood**: ``{}`` on an unknown status name with invented ids: devices created.
3. **Mass expiry**: N nodes heard once, then silent together; loop lag while they all expire,
   with the hub's slices (availability.SLICE) and with one unbounded tick (before).

Messages enter where paho hands them to Home Assistant (``MQTT._async_mqtt_on_message`` of the
real client behind the harness's mock), as in bench_hub.py. The broker is not in the loop, so
"messages dropped by the broker while HA lags" is not modelled: lag and false offline are what
our side does with what reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import time
from typing import Any

from _benchlib import SMOKE, Target, fmt, report, table
from homeassistant.components.mqtt.models import DATA_MQTT
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from paho.mqtt.client import MQTTMessage
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot import availability as availability_module, discovery
from custom_components.heartbeat_iot.const import (
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MAX_NODES,
    CONF_MIN_TIMEOUT,
    DEFAULT_OPTIONS,
    DOMAIN,
)

HOME = "flood"
LIVE = 20
HB_INTERVAL = 2  # s; timeout = max(min_timeout 5, 3 x 2) = 6 s
FLOOD_RATE = 500 if SMOKE else 2_000  # births per second
FLOOD_S = 0.5 if SMOKE else 5.0
SETTLE_S = 1.0 if SMOKE else 8.0  # measured after the flood (deadlines pass meanwhile)
EXPIRY_SIZES: tuple[int, ...] = (20,) if SMOKE else (300, 1_000)
COMMAND = ".venv/bin/python -m pytest benchmarks/bench_flood.py -q -s -p no:cacheprovider"


def message(topic: str, payload: bytes) -> MQTTMessage:
    msg = MQTTMessage(topic=topic.encode())
    msg.payload = payload
    msg.qos = 0
    msg.retain = False
    msg.timestamp = time.monotonic()
    return msg


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LineCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1


@dataclass(slots=True)
class Probe:
    """Event-loop lag: how late a 10 ms sleep wakes up."""

    lags: list[float] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        while self.running:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - start - 0.01)

    def pct(self, q: float) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def setup_home(hass: HomeAssistant, max_nodes: int) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"HomeSync {HOME}",
        data={CONF_HOME_ID: HOME},
        options={
            **DEFAULT_OPTIONS,
            CONF_MAX_NODES: max_nodes,
            CONF_HEARTBEAT_INTERVAL: HB_INTERVAL,
            CONF_MIN_TIMEOUT: 5,
        },
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


def heartbeat(node: str, seq: int) -> MQTTMessage:
    body = {"seq": seq, "uptime": seq * HB_INTERVAL, "interval": HB_INTERVAL}
    return message(f"homesync/{HOME}/nodes/{node}/status/heartbeat", json.dumps(body).encode())


@dataclass(slots=True)
class FloodResult:
    variant: str
    injected: int = 0
    handled: int = 0
    flows: int = 0
    false_offline: int = 0
    devices: int = 0
    lag_p50: float = 0.0
    lag_p99: float = 0.0
    lag_max: float = 0.0
    rss_growth_mib: float = 0.0
    log_lines: int = 0
    wall_s: float = 0.0


async def run_flood(  # noqa: PLR0915 - one scenario, read top to bottom
    hass: HomeAssistant,
    variant: str,
    make_flood: Callable[[int], MQTTMessage],
    monkeypatch: pytest.MonkeyPatch,
) -> FloodResult:
    """Live nodes heartbeat while the flood runs; everything counted from our side."""
    result = FloodResult(variant)
    entry = await setup_home(hass, max_nodes=256)
    data: Any = entry.runtime_data
    deliver = hass.data[DATA_MQTT].client._mock_wraps._async_mqtt_on_message
    live = [f"live-{i:02d}" for i in range(LIVE)]
    for node in live:
        deliver(None, None, heartbeat(node, 1))
    await hass.async_block_till_done()
    assert data.availability.counts() == (LIVE, 0)

    # Messages of our home that decoded and reached routing: the hub's counters (every
    # message of the home is received; bad topics and payloads are also rejected).
    messages = data.stats.messages
    handled_before = messages.received - messages.rejected
    false_offline: list[str] = []

    @callback
    def on_offline(event: Event) -> None:
        if str(event.data["node_id"]).startswith("live-"):
            false_offline.append(event.data["node_id"])

    unsub = hass.bus.async_listen(f"{DOMAIN}_node_offline", on_offline)
    flow = hass.config_entries.flow
    original_init = flow.async_init

    async def counting_init(handler: str, *args: Any, **kwargs: Any) -> Any:
        if handler == DOMAIN:
            result.flows += 1
        return await original_init(handler, *args, **kwargs)

    monkeypatch.setattr(flow, "async_init", counting_init)
    counter = LineCounter()
    for name in ("homeassistant", "custom_components"):
        logging.getLogger(name).addHandler(counter)
    probe = Probe()
    probe_task = hass.async_create_background_task(probe.run(), "lag probe")
    rss0 = rss_kib()
    start = time.perf_counter()

    async def beats() -> None:
        seq = 1
        while time.perf_counter() - start < FLOOD_S + SETTLE_S:
            seq += 1
            for i, node in enumerate(live):
                deliver(None, None, heartbeat(node, seq))
                if i % 5 == 4:
                    await asyncio.sleep(0)
            await asyncio.sleep(HB_INTERVAL)

    async def flood() -> None:
        i = 0
        per_tick = max(1, FLOOD_RATE // 100)
        while time.perf_counter() - start < FLOOD_S:
            for _ in range(per_tick):
                deliver(None, None, make_flood(i))
                i += 1
            await asyncio.sleep(0.01)
        result.injected = i

    await asyncio.gather(beats(), flood())
    result.wall_s = time.perf_counter() - start
    result.handled = messages.received - messages.rejected - handled_before
    probe.running = False
    await probe_task
    result.rss_growth_mib = (rss_kib() - rss0) / 1024
    for name in ("homeassistant", "custom_components"):
        logging.getLogger(name).removeHandler(counter)
    unsub()
    result.false_offline = len(set(false_offline))
    result.devices = len(dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id))
    result.lag_p50, result.lag_p99 = probe.pct(0.5), probe.pct(0.99)
    result.lag_max = max(probe.lags, default=0.0) * 1000
    result.log_lines = counter.lines
    return result


def birth_flood(i: int) -> MQTTMessage:
    home = HOME if i % 2 else "stranger"
    body = json.dumps({"online": True, "reason": "boot"}).encode()
    return message(f"homesync/{home}/nodes/fake-{i}/status/online", body)


def garbage_flood(i: int) -> MQTTMessage:
    return message(f"homesync/{HOME}/nodes/junk-{i}/status/bogus{i % 7}", b"{}")


@pytest.mark.parametrize("variant", ["ha_per_topic", "ours"])
async def test_birth_flood(
    hass: HomeAssistant, mqtt_mock: Any, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    if variant == "ha_per_topic":

        async def keep(hass: HomeAssistant, *, offered: str | None = None) -> bool:
            return False

        monkeypatch.setattr(discovery, "async_take_over_discovery", keep)
        import custom_components.heartbeat_iot as package
        from custom_components.heartbeat_iot import config_flow

        monkeypatch.setattr(package, "async_take_over_discovery", keep)
        monkeypatch.setattr(config_flow, "async_take_over_discovery", keep)
    RESULTS["birth"].append(await run_flood(hass, variant, birth_flood, monkeypatch))


async def test_garbage_flood(
    hass: HomeAssistant, mqtt_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    RESULTS["garbage"].append(await run_flood(hass, "ours", garbage_flood, monkeypatch))


@dataclass(slots=True)
class ExpiryResult:
    nodes: int
    variant: str
    block_max: float  # ms of CPU, the longest synchronous step of our expiry work
    lag_max: float
    lag_p99: float
    offline: int
    wall_s: float


@pytest.mark.parametrize("variant", ["one_tick", "slices"])
@pytest.mark.parametrize("nodes", EXPIRY_SIZES)
async def test_mass_expiry(
    hass: HomeAssistant, mqtt_mock: Any, monkeypatch: pytest.MonkeyPatch, nodes: int, variant: str
) -> None:
    if variant == "one_tick":
        monkeypatch.setattr(availability_module, "SLICE", 10**9)
    entry = await setup_home(hass, max_nodes=nodes)
    data: Any = entry.runtime_data
    deliver = hass.data[DATA_MQTT].client._mock_wraps._async_mqtt_on_message
    ids = [f"n{i:05d}" for i in range(nodes)]
    for k, node in enumerate(ids):
        deliver(None, None, heartbeat(node, 1))
        if k % 100 == 99:
            await hass.async_block_till_done()
    await hass.async_block_till_done()
    # Discovering 1 000 nodes (devices, entities) takes longer than their 6 s timeout here: a
    # second round, in one burst, brings everyone online with the same last_seen.
    for node in ids:
        deliver(None, None, heartbeat(node, 2))
    await hass.async_block_till_done()
    await asyncio.sleep(1.5)  # the fleet check ends a silence suspected during discovery
    for node in ids:
        deliver(None, None, heartbeat(node, 3))
    await hass.async_block_till_done()
    assert data.availability.counts() == (nodes, 0)
    # CPU of each synchronous step of our expiry work (a tick with its writes and events, or
    # one slice of notifications): how long our code holds the loop, whatever else the
    # machine runs. The lag probe (wall time) is reported next to it.
    monitor = data.availability
    blocks: list[float] = []

    def timed(method: Callable[..., None]) -> Callable[..., None]:
        def wrapper(*args: Any) -> None:
            start = time.process_time()
            method(*args)
            blocks.append(time.process_time() - start)

        return wrapper

    monkeypatch.setattr(monitor, "_run_tick", timed(monitor._run_tick))
    monkeypatch.setattr(monitor, "_notify", timed(monitor._notify))
    probe = Probe()
    task = hass.async_create_background_task(probe.run(), "lag probe")
    start = time.perf_counter()
    # Everyone silent: correlated silence holds them for one timeout, then they all expire
    # together (mass_silence) -- the largest simultaneous expiry there can be.
    while data.availability.counts()[1] < nodes and time.perf_counter() - start < 60:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    probe.running = False
    await task
    RESULTS["expiry"].append(
        ExpiryResult(
            nodes,
            variant,
            max(blocks, default=0.0) * 1000,
            max(probe.lags, default=0.0) * 1000,
            probe.pct(0.99),
            data.availability.counts()[1],
            time.perf_counter() - start,
        )
    )


RESULTS: dict[str, list[Any]] = {"birth": [], "garbage": [], "expiry": []}
_WALL = time.perf_counter()


def test_zz_report() -> None:
    """Runs last (file order): writes the tables."""
    birth_rows = [
        [
            r.variant,
            f"{r.injected:,}",
            f"{r.handled:,}",
            f"{r.flows:,}",
            f"{r.false_offline} of {LIVE}",
            f"{r.lag_p50:.1f} / {r.lag_p99:.1f} / {r.lag_max:.0f}",
            f"{r.rss_growth_mib:+.1f}",
            f"{r.log_lines:,}",
            f"{r.wall_s:.1f}",
        ]
        for r in RESULTS["birth"] + RESULTS["garbage"]
    ]
    flood_table = table(
        [
            "flood / discovery",
            "flood messages",
            "messages routed by our hub",
            "discovery flows started",
            "false offline (live nodes)",
            "loop lag p50 / p99 / max (ms)",
            "RSS growth (MiB)",
            "log lines",
            "wall (s)",
        ],
        birth_rows,
    )
    garbage_devices = [r.devices for r in RESULTS["garbage"]]
    expiry_rows = [
        [
            f"{r.nodes:,}",
            r.variant,
            f"{r.block_max:.1f}",
            f"{r.lag_max:.0f}",
            f"{r.lag_p99:.1f}",
            f"{r.offline:,}",
        ]
        for r in RESULTS["expiry"]
    ]
    expiry_table = table(
        [
            "nodes expiring together",
            "variant",
            "longest step of our work (ms CPU)",
            "loop lag max (ms, wall)",
            "lag p99 (ms)",
            "offline at end",
        ],
        expiry_rows,
    )
    sliced = [r for r in RESULTS["expiry"] if r.variant == "slices"]
    targets = []
    if sliced:
        worst = max(sliced, key=lambda r: r.block_max)
        targets.append(
            Target(
                "mass_expiry_lag",
                worst.block_max,
                100,
                "ms",
                f"longest time our expiry work held the event loop (CPU of one synchronous "
                f"step) while {worst.nodes:,} nodes expired at once, with the hub's slices; the "
                "wall-clock lag probe is in the table (it also counts the machine's other load)",
            )
        )
    report(
        "bench_flood",
        "bench_flood — birth and garbage floods, mass expiry (Home Assistant harness, real time)",
        COMMAND,
        [
            f"- birth flood: {LIVE} live nodes heartbeat every {HB_INTERVAL} s (timeout 6 s); "
            f"{FLOOD_RATE:,} births/s with invented node ids for {FLOOD_S:g} s (half on our "
            f"home, half on an unconfigured one), then {SETTLE_S:g} s more; variants in the "
            "same run",
            "- entry point: `MQTT._async_mqtt_on_message` of the real client; no broker, so "
            "nothing is dropped: loop lag is what delays the live heartbeats",
            "- loop lag: how late a 10 ms `asyncio.sleep` wakes up",
        ],
        [
            ("1. Floods (issue 16 #9 and #3)", flood_table),
            (
                "2. Garbage flood: devices created",
                f"`{{}}` on unknown status names with invented ids: {garbage_devices} devices "
                "for the home (the home's hub device and the live nodes only means none was "
                f"created by the garbage: expected {1 + LIVE})",
            ),
            ("3. Mass expiry (issue 14)", expiry_table),
        ],
        time.perf_counter() - _WALL,
        targets=targets,
    )
    fmt(0)
