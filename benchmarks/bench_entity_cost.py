"""What one node costs in Home Assistant, split into Home Assistant's part and ours (issue 14).

Run: ``.venv/bin/python -m pytest benchmarks/bench_entity_cost.py -q -s -p no:cacheprovider``
(``BENCH_SMOKE=1``: seconds). Writes ``benchmarks/results/bench_entity_cost.md``.

bench_system gives the RSS of a real ``hass`` per node; this says what it is made of. In Home
Assistant's test harness, N nodes are discovered (birth, relay, heartbeat, 5 readings each) and
the entry is unloaded; then, with ``tracemalloc`` (one frame: the file that allocated), the
entry is set up again from its store, as at a restart: what stays allocated after it, per
node, grouped by the file that allocated it. The entity and device registry entries survive the
unload (they are loaded from disk at a restart); their cost is measured by loading the entry's
part of both registries into fresh registry objects from storage. The same is done, in the
same run, for the floor: the same number of devices with 10 minimal ``SensorEntity`` each
(unique id, device info, a name, a value; no listener, no restore), the entities a node has
enabled by default (``benchmarks/_floor_component/sensor.py``: bench_system's floor is the same
class, in a real ``hass``). CPU per node of the re-setup: median of 5 without tracemalloc. Python
objects only: RSS is larger (allocator arenas, fragmentation).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
import gc
import json
from pathlib import Path
import statistics
import time
import tracemalloc
from typing import Any

from _benchlib import SMOKE, report, table
from _floor_component import floor_device
from _floor_component.kinds import KIND_BUILDERS, Builders
from _floor_component.sensor import FLOOR_PER_NODE, PLAIN_BUILDERS
from homeassistant import config_entries
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.json import json_bytes
from homeassistant.util.json import json_loads
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    MockPlatform,
    async_fire_mqtt_message,
    mock_config_flow,
    mock_integration,
    mock_platform,
)

from custom_components.heartbeat_iot.const import (
    CONF_HOME_ID,
    CONF_MAX_NODES,
    DEFAULT_OPTIONS,
    DOMAIN,
)

N = 10 if SMOKE else 300
REPS = 1 if SMOKE else 5
HOME = "cost"
COMMAND = ".venv/bin/python -m pytest benchmarks/bench_entity_cost.py -q -s -p no:cacheprovider"
METRICS = (("power", "W", 40.0), ("voltage", "V", 230.0), ("current", "A", 0.2))
METRICS += (("energy", "kWh", 12.0), ("temperature", "°C", 24.0))
_WALL = time.perf_counter()

# Innermost file of an allocation -> what it is (Home Assistant's part, or ours).
PARTS = (
    ("custom_components/heartbeat_iot/", "ours: our entity objects, listeners, node data"),
    ("homeassistant/core.py", "HA: state objects (State, attributes, context)"),
    ("homeassistant/helpers/event.py", "HA: per-entity registry and device listeners"),
    ("homeassistant/helpers/restore_state.py", "HA: restore state bookkeeping"),
    ("homeassistant/helpers/entity_registry.py", "HA: entity registry"),
    ("homeassistant/helpers/device_registry.py", "HA: device registry"),
    ("homeassistant/", "HA: entity objects' own attributes, platform"),
)


def _part(filename: str) -> str:
    for fragment, part in PARTS:
        if fragment in filename:
            return part
    return "other (Python, libraries; this benchmark's floor entities)"


def _traced(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, int]:
    parts: dict[str, int] = defaultdict(int)
    for stat in after.compare_to(before, "filename"):
        parts[_part(stat.traceback[0].filename)] += stat.size_diff
    return parts


async def _measured(hass: HomeAssistant, entry: ConfigEntry) -> dict[str, int]:
    """Set the entry up once under tracemalloc: what stays allocated, by part."""
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return _traced(before, after)


async def _cpu_per_node(hass: HomeAssistant, entry: ConfigEntry) -> list[float]:
    """Unload / set up again REPS times; CPU ms per node of each setup."""
    times = []
    for _ in range(REPS):
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        gc.collect()
        start = time.process_time()
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        times.append((time.process_time() - start) * 1000 / N)
    return times


def _publish(hass: HomeAssistant, node: str, name: str, payload: dict[str, Any]) -> None:
    async_fire_mqtt_message(
        hass, f"homesync/{HOME}/nodes/{node}/{name}", json.dumps(payload), qos=1
    )


async def _ours(hass: HomeAssistant) -> dict[str, Any]:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={CONF_HOME_ID: HOME},
        options={**DEFAULT_OPTIONS, CONF_MAX_NODES: 4096},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    for i in range(N):
        node = f"node-{i:04d}"
        birth = {"online": True, "reason": "boot", "uptime": 0, "firmware": "1.0.0"}
        _publish(hass, node, "status/online", birth)
        _publish(hass, node, "status/relay", {"state": "off", "source": "boot"})
        _publish(hass, node, "status/heartbeat", {"seq": 1, "uptime": 10, "interval": 30})
        for key, unit, value in METRICS:
            _publish(hass, node, f"telemetry/{key}", {"value": value, "unit": unit})
        await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    again = await _measured(hass, entry)
    registry = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    per_node = [e for e in registry if "_node-0000_" in e.unique_id]
    enabled = len(
        [s for s in hass.states.async_all() if s.entity_id.split(".", 1)[1].startswith("node_")]
    )
    return {
        "entry": entry,
        "again": again,
        "cpu": await _cpu_per_node(hass, entry),
        "enabled": enabled / N,
        "registered": len(per_node),
    }


async def _floor(hass: HomeAssistant, domain: str, builders: Builders) -> dict[str, Any]:
    """A floor's entry (``builders``: a device's entities of each platform), measured as ours."""
    by_platform: dict[Platform, list[Entity]] = {}

    def platform_setup(platform: Platform) -> Any:
        async def setup_platform(
            hass: HomeAssistant, entry: ConfigEntry, add: AddConfigEntryEntitiesCallback
        ) -> None:
            add(by_platform[platform])

        return setup_platform

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        # New objects for each setup, as a restart makes them.
        by_platform.clear()
        for platform, build in builders.items():
            devices = (build(n, floor_device(n, domain)) for n in range(N))
            by_platform[platform] = [entity for entities in devices for entity in entities]
        await hass.config_entries.async_forward_entry_setups(entry, list(builders))
        return True

    async def unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        return await hass.config_entries.async_unload_platforms(entry, list(builders))

    class FloorFlow(config_entries.ConfigFlow):
        VERSION = 1

    mock_integration(
        hass, MockModule(domain, async_setup_entry=setup_entry, async_unload_entry=unload_entry)
    )
    for platform in builders:
        mock_platform(
            hass,
            f"{domain}.{platform}",
            MockPlatform(async_setup_entry=platform_setup(platform)),
        )
    mock_platform(hass, f"{domain}.config_flow", None)
    with mock_config_flow(domain, FloorFlow):
        entry = MockConfigEntry(domain=domain)
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        again = await _measured(hass, entry)
        cpu = await _cpu_per_node(hass, entry)
    return {"again": again, "cpu": cpu, "entry": entry}


async def _registry_entries(
    hass: HomeAssistant, hass_storage: dict[str, Any], entry: ConfigEntry
) -> float:
    """Bytes per node of the entry's entity and device registry entries, loaded from disk.

    The live registries' content (only this entry's items) is written to the mocked storage and
    loaded into fresh registry objects under tracemalloc, as Home Assistant does at start.
    """
    entity_data = json_loads(json_bytes(er.async_get(hass)._data_to_save()))
    device_data = json_loads(json_bytes(dr.async_get(hass)._data_to_save()))
    entity_data["entities"] = [
        e for e in entity_data["entities"] if e["config_entry_id"] == entry.entry_id
    ]
    entity_data["deleted_entities"] = []
    device_data["devices"] = [
        d for d in device_data["devices"] if entry.entry_id in d["config_entries"]
    ]
    device_data["deleted_devices"] = []
    for key, data, major, minor in (
        (er.STORAGE_KEY, entity_data, er.STORAGE_VERSION_MAJOR, er.STORAGE_VERSION_MINOR),
        (dr.STORAGE_KEY, device_data, dr.STORAGE_VERSION_MAJOR, dr.STORAGE_VERSION_MINOR),
    ):
        hass_storage[key] = {"version": major, "minor_version": minor, "key": key, "data": data}
    entities, devices = er.EntityRegistry(hass), dr.DeviceRegistry(hass)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    await entities.async_load()
    await devices.async_load()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert len(entities.entities) == len(entity_data["entities"])
    return sum(_traced(before, after).values()) / N


def _kb(value: float) -> str:
    return f"{value / 1024:.1f}"


async def test_bench_entity_cost(
    hass: HomeAssistant, mqtt_mock: Any, hass_storage: dict[str, Any]
) -> None:
    """Ours and the two floors, one after the other in the same Home Assistant."""
    columns = {
        "ours": await _ours(hass),
        "kinds": await _floor(hass, "kinds", KIND_BUILDERS),
        "floor": await _floor(hass, "floor", PLAIN_BUILDERS),
    }
    registry = {
        name: await _registry_entries(hass, hass_storage, column["entry"])
        for name, column in columns.items()
    }
    setup = {name: sum(column["again"].values()) for name, column in columns.items()}
    enabled = {"ours": columns["ours"]["enabled"], "kinds": FLOOR_PER_NODE, "floor": FLOOR_PER_NODE}

    def row(label: str, value: Callable[[str], float], bold: bool = False) -> list[str]:
        cells = [_kb(value(name)) for name in columns]
        return [f"**{label}**", *(f"**{c}**" for c in cells)] if bold else [label, *cells]

    ours_parts = columns["ours"]["again"]
    parts = sorted(
        {part for column in columns.values() for part in column["again"]},
        key=lambda p: -ours_parts.get(p, 0),
    )

    def part_of(part: str) -> Callable[[str], float]:
        return lambda name: float(columns[name]["again"].get(part, 0)) / N

    rows = [
        row(part, part_of(part))
        for part in parts
        if sum(abs(column["again"].get(part, 0)) for column in columns.values()) >= N * 50
    ]
    rows += [
        row("setup from the store, in all", lambda name: setup[name] / N, bold=True),
        row(
            f"entity registry entries ({columns['ours']['registered']} per node for ours, "
            "disabled ones included; 10 for the floors) and the device, loaded from disk",
            lambda name: registry[name],
        ),
        row("per node, traced", lambda name: setup[name] / N + registry[name], bold=True),
        row(
            "per enabled entity (setup from the store)",
            lambda name: setup[name] / N / enabled[name],
        ),
    ]
    labels = {
        "ours": "ours (a node's entities from the store)",
        "kinds": "floor of our kinds (a node's 10 entity kinds, nothing behind them)",
        "floor": f"floor ({FLOOR_PER_NODE} minimal sensors on a device)",
    }
    cpu_rows = [
        [
            labels[name],
            f"{statistics.median(column['cpu']):.2f}",
            f"{min(column['cpu']):.2f}–{max(column['cpu']):.2f}",
        ]
        for name, column in columns.items()
    ]
    report(
        "bench_entity_cost",
        "bench_entity_cost — what a node costs in Home Assistant, HA's part and ours",
        COMMAND,
        [
            f"- {N:,} nodes (birth, relay, heartbeat, {len(METRICS)} readings each), then the "
            "entry set up again from its store under `tracemalloc` (innermost frame), after "
            "`gc.collect()`",
            f"- per node: {columns['ours']['enabled']:.1f} entities enabled, "
            f"{columns['ours']['registered']} in the entity registry (the others disabled by "
            "default; they are not built at start)",
            f"- floor of our kinds: {N:,} devices × the 10 entity kinds a node has enabled "
            "(connectivity, relay and LED switches, 5 readings with device class, unit and "
            "state class, event, firmware update; `benchmarks/_floor_component/kinds.py`) with "
            "constant values and no code of ours",
            f"- floor: {N:,} devices × {FLOOR_PER_NODE} minimal `SensorEntity` (unique id, "
            "device info, name, value)",
            "- all three measured the same way in the same run",
            f"- CPU: median of {REPS} unload + setup cycles, without tracemalloc",
        ],
        [
            (
                "1. Python memory per node (KB, tracemalloc), by what allocated it",
                table(["part", "ours", "floor of our kinds", "floor"], rows)
                + "\n\nRSS per node in a real `hass` is about 2.5× the traced total, ours and "
                "the floor alike (bench_system runs the plain floor's class there, side by "
                "side with ours): allocator arenas and fragmentation come on top.",
            ),
            (
                "2. CPU per node of a setup from the store (ms)",
                table(["entry", "median", "spread"], cpu_rows),
            ),
        ],
        time.perf_counter() - _WALL,
    )
    print(Path(__file__).name, "done")
