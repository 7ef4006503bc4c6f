"""Branches the feature tests did not reach (the per-module coverage gate found them).

device.py's re-addressing of identifiers, diagnostics' fleet-silence and unknown-node shapes,
and the stale-node repair flow's two aborts.
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import DOMAIN
from custom_components.heartbeat_iot.device import _moved_identifier, async_move_home
from custom_components.heartbeat_iot.diagnostics import _availability, _silence
from custom_components.heartbeat_iot.homesync.tracker import FleetSilence
from custom_components.heartbeat_iot.repairs import StaleNodeRepairFlow

from .conftest import HOME


def test_moved_identifier() -> None:
    assert _moved_identifier((DOMAIN, "old"), "old", "new") == (DOMAIN, "new")
    assert _moved_identifier((DOMAIN, "old/plug"), "old", "new") == (DOMAIN, "new/plug")
    assert _moved_identifier((DOMAIN, "other/plug"), "old", "new") == (DOMAIN, "other/plug")
    assert _moved_identifier(("mqtt", "old/plug"), "old", "new") == ("mqtt", "old/plug")


async def test_moving_a_home_leaves_other_devices_alone(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    devices = dr.async_get(hass)
    other = devices.async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={(DOMAIN, "elsewhere/plug")}
    )
    async_move_home(hass, loaded_entry.entry_id, HOME, "home2")
    assert devices.async_get(other.id).identifiers == {(DOMAIN, "elsewhere/plug")}  # type: ignore[union-attr]
    assert devices.async_get_device(identifiers={(DOMAIN, "home2")}) is not None


def test_diagnostics_shapes() -> None:
    assert _silence(None) is None
    assert _silence(FleetSilence(since=1_738_852_200.0, late=7, online=10)) == {
        "since": "2025-02-06T14:30:00+00:00",
        "late": 7,
        "online": 10,
    }
    assert _availability(None) is None


async def test_stale_repair_aborts_when_the_entry_is_gone(hass: HomeAssistant) -> None:
    flow = StaleNodeRepairFlow("no-such-entry", "plug")
    flow.hass = hass
    result = await flow.async_step_confirm()
    assert result["type"] == "abort"
    assert result["reason"] == "entry_not_loaded"


async def test_stale_repair_aborts_when_the_node_spoke_again(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    flow = StaleNodeRepairFlow(loaded_entry.entry_id, "plug")
    flow.hass = hass
    result = await flow.async_step_confirm()
    assert result["type"] == "abort"
    assert result["reason"] == "node_back"


async def test_a_broker_outage_over_more_nodes_than_one_slice_reaches_every_entity(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """More nodes change at once than availability.SLICE: they are notified in slices."""
    from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
    from homeassistant.const import STATE_ON, STATE_UNAVAILABLE
    from homeassistant.helpers.dispatcher import async_dispatcher_send

    from custom_components.heartbeat_iot.availability import SLICE

    from .command_helpers import entity_id, go_online

    nodes = [f"n{i}" for i in range(SLICE + 5)]
    for node in nodes:
        go_online(hass, node)
    await hass.async_block_till_done()
    last = entity_id(hass, "connectivity", nodes[-1], "binary_sensor")
    assert hass.states.get(last).state == STATE_ON  # type: ignore[union-attr]

    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await hass.async_block_till_done()
    for node in (nodes[0], nodes[-1]):
        eid = entity_id(hass, "connectivity", node, "binary_sensor")
        assert hass.states.get(eid).state == STATE_UNAVAILABLE  # type: ignore[union-attr]
