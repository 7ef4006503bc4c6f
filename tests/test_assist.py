"""Assist: "turn on <node> relay" through the default conversation agent.

Assist users are named in docs/architecture.md §1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from homeassistant.components import conversation, mqtt
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, intent
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from .command_helpers import (
    NODE,
    device_id,
    entity_id,
    go_online,
    relay_status,
    respond,
    sent,
    start,
    state,
)
from .conftest import topic


async def test_turn_on_relay_by_voice(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    assert await async_setup_component(hass, "conversation", {})
    assert await async_setup_component(hass, "intent", {})
    relay_status(hass, "off")
    go_online(hass)
    await hass.async_block_till_done()
    # The user named the device; the relay entity is "<device name> Relay".
    dr.async_get(hass).async_update_device(device_id(hass), name_by_user="Kitchen plug")
    await hass.async_block_till_done()
    relay = entity_id(hass, "relay")
    assert async_should_expose(hass, conversation.DOMAIN, relay)  # a switch, no category
    assert not async_should_expose(hass, conversation.DOMAIN, entity_id(hass, "led"))
    assert state(hass) == STATE_OFF

    # The intent handler calls switch.turn_on as a task that waits for the node's answer,
    # so the test plays the node while the conversation is in progress. Recognition runs in
    # an executor thread: wait for the command to reach the (mocked) broker.
    published = asyncio.Event()

    @callback
    def _on_command(_msg: mqtt.ReceiveMessage) -> None:
        published.set()

    unsubscribe = await mqtt.async_subscribe(hass, topic(NODE, "command", "relay"), _on_command)
    task = start(
        conversation.async_converse(hass, "turn on kitchen plug relay", None, Context(), None)
    )
    await published.wait()
    unsubscribe()
    [payload] = sent(mqtt_mock)
    assert payload["action"] == "on"
    assert state(hass) == STATE_OFF  # not before the node confirmed
    respond(hass, payload["request_id"], result="on")
    result = await task
    await hass.async_block_till_done()
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert [target.id for target in result.response.success_results] == [relay]
    assert state(hass) == STATE_ON
    assert len(sent(mqtt_mock)) == 1
