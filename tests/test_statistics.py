"""Per-home command and message statistics, per-node queued intents (issue 10 item 14).

What the user sees on the hub device: commands sent / confirmed / failed (total_increasing),
commands pending confirmation, intents queued for offline nodes, messages per minute, messages
rejected as invalid; on each node (diagnostic): its queued intents. Cheap on the hot path: no
state is written per message, the message numbers move on a slow timer.
"""

from __future__ import annotations

from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import EVENT_STATE_CHANGED, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.const import DOMAIN, STATS_INTERVAL

from .command_helpers import (
    NODE,
    advance,
    go_offline,
    go_online,
    respond,
    send_command,
    sent,
    settle,
    start,
)
from .conftest import HOME, publish

HOME_STATS = (
    "commands_sent",
    "commands_confirmed",
    "commands_failed",
    "commands_pending",
    "intents_queued",
    "messages_per_minute",
    "messages_rejected",
)


def home_entity(hass: HomeAssistant, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{HOME}_{key}")
    assert entity_id is not None, key
    return entity_id


def home_stat(hass: HomeAssistant, key: str) -> str:
    state = hass.states.get(home_entity(hass, key))
    assert state is not None
    return state.state


def node_queued(hass: HomeAssistant, node: str = NODE) -> str:
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id("sensor", DOMAIN, f"{HOME}_{node}_queued_intents")
    assert entity_id is not None
    entry = registry.async_get(entity_id)
    assert entry is not None
    assert entry.entity_category is EntityCategory.DIAGNOSTIC
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


async def test_home_sensors_exist_with_the_right_classes(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    for key in HOME_STATS:
        state = hass.states.get(home_entity(hass, key))
        assert state is not None, key
        expected = (
            "total_increasing"
            if key
            in {"commands_sent", "commands_confirmed", "commands_failed", "messages_rejected"}
            else ("measurement")
        )
        assert state.attributes["state_class"] == expected, key
    assert home_stat(hass, "commands_sent") == "0"
    assert home_stat(hass, "intents_queued") == "0"


async def test_command_counters(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    loaded_entry: MockConfigEntry,
    mqtt_mock: Any,
) -> None:
    go_online(hass)
    await hass.async_block_till_done()

    task = start(send_command(hass, command="relay", action="on"))
    await settle()
    assert home_stat(hass, "commands_pending") == "1"
    assert home_stat(hass, "commands_sent") == "1"
    respond(hass, sent(mqtt_mock)[-1]["request_id"], result="on")
    await task
    await settle()
    assert home_stat(hass, "commands_confirmed") == "1"
    assert home_stat(hass, "commands_pending") == "0"

    task = start(send_command(hass, command="relay", action="off"))
    await settle()
    respond(hass, sent(mqtt_mock)[-1]["request_id"], status="error", error="busy")
    with pytest.raises(HomeAssistantError):
        await task
    await settle()
    assert home_stat(hass, "commands_failed") == "1"

    task = start(send_command(hass, command="relay", action="off", retries=0, timeout=1))
    await settle()
    await advance(hass, freezer, 1.5, step=0.5)
    with pytest.raises(HomeAssistantError):
        await task
    await settle()
    assert home_stat(hass, "commands_sent") == "3"
    assert home_stat(hass, "commands_confirmed") == "1"
    assert home_stat(hass, "commands_failed") == "2"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_queued_intents_per_home_and_per_node(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    go_offline(hass)
    await hass.async_block_till_done()
    assert node_queued(hass) == "0"
    await send_command(hass, command="relay", action="on", queue=True)
    await send_command(hass, command="led", action="blink", queue=True)
    await hass.async_block_till_done()
    assert home_stat(hass, "intents_queued") == "2"
    assert node_queued(hass) == "2"

    go_online(hass, seq=5)  # the queue is delivered
    await settle()
    assert node_queued(hass) == "0"
    assert home_stat(hass, "intents_queued") == "0"
    for payload in sent(mqtt_mock) + sent(mqtt_mock, "led"):
        respond(hass, payload["request_id"], result=payload["action"])
    await hass.async_block_till_done(wait_background_tasks=True)
    assert home_stat(hass, "commands_confirmed") == "2"


async def test_message_rate_and_rejections_move_on_the_timer_only(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, loaded_entry: MockConfigEntry
) -> None:
    watched = {home_entity(hass, "messages_per_minute"), home_entity(hass, "messages_rejected")}
    changes = async_capture_events(hass, EVENT_STATE_CHANGED)
    for i in range(30):
        publish(hass, NODE, "status", "heartbeat", {"seq": i, "uptime": 10 + i, "interval": 30})
    for _ in range(5):
        publish(hass, NODE, "telemetry", "power", {"value": "high"})
    publish(hass, NODE, "bogus", "x", {"value": 1})  # bad topic
    await hass.async_block_till_done()
    # Nothing visible moved per message.
    assert [e for e in changes if e.data["entity_id"] in watched] == []

    await advance(hass, freezer, STATS_INTERVAL)  # one minute: the timer samples
    assert home_stat(hass, "messages_rejected") == "6"
    assert float(home_stat(hass, "messages_per_minute")) == pytest.approx(36.0)
    rejected = home_entity(hass, "messages_rejected")
    assert len([e for e in changes if e.data["entity_id"] == rejected]) == 1

    # A quiet minute: the rate falls to 0, then nothing more is written, tick after tick.
    await advance(hass, freezer, STATS_INTERVAL)
    assert float(home_stat(hass, "messages_per_minute")) == 0.0
    before = len(changes)
    for _ in range(5):
        await advance(hass, freezer, STATS_INTERVAL)
    assert [e for e in changes[before:] if e.data["entity_id"] in watched] == []


async def test_diagnostics_include_the_statistics(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    go_offline(hass)
    await hass.async_block_till_done()
    await send_command(hass, command="relay", action="on", queue=True)
    publish(hass, NODE, "telemetry", "power", {"value": "high"})
    await hass.async_block_till_done()
    assert await async_setup_component(hass, "diagnostics", {})
    data: Any = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)

    stats = data["statistics"]
    assert stats["commands_sent"] == 0
    assert stats["commands_confirmed"] == 0
    assert stats["commands_failed"] == 0
    assert stats["commands_pending"] == 0
    assert stats["intents_queued"] == 1
    assert stats["messages_received"] == 3  # heartbeat, will, bad reading
    assert stats["messages_rejected"] == 1
    assert "messages_per_minute" in stats
    assert data["nodes"][NODE]["queued_intents"] == 1
