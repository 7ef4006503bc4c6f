"""Diagnostics show what the hub knows and never anything secret."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.const import DOMAIN

from .conftest import HOME, publish


async def test_diagnostics(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
) -> None:
    publish(hass, "plug", "status", "heartbeat", {"seq": 3, "uptime": 100, "interval": 30})
    publish(hass, "plug", "telemetry", "power", {"value": 12.5, "unit": "W"})
    publish(hass, "plug", "status", "relay", {"state": "on", "source": "boot"}, retain=True)
    publish(hass, "gone", "telemetry", "power", {"value": 1})
    publish(hass, "gone", "status", "online", {"online": False, "reason": "shutdown"})
    await hass.async_block_till_done()
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/gone")})
    assert device is not None
    # A queued command carrying a URL (e.g. a future OTA source) must not leak it.
    await hass.services.async_call(
        DOMAIN,
        "send_command",
        {
            "device_id": device.id,
            "command": "config",
            "action": "set",
            "params": {"config": {"heartbeat_interval": 15}, "url": "http://user:pw@x/fw"},
            "queue": True,
        },
        blocking=True,
    )
    assert await async_setup_component(hass, "diagnostics", {})
    data: Any = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)

    assert data["entry"]["data"] == {"home_id": HOME}
    assert data["broker_connected"] is True
    assert data["fleet"]["online"] == 1
    assert data["fleet"]["offline"] == 1
    plug = data["nodes"]["plug"]
    assert plug["metrics"]["power"] == {"unit": "W", "value": 12.5}
    assert plug["relay"] == "on"
    assert plug["availability"]["state"] == "online"
    assert plug["availability"]["timeout"] == 90
    assert plug["availability"]["last_seen"].endswith("+00:00")
    assert data["nodes"]["gone"]["availability"]["reason"] == "shutdown"
    assert len(data["control"]["queue"]) == 1
    assert "user:pw" not in json.dumps(data)
