"""Devices that are gone, homes that move (issue 10 items 12 and 13)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant import config_entries
from homeassistant.components.repairs import DOMAIN as REPAIRS_DOMAIN, repairs_flow_manager
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er, issue_registry as ir
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.heartbeat_iot import async_remove_config_entry_device
from custom_components.heartbeat_iot.const import CONF_HOME_ID, CONF_STALE_DAYS, DOMAIN
from custom_components.heartbeat_iot.stale import stale_issue_id

from .conftest import HOME, publish


def heartbeat(hass: HomeAssistant, node: str, home: str = HOME, seq: int = 1) -> None:
    publish(
        hass, node, "status", "heartbeat", {"seq": seq, "uptime": seq, "interval": 30}, home=home
    )


def device(hass: HomeAssistant, ident: str) -> dr.DeviceEntry | None:
    return dr.async_get(hass).async_get_device(identifiers={(DOMAIN, ident)})


async def test_reconfigure_moves_devices_and_entities(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Nodes re-flashed with a new home id keep their devices, names and entity ids."""
    heartbeat(hass, "plug")
    await hass.async_block_till_done()
    old_device = device(hass, f"{HOME}/plug")
    assert old_device is not None
    dr.async_get(hass).async_update_device(old_device.id, name_by_user="Kettle plug")
    registry = er.async_get(hass)
    connectivity = registry.async_get_entity_id(
        "binary_sensor", DOMAIN, f"{HOME}_plug_connectivity"
    )
    assert connectivity is not None

    result = await loaded_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "cabin"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()

    # One hub and one node device, both under the new home; nothing left of the old one.
    assert device(hass, HOME) is None
    assert device(hass, f"{HOME}/plug") is None
    moved = device(hass, "cabin/plug")
    assert moved is not None
    assert moved.id == old_device.id
    assert moved.name_by_user == "Kettle plug"
    hub = device(hass, "cabin")
    assert hub is not None
    assert hub.name == "HomeSync cabin"
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), loaded_entry.entry_id)
    assert len(devices) == 2
    assert registry.async_get_entity_id("binary_sensor", DOMAIN, "cabin_plug_connectivity") == (
        connectivity
    )

    # The node speaking under its new home id lands on the same device.
    heartbeat(hass, "plug", home="cabin")
    await hass.async_block_till_done()
    assert hass.states.get(connectivity).state == "on"
    assert len(dr.async_entries_for_config_entry(dr.async_get(hass), loaded_entry.entry_id)) == 2


async def test_any_device_that_no_longer_publishes_can_be_removed(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Only the home's own hub device is refused; leftovers of another home id can go."""
    heartbeat(hass, "plug")
    await hass.async_block_till_done()
    registry = dr.async_get(hass)
    leftover = registry.async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={(DOMAIN, "oldhome/plug")}
    )
    old_hub = registry.async_get_or_create(
        config_entry_id=loaded_entry.entry_id, identifiers={(DOMAIN, "oldhome")}
    )
    hub = device(hass, HOME)
    node = device(hass, f"{HOME}/plug")
    assert hub is not None
    assert node is not None

    assert await async_remove_config_entry_device(hass, loaded_entry, leftover) is True
    assert await async_remove_config_entry_device(hass, loaded_entry, old_hub) is True
    assert await async_remove_config_entry_device(hass, loaded_entry, hub) is False
    assert await async_remove_config_entry_device(hass, loaded_entry, node) is True
    assert "plug" not in loaded_entry.runtime_data.nodes


async def _fix(hass: HomeAssistant, issue_id: str) -> dict[str, Any]:
    """What the Repairs page does: open the issue's fix flow, confirm it."""
    manager = repairs_flow_manager(hass)
    assert manager is not None
    flow = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    assert flow["step_id"] == "confirm"
    assert flow["description_placeholders"] == {"node": "plug"}
    return dict(await manager.async_configure(flow["flow_id"], {}))


async def test_stale_node_repair_removes_it(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Silent for more than 7 days: a fixable repair issue; fixing it removes the device."""
    assert await async_setup_component(hass, REPAIRS_DOMAIN, {})
    heartbeat(hass, "plug")
    heartbeat(hass, "lamp")
    await hass.async_block_till_done()
    issue_id = stale_issue_id(loaded_entry.entry_id, "plug")

    for _ in range(7 * 24 + 1):  # the lamp keeps talking, the plug is silent
        freezer.tick(timedelta(hours=1))
        heartbeat(hass, "lamp", seq=2)
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
    issues = ir.async_get(hass)
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.is_fixable
    assert issue.translation_placeholders == {"node": "plug", "days": "7"}
    assert issues.async_get_issue(DOMAIN, stale_issue_id(loaded_entry.entry_id, "lamp")) is None

    result = await _fix(hass, issue_id)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert device(hass, f"{HOME}/plug") is None
    assert "plug" not in loaded_entry.runtime_data.nodes
    assert issues.async_get_issue(DOMAIN, issue_id) is None


async def test_stale_issue_goes_when_the_node_is_heard(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """Unplugged for the holidays: back, and the repair issue disappears at the next check."""
    heartbeat(hass, "plug")
    await hass.async_block_till_done()
    freezer.tick(timedelta(days=8))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    issue_id = stale_issue_id(loaded_entry.entry_id, "plug")
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None

    heartbeat(hass, "plug", seq=5)
    freezer.tick(timedelta(hours=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None
    assert device(hass, f"{HOME}/plug") is not None


async def test_stale_period_is_an_option(hass: HomeAssistant, mqtt_mock: Any) -> None:
    """The options flow offers the period in days."""
    entry = MockConfigEntry(domain=DOMAIN, data={CONF_HOME_ID: HOME}, unique_id=HOME)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.runtime_data.options.stale_after_days == 7
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert CONF_STALE_DAYS in result["data_schema"].schema
    assert config_entries.ConfigEntryState.LOADED is entry.state
