"""The one write filter of every entity: a state is written exactly when a user sees a change.

`entity.HomeSyncEntity` compares availability, state and every attribute with the last write
(issue 10 item 9: subclasses used to list what mattered, and *fleet degraded* forgot its
`offline_ratio` attribute, which then lagged behind the sensor of the same name).
"""

from __future__ import annotations

from typing import Any

from homeassistant.const import EVENT_STATE_CHANGED, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.heartbeat_iot.const import CONF_OFFLINE_RATIO, DEFAULT_OPTIONS, DOMAIN

from .command_helpers import go_offline
from .conftest import HOME, publish


def entity_id(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert found is not None, unique_id
    return found


def heartbeat(hass: HomeAssistant, node: str, seq: int, interval: int = 30) -> None:
    payload = {"seq": seq, "uptime": 10 + seq, "interval": interval}
    publish(hass, node, "status", "heartbeat", payload)


async def test_fleet_degraded_attribute_follows_the_offline_ratio(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    """Degraded stays on from 20 % to 30 % offline; its offline_ratio attribute must move too."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"home_id": HOME},
        options={**DEFAULT_OPTIONS, CONF_OFFLINE_RATIO: 10.0},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    for index in range(10):
        heartbeat(hass, f"n{index}", 1)
    go_offline(hass, "n0")
    go_offline(hass, "n1")
    await hass.async_block_till_done()
    degraded = entity_id(hass, "binary_sensor", f"{HOME}_fleet_degraded")
    ratio = entity_id(hass, "sensor", f"{HOME}_offline_ratio")
    assert hass.states.get(degraded).state == STATE_ON
    assert hass.states.get(degraded).attributes["offline_ratio"] == 20

    go_offline(hass, "n2")
    await hass.async_block_till_done()
    assert float(hass.states.get(ratio).state) == 30
    assert hass.states.get(degraded).state == STATE_ON
    assert hass.states.get(degraded).attributes["offline_ratio"] == 30  # was stuck at 20


async def test_attribute_only_change_is_written_and_last_seen_alone_is_not(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Connectivity: a new announced interval changes its timeout attribute (written); a
    heartbeat that only moves last_seen writes nothing."""
    heartbeat(hass, "plug", 1, interval=30)
    await hass.async_block_till_done()
    conn = entity_id(hass, "binary_sensor", f"{HOME}_plug_connectivity")
    assert hass.states.get(conn).attributes["timeout"] == 90

    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    heartbeat(hass, "plug", 2, interval=30)
    await hass.async_block_till_done()
    assert [e for e in changes if e.data["entity_id"] == conn] == []

    heartbeat(hass, "plug", 3, interval=60)
    await hass.async_block_till_done()
    written = [e for e in changes if e.data["entity_id"] == conn]
    assert len(written) == 1
    assert written[0].data["new_state"].attributes["timeout"] == 180


async def test_same_reading_writes_nothing_a_new_one_writes_once(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    power = entity_id(hass, "sensor", f"{HOME}_plug_power")
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    for _ in range(3):
        publish(hass, "plug", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    assert [e for e in changes if e.data["entity_id"] == power] == []
    publish(hass, "plug", "telemetry", "power", {"value": 6})
    await hass.async_block_till_done()
    written = [e for e in changes if e.data["entity_id"] == power]
    assert [float(e.data["new_state"].state) for e in written] == [6]


async def test_reading_then_offline_then_back_shows_each_change(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """The fast path for new readings must not make a later status change look unchanged."""
    heartbeat(hass, "plug", 1)
    publish(hass, "plug", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    power = entity_id(hass, "sensor", f"{HOME}_plug_power")
    publish(hass, "plug", "telemetry", "power", {"value": 7})  # fast path write
    go_offline(hass, "plug")
    await hass.async_block_till_done()
    assert hass.states.get(power).state == "unavailable"
    heartbeat(hass, "plug", 2)
    await hass.async_block_till_done()
    assert float(hass.states.get(power).state) == 7
