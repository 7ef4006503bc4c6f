"""Snapshots (syrupy .ambr, as HA core's elgato and wled) of every platform's entities and of
the diagnostics, for a small home at a frozen time.

A change to a name, unique id, device class, unit, category, state or attribute shows up as a
diff of tests/snapshots/test_snapshots.ambr. After an intended change:
`.venv/bin/python -m pytest tests/test_snapshots.py --snapshot-update -p no:cacheprovider`.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.heartbeat_iot.diagnostics import async_get_config_entry_diagnostics

from .command_helpers import (
    NODE,
    device_id,
    go_offline,
    go_online,
    relay_status,
    respond,
    send_command,
    sent,
    settle,
    start,
)
from .conftest import publish

FROZEN = "2025-02-06T14:30:00+00:00"


async def _populate(hass: HomeAssistant) -> None:
    """One online node with telemetry, firmware, rssi, a reboot and a confirmed LED; one
    offline node."""
    relay_status(hass, "on")
    publish(hass, NODE, "status", "firmware", {"version": "1.2.3"}, retain=True)
    go_online(hass, seq=5)
    go_online(hass, seq=6)
    publish(hass, NODE, "telemetry", "power", {"value": 125.5, "unit": "W"})
    publish(hass, NODE, "telemetry", "energy", {"value": 1250, "unit": "Wh"})
    publish(hass, NODE, "telemetry", "humidity", {"value": 41, "unit": "%"})
    publish(hass, NODE, "status", "rssi", {"value": -61, "unit": "dBm"})
    go_online(hass, seq=0)  # a reboot: the event entity shows it
    go_online(hass, "lamp")
    go_offline(hass, "lamp")
    await hass.async_block_till_done()


async def _confirm_led(hass: HomeAssistant, mqtt_mock: Any) -> None:
    task = start(send_command(hass, command="led", action="blink"))
    await settle()
    respond(hass, sent(mqtt_mock, "led")[-1]["request_id"], result="blink")
    await task


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
@pytest.mark.parametrize(
    "platform",
    [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR, Platform.SWITCH, Platform.UPDATE],
)
async def test_entities(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    setup_entry: Any,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
    platform: Platform,
) -> None:
    freezer.move_to(FROZEN)
    with patch("custom_components.heartbeat_iot.PLATFORMS", [platform]):
        entry: MockConfigEntry = await setup_entry()
        await _populate(hass)
        assert device_id(hass)  # the node's device exists
        if platform is Platform.SWITCH:
            await _confirm_led(hass, mqtt_mock)
        await snapshot_platform(hass, entity_registry, snapshot, entry.entry_id)


async def test_diagnostics(
    hass: HomeAssistant,
    setup_entry: Any,
    snapshot: SnapshotAssertion,
    mqtt_mock: Any,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The platform function itself (tests/test_diagnostics.py goes through the HTTP API)."""
    freezer.move_to(FROZEN)
    entry: MockConfigEntry = await setup_entry()
    await _populate(hass)
    await _confirm_led(hass, mqtt_mock)
    assert await async_get_config_entry_diagnostics(hass, entry) == snapshot
