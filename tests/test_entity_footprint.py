"""What a node costs in Home Assistant (issue 14): the entities enabled by default, and the
last readings kept in the home's own store instead of Home Assistant's restore cache."""

from __future__ import annotations

from typing import Any

from homeassistant.const import STATE_UNKNOWN
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er, restore_state as rs
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)

from custom_components.heartbeat_iot.const import DOMAIN
from custom_components.heartbeat_iot.updates import Updates

from .command_helpers import go_online
from .conftest import HOME, publish


def _node_entities(hass: HomeAssistant, entry: MockConfigEntry, node: str) -> dict[str, bool]:
    """unique-id key → enabled, for the entities of one node."""
    prefix = f"{HOME}_{node}_"
    return {
        e.unique_id.removeprefix(prefix): e.disabled_by is None
        for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if e.unique_id.startswith(prefix)
    }


async def test_a_node_enables_what_users_rely_on_and_nothing_else(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Connectivity, relay, LED, readings, events and firmware on; the diagnostics off.

    Every enabled entity costs ~20 KB of RSS per node (benchmarks/NOTES.md, bench_system);
    the diagnostics that are off by default tell what the event entity (rebooted, flapping)
    or the home's sensors already tell, and any of them can be enabled in the UI.
    """
    go_online(hass)
    publish(hass, "plug", "telemetry", "power", {"value": 5})
    publish(hass, "plug", "telemetry", "energy", {"value": 1.5})
    publish(hass, "plug", "status", "rssi", {"value": -60, "unit": "dBm"})
    await hass.async_block_till_done()

    entities = _node_entities(hass, loaded_entry, "plug")
    assert {key for key, enabled in entities.items() if enabled} == {
        "connectivity",
        "relay",
        "led",
        "availability",
        "firmware_update",
        "power",
        "energy",
    }
    assert {key for key, enabled in entities.items() if not enabled} == {
        "flapping",
        "last_seen",
        "last_boot",
        "reboots",
        "link_quality",
        "queued_intents",
        "rssi",
    }


async def _restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


def _state(hass: HomeAssistant, key: str) -> State:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{HOME}_plug_{key}")
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    return state


async def test_readings_come_back_from_the_home_store_alone(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """A restart shows the last readings even with Home Assistant's restore cache empty."""
    go_online(hass)
    publish(hass, "plug", "telemetry", "energy", {"value": 7.5})
    publish(hass, "plug", "telemetry", "current", {"value": None, "reason": "below_range"})
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    stored = hass_storage[f"{DOMAIN}.{loaded_entry.entry_id}"]["data"]
    assert stored["values"] == {"plug": {"energy": 7.5}}  # unmeasured: nothing to restore

    rs.async_get(hass).last_states.clear()  # what a real restart leaves of our sensors now
    assert await hass.config_entries.async_setup(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert float(_state(hass, "energy").state) == 7.5
    assert _state(hass, "current").state == STATE_UNKNOWN


async def test_first_start_after_the_upgrade_takes_readings_from_the_restore_cache(
    hass: HomeAssistant,
    mqtt_mock: Any,
    entry: MockConfigEntry,
    hass_storage: dict[str, Any],
) -> None:
    """A store from before issue 14 has no readings: Home Assistant's cache has them, once."""
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "nodes": {"plug": {"firmware": "1.0.0", "metrics": {"energy": "kWh", "power": "W"}}}
        },
    }
    reading = {"native_value": 12.25, "native_unit_of_measurement": "kWh"}
    garbage = {"native_value": "n/a", "native_unit_of_measurement": "W"}
    mock_restore_cache_with_extra_data(
        hass,
        [
            (State("sensor.plug_energy", "12.25"), reading),
            (State("sensor.plug_power", "n/a"), garbage),
        ],
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    go_online(hass)  # a heartbeat: the node is available again, its readings unchanged
    await hass.async_block_till_done()
    assert float(_state(hass, "energy").state) == 12.25
    assert _state(hass, "power").state == STATE_UNKNOWN  # not a number: not a reading

    # From now on the home's own store keeps it.
    rs.async_get(hass).last_states.clear()
    await _restart(hass, entry)
    assert float(_state(hass, "energy").state) == 12.25


async def test_stored_readings_that_are_garbage_are_skipped(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    """Unknown nodes or metrics, non-numbers, infinities: skipped, the rest restored."""
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "nodes": {
                "plug": {"metrics": {"power": "W", "energy": "kWh", "voltage": "V", "current": "A"}}
            },
            "values": {
                "plug": {
                    "power": 3,
                    "energy": "7",
                    "voltage": True,
                    "current": float("inf"),
                    "co2": 400,
                },
                "ghost": {"power": 1},
                "other": "garbage",
            },
        },
    }
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    go_online(hass)
    await hass.async_block_till_done()
    assert float(_state(hass, "power").state) == 3
    assert _state(hass, "energy").state == STATE_UNKNOWN
    assert _state(hass, "voltage").state == STATE_UNKNOWN
    assert _state(hass, "current").state == STATE_UNKNOWN
    assert list(entry.runtime_data.nodes) == ["plug"]

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    hass_storage[f"{DOMAIN}.{entry.entry_id}"]["data"]["values"] = ["not", "a", "mapping"]
    assert await hass.config_entries.async_setup(entry.entry_id)
    go_online(hass)
    await hass.async_block_till_done()
    assert _state(hass, "power").state == STATE_UNKNOWN


def test_a_listener_is_removed_once_and_removing_again_is_harmless() -> None:
    """The lean remover (a slotted object instead of a partial) keeps the remover contract."""
    updates = Updates()
    heard: list[str] = []
    first = updates.async_listen("plug", "power", lambda: heard.append("first"))
    second = updates.async_listen("plug", "power", lambda: heard.append("second"))
    updates.async_notify("plug", "power")
    assert heard == ["first", "second"]

    first()
    first()  # again: nothing (the other listener stays)
    updates.async_notify("plug", "power")
    assert heard == ["first", "second", "second"]

    second()
    second()  # the pair is gone: nothing
    updates.async_notify("plug", "power")
    assert heard == ["first", "second", "second"]


async def test_a_disabled_entity_is_skipped_at_start_and_back_once_enabled(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Disabled entities are not built at start (issue 14); enabling one brings it back."""
    go_online(hass)
    publish(hass, "plug", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    relay = registry.async_get_entity_id("switch", DOMAIN, f"{HOME}_plug_relay")
    power = registry.async_get_entity_id("sensor", DOMAIN, f"{HOME}_plug_power")
    assert relay is not None
    assert power is not None
    registry.async_update_entity(relay, disabled_by=er.RegistryEntryDisabler.USER)
    registry.async_update_entity(power, disabled_by=er.RegistryEntryDisabler.USER)
    await _restart(hass, loaded_entry)
    assert hass.states.get(relay) is None
    assert hass.states.get(power) is None
    assert hass.states.get(relay.replace("relay", "status_led")) is not None

    registry.async_update_entity(relay, disabled_by=None)
    registry.async_update_entity(power, disabled_by=None)
    await _restart(hass, loaded_entry)
    go_online(hass, seq=2)
    await hass.async_block_till_done()
    assert hass.states.get(relay) is not None
    assert float(_state(hass, "power").state) == 5
