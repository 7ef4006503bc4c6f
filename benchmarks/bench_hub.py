"""Cost per MQTT message through Home Assistant's real MQTT client into the hub.

Run: ``.venv/bin/python -m pytest benchmarks/bench_hub.py -q -s -p no:cacheprovider``
(``BENCH_SMOKE=1`` for a quick check that it still runs). Writes
``benchmarks/results/bench_hub.md``. Not collected by ``./scripts/test`` (``testpaths`` is
``tests``; ``bench_*.py`` files are only collected when named on the command line).

One Home Assistant (pytest-homeassistant-custom-component harness, asyncio debug off), N nodes,
M messages per pass, round-robin over the nodes. Each message enters where paho hands it to
Home Assistant: ``MQTT._async_mqtt_on_message`` of the *real* client behind the harness's
MagicMock (``async_fire_mqtt_message`` would time the mock's call recording, perf-anchors
gotcha 2). Cases, alternated rep by rep in this one run (the order rotates each rep):

a. heartbeats to our hub that change nothing a user sees (must write no state)
b. telemetry to our hub whose value changes every message (one state write each)
c. telemetry to our hub with the same value (must write no state)
d. the floor: a bare ``mqtt.async_subscribe`` wildcard callback that only decodes the JSON
e. Home Assistant's own MQTT entities from discovery, configured the fair way a user would do
   heartbeat availability today (LWT availability topic + template, and ``off_delay`` /
   ``expire_after``): e0 a connectivity ``binary_sensor`` on the heartbeat topic (JSON
   ``value_template``, ``off_delay``) fed the same heartbeats as a; e1 / e2 a power ``sensor``
   (``expire_after``) with varying / repeated values, as b / c
w. one state write alone: ``async_write_ha_state()`` of a plain ``SensorEntity`` with the same
   descriptors as our power sensor (device class, unit, state class, precision), a new value
   each time, round-robin over N entities: what "floor + one state write" adds
f. one deadline-timer wake-up: ``async_track_point_in_utc_time`` armed for now + the loop
   iteration that fires it (the hub's timer costs this per wake-up, plus ``tracker.tick()``)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
import gc
import json
import os
from statistics import median
import time
from typing import Any

from _benchlib import SMOKE, Target, fmt, fmt_stat, report, reps, table
from homeassistant.components import mqtt
from homeassistant.components.mqtt.models import DATA_MQTT
from homeassistant.components.sensor import SensorDeviceClass, SensorEntity, SensorStateClass
from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.util import dt as dt_util
from homeassistant.util.json import json_loads
from paho.mqtt.client import MQTTMessage
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, MockEntityPlatform

from custom_components.heartbeat_iot.const import (
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MAX_NODES,
    DEFAULT_OPTIONS,
    DOMAIN,
)
from custom_components.heartbeat_iot.homesync.protocol import (
    TELEMETRY_SCHEMA,
    check_payload,
    decode_heartbeat,
    decode_payload,
    parse_topic,
    validate,
)
from custom_components.heartbeat_iot.models import now as models_now

N = 20 if SMOKE else 1_000
M = 1_000 if SMOKE else 50_000
TIMER_WAKEUPS = 500 if SMOKE else 20_000
# HA's built-in MQTT entities (cases e*): on by default, BENCH_BUILTIN=0 skips them.
BUILTIN = os.environ.get("BENCH_BUILTIN", "1") != "0"
HOME = "bench"
FLOOR_HOME = "floor"  # a second topic tree, not matched by the hub's subscription
# Nodes announce a 10 min heartbeat (timeout 30 min): no node may time out while other cases
# run. The per-message cost does not depend on the interval.
INTERVAL = 600
BLOCK_EVERY = 1_000  # await hass.async_block_till_done() every this many messages (timed)
COMMAND = ".venv/bin/python -m pytest benchmarks/bench_hub.py -q -s -p no:cacheprovider"


def node(i: int) -> str:
    return f"node-{i:04d}"


def hub_topic(i: int, category: str, name: str, home: str = HOME) -> str:
    return f"homesync/{home}/nodes/{node(i)}/{category}/{name}"


def builtin_topic(i: int, leaf: str) -> str:
    return f"builtin/{node(i)}/{leaf}"


def message(topic: str, payload: bytes, *, qos: int = 0) -> MQTTMessage:
    msg = MQTTMessage(topic=topic.encode())
    msg.payload = payload
    msg.qos = qos
    msg.retain = False
    msg.timestamp = time.monotonic()
    return msg


@dataclass(slots=True)
class Case:
    """One measured case: builds its messages (untimed), then they are delivered (timed)."""

    key: str
    label: str
    build: Callable[[int], list[MQTTMessage]] | None  # message count -> messages
    expected_changes: float | None  # state_changed per message that must be seen (None: any)
    prepare: Callable[[], list[MQTTMessage]] | None = None  # untimed, before every pass
    # Instead of build: does `count` units of work itself; (CPU seconds, state_changed).
    run: Callable[[int], Awaitable[tuple[float, int]]] | None = None
    cpu_us: list[float] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)


class Bench:
    """Holds the Home Assistant under test and the message builders."""

    def __init__(self, hass: HomeAssistant) -> None:
        self.hass = hass
        # The real client behind the harness's MagicMock: what paho's on_message calls.
        self.deliver = hass.data[DATA_MQTT].client._mock_wraps._async_mqtt_on_message
        self.seq = [0] * N
        self.builtin_seq = [0] * N
        self.write_entities: list[WriteSensor] = []
        self.counter = 0
        self.state_changes = 0
        self.floor_values: dict[str, float] = {}

    # --- message builders (untimed) ---------------------------------------------------

    def heartbeats(self, count: int, *, builtin: bool = False) -> list[MQTTMessage]:
        if builtin:
            topics = [builtin_topic(i, "status/heartbeat") for i in range(N)]
            seqs = self.builtin_seq
        else:
            topics = [hub_topic(i, "status", "heartbeat") for i in range(N)]
            seqs = self.seq
        msgs = []
        for k in range(count):
            i = k % N
            seqs[i] += 1
            seq = seqs[i]
            payload = f'{{"seq": {seq}, "uptime": {seq * INTERVAL}, "interval": {INTERVAL}}}'
            msgs.append(message(topics[i], payload.encode()))
        return msgs

    def _values(self, topics: Sequence[str], count: int, value: float | None) -> list[MQTTMessage]:
        msgs = []
        n = len(topics)
        for k in range(count):
            if value is None:
                self.counter += 1
                payload = f'{{"value": {self.counter / 10}, "unit": "W"}}'.encode()
            else:
                payload = f'{{"value": {value}, "unit": "W"}}'.encode()
            msgs.append(message(topics[k % n], payload))
        return msgs

    def telemetry(self, count: int, value: float | None = None) -> list[MQTTMessage]:
        return self._values([hub_topic(i, "telemetry", "power") for i in range(N)], count, value)

    def floor(self, count: int) -> list[MQTTMessage]:
        topics = [hub_topic(i, "telemetry", "power", FLOOR_HOME) for i in range(N)]
        return self._values(topics, count, None)

    def builtin(self, count: int, value: float | None = None) -> list[MQTTMessage]:
        topics = [builtin_topic(i, "telemetry/power") for i in range(N)]
        return self._values(topics, count, value)

    def builtin_heartbeats(self, count: int) -> list[MQTTMessage]:
        """Heartbeats like case a's, on the built-in binary sensors' topics."""
        return self.heartbeats(count, builtin=True)

    # --- delivery ---------------------------------------------------------------------

    async def send(self, msgs: Sequence[MQTTMessage], block_every: int = BLOCK_EVERY) -> None:
        deliver = self.deliver
        hass = self.hass
        for k, msg in enumerate(msgs, 1):
            deliver(None, None, msg)
            if k % block_every == 0:
                await hass.async_block_till_done()
        await hass.async_block_till_done()

    async def timed(self, msgs: Sequence[MQTTMessage]) -> tuple[float, int]:
        """(CPU seconds, state_changed events) for delivering `msgs`."""
        gc.collect()
        changes = self.state_changes
        start = time.process_time()
        await self.send(msgs)
        cpu = time.process_time() - start
        return cpu, self.state_changes - changes

    async def timed_writes(self, count: int) -> tuple[float, int]:
        """Case w: `count` state writes alone, same cadence of block_till_done as `send`."""
        entities = self.write_entities
        values = [(self.counter + k) / 10 for k in range(count)]
        self.counter += count
        hass = self.hass
        gc.collect()
        changes = self.state_changes
        start = time.process_time()
        for k, value in enumerate(values, 1):
            entity = entities[k % N]
            entity._attr_native_value = value
            entity.async_write_ha_state()
            if k % BLOCK_EVERY == 0:
                await hass.async_block_till_done()
        await hass.async_block_till_done()
        cpu = time.process_time() - start
        return cpu, self.state_changes - changes

    # --- setup ------------------------------------------------------------------------

    @callback
    def count_state_change(self, _event: Event) -> None:
        self.state_changes += 1

    @callback
    def floor_callback(self, msg: mqtt.ReceiveMessage) -> None:
        """perf-anchors B: decode and keep the value, nothing else."""
        self.floor_values[msg.topic] = json_loads(msg.payload)["value"]

    async def setup_hub(self) -> float:
        """Our integration with N discovered nodes (each with a power sensor); CPU seconds."""
        start = time.process_time()
        entry = MockConfigEntry(
            domain=DOMAIN,
            title=f"HomeSync {HOME}",
            data={CONF_HOME_ID: HOME},
            options={**DEFAULT_OPTIONS, CONF_MAX_NODES: N, CONF_HEARTBEAT_INTERVAL: INTERVAL},
            unique_id=HOME,
        )
        entry.add_to_hass(self.hass)
        assert await self.hass.config_entries.async_setup(entry.entry_id)
        await self.hass.async_block_till_done()
        # The home's statistics sensors move on a wall-clock timer (once a minute at most),
        # not per message: stopped here so state_changed/msg counts per-message writes only.
        # Their per-message cost (two counter increments in the hub) stays in every case.
        entry.runtime_data.stats.async_stop()
        # Discovery by the first heartbeat, the power sensor by the first reading, and a
        # second heartbeat so that link quality (a diagnostic sensor) has settled at 100 %.
        await self.send(self.heartbeats(N), block_every=100)
        await self.send(self.telemetry(N), block_every=100)
        await self.send(self.heartbeats(N), block_every=100)
        return time.process_time() - start

    async def setup_floor(self) -> None:
        await mqtt.async_subscribe(
            self.hass,
            f"homesync/{FLOOR_HOME}/nodes/+/telemetry/+",
            self.floor_callback,
            encoding=None,
        )

    async def setup_write(self) -> None:
        """Case w: N plain sensors on a platform of their own."""
        platform = MockEntityPlatform(self.hass, domain="sensor", platform_name="bench_write")
        self.write_entities = [WriteSensor(i) for i in range(N)]
        await platform.async_add_entities(self.write_entities)
        await self.timed_writes(N)  # first write of each: the state exists from now on

    async def setup_builtin(self) -> float:
        """N sensors + N binary sensors from MQTT discovery, configured the fair way."""
        start = time.process_time()
        configs = []
        for i in range(N):
            heartbeat = {
                "name": "Connectivity",
                "unique_id": f"builtin_{node(i)}_connectivity",
                "state_topic": builtin_topic(i, "status/heartbeat"),
                # Any heartbeat means "on"; off_delay turns it off when they stop.
                "value_template": "{{ 'ON' if value_json.uptime is defined else 'OFF' }}",
                "device_class": "connectivity",
                "off_delay": 1800,
                "availability_topic": builtin_topic(i, "status/online"),
                "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {"identifiers": [f"builtin_{node(i)}"], "name": f"builtin {node(i)}"},
            }
            configs.append(
                message(
                    f"homeassistant/binary_sensor/builtin_{node(i)}/connectivity/config",
                    json.dumps(heartbeat).encode(),
                )
            )
            config = {
                "name": "Power",
                "unique_id": f"builtin_{node(i)}_power",
                "state_topic": builtin_topic(i, "telemetry/power"),
                "value_template": "{{ value_json.value }}",
                "unit_of_measurement": "W",
                "device_class": "power",
                "state_class": "measurement",
                # The cost is a timer cancel + re-arm per message whatever the duration;
                # long enough that nothing expires while the other cases run.
                "expire_after": 1800,
                "availability_topic": builtin_topic(i, "status/online"),
                "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {"identifiers": [f"builtin_{node(i)}"], "name": f"builtin {node(i)}"},
            }
            configs.append(
                message(
                    f"homeassistant/sensor/builtin_{node(i)}/power/config",
                    json.dumps(config).encode(),
                )
            )
        await self.send(configs, block_every=100)
        online = [message(builtin_topic(i, "status/online"), b'{"online": true}') for i in range(N)]
        await self.send(online, block_every=100)
        await self.send(self.builtin(N), block_every=100)
        await self.send(self.builtin_heartbeats(N), block_every=100)
        return time.process_time() - start

    def entity_counts(self) -> tuple[int, int]:
        """(our entities, built-in MQTT entities) in the entity registry."""
        entries = er.async_get(self.hass).entities.values()
        ours = sum(1 for e in entries if e.platform == DOMAIN)
        builtin = sum(1 for e in entries if e.platform == mqtt.DOMAIN)
        return ours, builtin

    async def timer_wakeups(self, count: int) -> float:
        """CPU seconds for `count` timer wake-ups (arm for now, let the loop fire it)."""
        fired = 0

        @callback
        def on_timer(_now: Any) -> None:
            nonlocal fired
            fired += 1

        gc.collect()
        start = time.process_time()
        for _ in range(count):
            async_track_point_in_utc_time(self.hass, on_timer, dt_util.utcnow())
            await asyncio.sleep(0)
        await self.hass.async_block_till_done()
        cpu = time.process_time() - start
        assert fired == count, f"{fired} of {count} timers fired"
        return cpu


class WriteSensor(SensorEntity):
    """Case w: a sensor described like our power sensor, written from outside."""

    _attr_should_poll = False
    _attr_device_class = SensorDeviceClass.POWER
    _attr_native_unit_of_measurement = "W"
    _attr_state_class = SensorStateClass.MEASUREMENT
    _attr_suggested_display_precision = 1

    def __init__(self, i: int) -> None:
        self._attr_name = f"write {node(i)} power"
        self._attr_unique_id = f"bench_write_{node(i)}_power"
        self._attr_native_value = 0.0


def cases(bench: Bench) -> list[Case]:
    result = [
        Case(
            "a",
            "a. heartbeat → hub, nothing visible changes",
            bench.heartbeats,
            0.0,
        ),
        Case(
            "b",
            "b. telemetry → hub, value changes every message",
            bench.telemetry,
            1.0,
        ),
        Case(
            "c",
            "c. telemetry → hub, same value",
            lambda count: bench.telemetry(count, 42.0),
            0.0,
            prepare=lambda: bench.telemetry(N, 42.0),
        ),
        Case(
            "d",
            "d. floor: bare `mqtt.async_subscribe` wildcard + JSON decode",
            bench.floor,
            0.0,
        ),
        Case(
            "w",
            "w. one state write alone (`async_write_ha_state`, plain power sensor)",
            None,
            1.0,
            run=bench.timed_writes,
        ),
    ]
    if BUILTIN:
        result += [
            Case(
                "e0",
                "e0. HA MQTT binary_sensor (LWT + `off_delay`), heartbeat",
                bench.builtin_heartbeats,
                0.0,
            ),
            Case(
                "e1",
                "e1. HA MQTT sensor (`expire_after`), value changes every message",
                bench.builtin,
                1.0,
            ),
            Case(
                "e2",
                "e2. HA MQTT sensor (`expire_after`), same value",
                lambda count: bench.builtin(count, 42.0),
                0.0,
                prepare=lambda: bench.builtin(N, 42.0),
            ),
        ]
    return result


BREAKDOWN_CALLS = 1_000 if SMOKE else 50_000


def breakdown_jobs(data: Any) -> list[tuple[str, Callable[[], object]]]:
    """Pieces of the hub's per-message path, called on their own (same inputs as a/c)."""
    topic_name = hub_topic(1, "telemetry", "power")
    topic = parse_topic(topic_name)
    heartbeat_topic = parse_topic(hub_topic(1, "status", "heartbeat"))
    telemetry = b'{"value": 42.0, "unit": "W"}'
    tracker = data.availability.tracker
    topics = data.hub._routes
    record = tracker.handle(node(1))
    heartbeat = b'{"seq": 5, "uptime": 3000, "interval": 600}'
    return [
        (
            "`protocol.parse_topic` (a topic seen for the first time)",
            lambda: parse_topic(topic_name),
        ),
        ("the hub's parsed-topic cache (every later message)", lambda: topics.get(topic_name)),
        ("`protocol.decode_payload` (orjson)", lambda: decode_payload(telemetry)),
        (
            "`protocol.check_payload`, telemetry (by hand; the dict literal included)",
            lambda: check_payload(topic, {"value": 42.0, "unit": "W"}),
        ),
        (
            "`protocol.check_payload`, heartbeat (by hand; the dict literal included)",
            lambda: check_payload(heartbeat_topic, {"seq": 5, "uptime": 3000, "interval": 600}),
        ),
        (
            "`protocol.validate(TELEMETRY_SCHEMA, …)` (voluptuous, before issue 14)",
            lambda: validate(TELEMETRY_SCHEMA, {"value": 42.0, "unit": "W"}),
        ),
        (
            "`protocol.decode_heartbeat` (decode + hand check in one call, the quiet path's)",
            lambda: decode_heartbeat(heartbeat),
        ),
        (
            "`tracker.quiet_message` on the node's record (a live message of an online node)",
            lambda: tracker.quiet_message(record),
        ),
        (
            "`tracker.on_message` + `next_deadline` (the full path, before issue 14)",
            lambda: (
                tracker.on_message(node(1), retained=False),
                tracker.next_deadline(),
            ),
        ),
        ("`models.now()` (the integration's clock, `time.time()`)", models_now),
        (
            "`dt_util.utcnow().timestamp()` (the clock before issue 14)",
            lambda: dt_util.utcnow().timestamp(),
        ),
    ]


def time_calls(job: Callable[[], object], calls: int) -> float:
    """µs per call."""
    gc.collect()
    start = time.process_time()
    for _ in range(calls):
        job()
    return (time.process_time() - start) / calls * 1e6


def summarize(
    measured: list[Case], timer_us: list[float], n_reps: int
) -> tuple[list[list[str]], str, list[Target]]:
    """(all rows, the side-by-side table, the targets of issue 14)."""
    by_key = {case.key: case for case in measured}
    floor = median(by_key["d"].cpu_us)
    rows = []
    for case in measured:
        med, spread = fmt_stat(case.cpu_us, 1)
        ratio = median(case.cpu_us) / floor
        rows.append([case.label, med, spread, f"{ratio:.1f}×", f"{median(case.changes):.3f}"])
    med, spread = fmt_stat(timer_us, 1)
    rows.append(
        ["f. one timer wake-up (arm at now + loop iteration), per wake-up", med, spread, "–", "–"]
    )

    def paired(num: str, *den: str) -> list[float]:
        """num / sum(den), per rep (variants of one rep ran back to back)."""
        return [
            by_key[num].cpu_us[r] / sum(by_key[d].cpu_us[r] for d in den) for r in range(n_reps)
        ]

    def cell(key: str) -> str:
        if key not in by_key:
            return "–"
        med, spread = fmt_stat(by_key[key].cpu_us, 1)
        return f"{med} ({spread})"

    def ratio_cell(num: str, *den: str) -> str:
        if not all(k in by_key for k in (num, *den)):
            return "–"
        med, spread = fmt_stat(paired(num, *den), 2)
        return f"{med}× ({spread})"

    side_rows = [
        [
            "heartbeat, nothing visible changes",
            cell("e0"),
            cell("d"),
            cell("a"),
            ratio_cell("a", "d"),
            ratio_cell("a", "e0"),
        ],
        [
            "telemetry, value changes",
            cell("e1"),
            cell("d"),
            cell("b"),
            ratio_cell("b", "d") + " · ÷ (floor + write): " + ratio_cell("b", "d", "w"),
            ratio_cell("b", "e1"),
        ],
        [
            "telemetry, same value",
            cell("e2"),
            cell("d"),
            cell("c"),
            ratio_cell("c", "d"),
            ratio_cell("c", "e2"),
        ],
        ["one state write alone (w)", "–", "–", cell("w"), "–", "–"],
    ]
    side_by_side = table(
        [
            "case",
            "built-in (e0 / e1 / e2)",
            "floor (d)",
            "ours (a / b / c)",
            "ours ÷ floor",
            "ours ÷ built-in",
        ],
        side_rows,
    ) + (
        "\n\nµs/msg, median of the reps (min–max); ratios are paired per rep (the variants of "
        "one rep ran back to back), median (min–max) of the per-rep ratios."
    )

    def ratio(num: str, *den: str) -> float:
        return median(paired(num, *den))

    a, b, c, w = (median(by_key[k].cpu_us) for k in "abcw")
    targets = [
        Target(
            "heartbeat_vs_floor",
            ratio("a", "d"),
            2.0,
            "× floor",
            f"heartbeat {fmt(a)} µs vs floor {fmt(floor)} µs: parsed-topic cache hit, decode, "
            "hand-checked payload, the tracker's quiet heartbeat path (no Outcome, no timer "
            "re-arm), no listener (no state write)",
        ),
        Target(
            "same_value_vs_floor",
            ratio("c", "d"),
            2.0,
            "× floor",
            f"same value {fmt(c)} µs vs floor {fmt(floor)} µs: parsed-topic cache hit, decode, "
            "hand-checked payload, unit check, the tracker's quiet path, the registry's "
            "unchanged-value check (no notification, no state write)",
        ),
        Target(
            "changed_value_vs_floor_write",
            ratio("b", "d", "w"),
            1.0,
            "× (floor + write)",
            f"changed value {fmt(b)} µs vs floor {fmt(floor)} + one state write {fmt(w)} µs: "
            f"the same-value path ({fmt(c)} µs) plus the sensor's notification and its write "
            f"({fmt(b - c)} µs, a plain sensor's write alone {fmt(w)} µs). Ours undercuts "
            "a plain SensorEntity's write because our reading sensors write through their own "
            "path (the attributes HA computed, kept while the registry entry, device and "
            "customize are unchanged; no unit conversion), proven to write the same state "
            "and attributes as HA's write (tests/test_sensor_write_path.py); the state "
            "machine's own part of a write stays (benchmarks/NOTES.md)",
        ),
    ]
    if BUILTIN:
        targets += [
            Target(
                "heartbeat_vs_builtin",
                ratio("a", "e0"),
                0.5,
                "× built-in",
                f"ours {fmt(a)} µs vs HA's binary_sensor {fmt(median(by_key['e0'].cpu_us))} µs "
                "(template render, off_delay timer re-armed per message)",
            ),
            Target(
                "changed_value_vs_builtin",
                ratio("b", "e1"),
                0.5,
                "× built-in",
                f"ours {fmt(b)} µs vs HA's sensor {fmt(median(by_key['e1'].cpu_us))} µs; both "
                "write one state per message",
            ),
            Target(
                "same_value_vs_builtin",
                ratio("c", "e2"),
                0.5,
                "× built-in",
                f"ours {fmt(c)} µs vs HA's sensor {fmt(median(by_key['e2'].cpu_us))} µs "
                "(template render, expire_after timer re-armed per message)",
            ),
        ]
    return rows, side_by_side, targets


@pytest.mark.timeout(3600)
async def test_bench_hub(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """Measure, print and write the table (no timing assertions: a benchmark, not a test)."""
    wall = time.perf_counter()
    bench = Bench(hass)
    hass.bus.async_listen(EVENT_STATE_CHANGED, bench.count_state_change)
    builtin_setup = await bench.setup_builtin() if BUILTIN else None
    hub_setup = await bench.setup_hub()
    await bench.setup_floor()
    await bench.setup_write()
    measured = cases(bench)
    # Subscribing clears the client's topic-match cache: fill it (one message per topic)
    # before anything is timed (perf-anchors gotcha 6).
    for case in measured:
        if case.build is not None:
            await bench.send(case.build(N))
    ours, builtin = bench.entity_counts()
    data = next(iter(hass.config_entries.async_entries(DOMAIN))).runtime_data
    jobs = breakdown_jobs(data)
    pieces: dict[str, list[float]] = {}
    timer_us: list[float] = []
    n_reps = reps()
    for rep in range(n_reps):
        shift = rep % len(measured)
        for case in measured[shift:] + measured[:shift]:
            if case.prepare is not None:
                await bench.send(case.prepare())
            if case.run is not None:
                cpu, changes = await case.run(M)
            else:
                assert case.build is not None
                msgs = case.build(M)
                cpu, changes = await bench.timed(msgs)
                del msgs
            case.cpu_us.append(cpu / M * 1e6)
            case.changes.append(changes / M)
        timer_us.append(await bench.timer_wakeups(TIMER_WAKEUPS) / TIMER_WAKEUPS * 1e6)
        for label, job in jobs if rep % 2 == 0 else jobs[::-1]:
            pieces.setdefault(label, []).append(time_calls(job, BREAKDOWN_CALLS))
        print(f"rep {rep + 1}/{n_reps} done", flush=True)

    online, offline = data.availability.counts()
    wall = time.perf_counter() - wall

    rows, side_by_side, targets = summarize(measured, timer_us, n_reps)
    setup_lines = [
        f"- setup (untimed): {N:,} nodes discovered by the hub in {hub_setup:.1f} s CPU "
        f"({ours:,} entities of {DOMAIN}, {online} online / {offline} offline at the end)",
    ]
    if builtin_setup is not None:
        setup_lines.append(
            f"- setup (untimed): {builtin:,} HA MQTT entities from discovery in "
            f"{builtin_setup:.1f} s CPU"
        )
    report(
        "bench_hub",
        "bench_hub — µs per MQTT message through Home Assistant's MQTT client into the hub",
        COMMAND,
        [
            f"- method: CPU time (`time.process_time`) per message, median of {n_reps} reps "
            f"with min–max spread; {M:,} messages per pass round-robin over {N:,} nodes; "
            "cases alternate rep by rep (rotating order) in one Home Assistant; "
            f"`hass.async_block_till_done()` every {BLOCK_EVERY:,} messages is included; "
            "`gc.collect()` before each pass; asyncio debug off; `homeassistant` and "
            "`custom_components` loggers at WARNING",
            "- entry point: `MQTT._async_mqtt_on_message` of the real client (topic matching, "
            "ReceiveMessage, callback dispatch); paho's socket read and packet parse are not "
            "included, so every row is a lower bound of production cost",
            *setup_lines,
        ],
        [
            ("Side by side (the issue's table)", side_by_side),
            (
                "Results",
                table(
                    ["case", "µs/msg (median)", "spread", "÷ floor (d)", "state_changed/msg"],
                    rows,
                ),
            ),
            (
                "Where the hub's time goes: pieces of the path, called on their own",
                table(
                    ["piece", "µs/call (median)", "spread"],
                    [[label, *fmt_stat(samples, 2)] for label, samples in pieces.items()],
                )
                + f"\n\n{BREAKDOWN_CALLS:,} calls per sample, alternated with the cases above. "
                "Outside the message loop (warm caches, no dispatch), so the pieces do not add "
                "up exactly to a row above.",
            ),
        ],
        wall,
        ("pytest-homeassistant-custom-component", "paho-mqtt"),
        targets=targets,
    )

    # Correctness of what was measured (not timing): visible-change-only state writes.
    for case in measured:
        if case.expected_changes is not None:
            assert all(c == case.expected_changes for c in case.changes), (
                case.key,
                case.changes,
            )
    assert offline == 0, "a node timed out while the benchmark ran: the numbers are not clean"
