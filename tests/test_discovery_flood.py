"""A birth flood must not start a config flow per node id (issue 16 #9, the cause chain).

Home Assistant's MQTT integration starts a discovery flow for every new topic on the manifest's
`mqtt` topic; a flood of births with invented node ids started one flow each (~1 ms of event
loop each), the loop fell behind and every live node went silent past its timeout.
"""

from __future__ import annotations

import json
from typing import Any

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message

from custom_components.heartbeat_iot import discovery
from custom_components.heartbeat_iot.const import DOMAIN

from .conftest import HOME


def _count_flows(hass: HomeAssistant, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    started: list[str] = []
    flow = hass.config_entries.flow
    original = flow.async_init

    async def counting(handler: str, *args: Any, **kwargs: Any) -> Any:
        if handler == DOMAIN:
            started.append(str(kwargs.get("data", args[-1] if args else None)))
        return await original(handler, *args, **kwargs)

    monkeypatch.setattr(flow, "async_init", counting)
    return started


def _births(hass: HomeAssistant, home: str, count: int, start: int = 0) -> None:
    payload = json.dumps({"online": True, "reason": "boot"})
    for i in range(start, start + count):
        async_fire_mqtt_message(hass, f"homesync/{home}/nodes/x{i}/status/online", payload)


async def test_birth_flood_starts_at_most_one_flow_per_home(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _count_flows(hass, monkeypatch)
    _births(hass, "evil", 300)  # invented node ids of a home nobody configured
    _births(hass, HOME, 30)  # invented node ids of the configured home
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 1  # one card for "evil"; none per node, none for home1
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [f["context"]["title_placeholders"] for f in flows] == [{"home_id": "evil"}]
    # The configured entry was not rewritten 30 times with discovery keys either.
    assert loaded_entry.discovery_keys == {}


async def test_new_user_first_birth_takes_over_discovery(
    hass: HomeAssistant, mqtt_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No entry yet: Home Assistant's flow for the first birth hands discovery over to us."""
    started = _count_flows(hass, monkeypatch)
    _births(hass, "cellar", 1)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 1
    _births(hass, "cellar", 200, start=1)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 1
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    assert flows[0]["context"]["source"] == config_entries.SOURCE_MQTT


async def test_too_many_invented_home_ids_are_capped(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(discovery, "MAX_HOMES_OFFERED", 3)
    started = _count_flows(hass, monkeypatch)
    payload = json.dumps({"online": True})
    for i in range(50):
        async_fire_mqtt_message(hass, f"homesync/h{i}/nodes/n/status/online", payload)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 3
    assert caplog.text.count("homes were already offered") == 1


async def test_a_removed_home_is_offered_again(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _births(hass, HOME, 1)
    await hass.async_block_till_done(wait_background_tasks=True)
    await hass.config_entries.async_remove(loaded_entry.entry_id)
    await hass.async_block_till_done()
    started = _count_flows(hass, monkeypatch)
    _births(hass, HOME, 1, start=5)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 1


async def test_without_the_internal_home_assistants_discovery_stays(
    hass: HomeAssistant, mqtt_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feature detection: an MQTT integration without the internal is left alone."""
    monkeypatch.setattr(discovery, "_integration_unsubscribe", lambda hass: None)
    assert await discovery.async_take_over_discovery(hass) is False
    started = _count_flows(hass, monkeypatch)
    _births(hass, "garage", 3)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(started) == 3  # Home Assistant's per-topic flows, as before
