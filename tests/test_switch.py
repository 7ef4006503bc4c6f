"""Relay and LED switches: confirmed, never optimistic (issue 5, docs/architecture.md §6)."""

from __future__ import annotations

import json
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    EntityCategory,
)
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.heartbeat_iot.const import (
    CONF_COMMAND_RETRIES,
    CONF_COMMAND_TIMEOUT,
    CONF_HOME_ID,
    DEFAULT_OPTIONS,
    DOMAIN,
    EVENT_COMMAND_FAILED,
)

from .command_helpers import (
    NODE,
    advance,
    device_id,
    entity_id,
    go_offline,
    go_online,
    relay_status,
    respond,
    send_command,
    sent,
    settle,
    start,
    state,
)
from .conftest import HOME, publish, topic


async def switch_call(hass: HomeAssistant, service: str, key: str = "relay") -> None:
    await hass.services.async_call(
        SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: entity_id(hass, key)}, blocking=True
    )


async def test_switches_created_per_node(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    go_online(hass, "plug")
    go_online(hass, "lamp")
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    for node in ("plug", "lamp"):
        relay = registry.async_get(entity_id(hass, "relay", node))
        led = registry.async_get(entity_id(hass, "led", node))
        assert relay is not None
        assert led is not None
        # The relay is the node's main control: no category, so Assist exposes it.
        assert relay.entity_category is None
        assert led.entity_category is EntityCategory.CONFIG
        assert relay.device_id == led.device_id == device_id(hass, node)
    relay_state = hass.states.get(entity_id(hass, "relay", "plug"))
    assert relay_state is not None
    assert relay_state.attributes["friendly_name"] == "plug Relay"
    assert state(hass, "relay", "lamp") == STATE_UNKNOWN  # no status/relay yet
    assert state(hass, "led", "lamp") == STATE_UNKNOWN


async def test_state_follows_status_relay_and_availability(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    relay_status(hass, "on")  # retained: known, but the node is not proven online yet
    await hass.async_block_till_done()
    assert state(hass) == STATE_UNAVAILABLE
    go_online(hass)
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON
    relay_status(hass, "off", retain=False)  # button press
    await hass.async_block_till_done()
    assert state(hass) == STATE_OFF
    go_offline(hass)
    await hass.async_block_till_done()
    assert state(hass) == STATE_UNAVAILABLE
    assert state(hass, "led") == STATE_UNAVAILABLE


async def test_confirmed_turn_on(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Published QoS 1, not retained; the state changes only with the node's answer."""
    mqtt_mock.async_publish.reset_mock()
    task = start(switch_call(hass, "turn_on"))
    await settle()
    [payload] = sent(mqtt_mock)
    mqtt_mock.async_publish.assert_called_once_with(
        topic(NODE, "command", "relay"), json.dumps(payload), 1, False
    )
    assert payload["action"] == "on"
    assert payload["ttl"] == 30
    assert payload["timestamp"].endswith("Z")
    assert payload["request_id"]
    assert not task.done()
    assert state(hass) == STATE_OFF  # not optimistic

    respond(hass, payload["request_id"], result="on")
    await hass.async_block_till_done()
    await task
    assert state(hass) == STATE_ON
    assert len(sent(mqtt_mock)) == 1


async def test_status_relay_before_the_answer(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The firmware publishes status/relay first, then the response: both agree."""
    task = start(switch_call(hass, "turn_on"))
    await settle()
    [payload] = sent(mqtt_mock)
    relay_status(hass, "on", retain=False)  # a broker delivers live messages unretained
    await settle()
    assert state(hass) == STATE_ON
    respond(hass, payload["request_id"], result="on")
    await hass.async_block_till_done()
    await task
    assert state(hass) == STATE_ON


async def test_no_answer_four_attempts_with_backoff_then_error(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    """Timeout 5 s, 3 retries, backoff 1, 2, 4 s: publishes at 0, 6, 13 and 22 s, error at 27 s."""
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    task = start(switch_call(hass, "turn_on"))
    await settle()
    assert len(sent(mqtt_mock)) == 1
    # (seconds to move on, publishes seen by then): each publish is due exactly on schedule.
    schedule = [(5, 1), (0.9, 1), (0.1, 2), (6.9, 2), (0.1, 3), (8.9, 3), (0.1, 4), (4.9, 4)]
    for seconds, publishes in schedule:
        await advance(hass, freezer, seconds, step=0.1)
        assert len(sent(mqtt_mock)) == publishes
        assert not task.done()
    await advance(hass, freezer, 0.1)
    assert task.done()
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_timeout"
    # (Home Assistant drops the translation's final period.)
    assert str(err.value) == "plug did not confirm relay on after 4 attempts"

    payloads = sent(mqtt_mock)
    assert len(payloads) == 4
    assert len({p["request_id"] for p in payloads}) == 1
    assert all(p == payloads[0] for p in payloads)  # identical retries: the node deduplicates
    assert state(hass) == STATE_OFF
    [event] = failed
    assert event.data == {
        "device_id": device_id(hass),
        "home_id": "home1",
        "node_id": NODE,
        "command": "relay",
        "action": "on",
        "source": "switch",
        "request_id": payloads[0]["request_id"],
        "status": "timeout",
        "reason": "timeout",
        "result": None,
        "error": "no answer from plug after 4 attempts",
        "attempts": 4,
        "latency_ms": None,
    }


async def test_late_answer_after_failure_is_ignored(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    task = start(switch_call(hass, "turn_on"))
    await settle()
    await advance(hass, freezer, 30, step=1)
    with pytest.raises(HomeAssistantError):
        await task
    request_id = sent(mqtt_mock)[0]["request_id"]
    respond(hass, request_id, result="on")
    await hass.async_block_till_done()
    assert state(hass) == STATE_OFF  # the late answer changes nothing...
    relay_status(hass, "on", retain=False)
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON  # ...the relay still follows status/relay


async def test_error_answer_is_not_retried(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    task = start(switch_call(hass, "turn_on"))
    await settle()
    respond(hass, sent(mqtt_mock)[0]["request_id"], status="error", error="relay welded")
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_rejected"
    assert str(err.value) == "plug refused relay on: relay welded"
    await advance(hass, freezer, 60, step=1)
    assert len(sent(mqtt_mock)) == 1
    assert state(hass) == STATE_OFF
    assert [e.data["reason"] for e in failed] == ["error"]
    assert failed[0].data["error"] == "relay welded"
    assert failed[0].data["attempts"] == 1


async def test_expired_answer_is_an_error(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    task = start(switch_call(hass, "turn_off"))
    await settle()
    respond(hass, sent(mqtt_mock)[0]["request_id"], status="expired", error="command expired")
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_expired"
    assert len(sent(mqtt_mock)) == 1


async def test_toggle(hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any) -> None:
    """A known state toggles to the explicit opposite."""
    task = start(switch_call(hass, "toggle"))
    await settle()
    [payload] = sent(mqtt_mock)
    assert payload["action"] == "on"
    respond(hass, payload["request_id"], result="on")
    await hass.async_block_till_done()
    await task
    assert state(hass) == STATE_ON


async def test_toggle_unknown_state_asks_the_node(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    assert state(hass) == STATE_UNKNOWN
    task = start(switch_call(hass, "toggle"))
    await settle()
    [payload] = sent(mqtt_mock)
    assert payload["action"] == "toggle"
    respond(hass, payload["request_id"], result="off")  # the node says what it did
    await hass.async_block_till_done()
    await task
    assert state(hass) == STATE_OFF


async def test_led_switch(hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any) -> None:
    """A node that does not report its LED (older firmware): confirmations; a reboot forgets it."""
    assert state(hass, "led") == STATE_UNKNOWN
    for service, action, expected in (("turn_on", "on", STATE_ON), ("turn_off", "off", STATE_OFF)):
        task = start(switch_call(hass, service, "led"))
        await settle()
        payload = sent(mqtt_mock, "led")[-1]
        assert payload["action"] == action
        assert state(hass, "led") != expected
        respond(hass, payload["request_id"], result=action)
        await hass.async_block_till_done()
        await task
        assert state(hass, "led") == expected
    assert sent(mqtt_mock) == []  # nothing went to the relay

    publish(hass, NODE, "status", "heartbeat", {"seq": 0, "uptime": 1, "interval": 30})
    await hass.async_block_till_done()
    assert state(hass, "led") == STATE_UNKNOWN  # rebooted: the LED follows the relay again


async def test_reboot_forgets_the_led_while_its_entity_is_disabled(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    """The reboot rule lives with the LED state, not in the entity (issue 12)."""
    registry = er.async_get(hass)
    registry.async_update_entity(entity_id(hass, "led"), disabled_by=er.RegistryEntryDisabler.USER)
    await hass.async_block_till_done()
    task = start(send_command(hass, command="led", action="blink"))
    await settle()
    respond(hass, sent(mqtt_mock, "led")[-1]["request_id"], result="blink")
    await task
    outputs = online.runtime_data.outputs
    assert outputs.led(NODE) == "blink"

    publish(hass, NODE, "status", "heartbeat", {"seq": 0, "uptime": 1, "interval": 30})
    await hass.async_block_till_done()
    assert outputs.led(NODE) is None  # what the entity shows once it is enabled again


async def test_offline_node_gets_no_command(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_offline(hass)
    await hass.async_block_till_done()
    assert state(hass) == STATE_UNAVAILABLE
    await switch_call(hass, "turn_on")  # Home Assistant skips unavailable entities
    assert sent(mqtt_mock) == []
    # A call racing the transition is refused with the node-offline error.
    control = online.runtime_data.control
    with pytest.raises(HomeAssistantError) as err:
        await control.async_command(NODE, "relay", "on")
    assert err.value.translation_key == "node_offline"
    assert sent(mqtt_mock) == []


async def test_unload_cancels_a_pending_command(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    task = start(switch_call(hass, "turn_on"))
    await settle()
    assert len(sent(mqtt_mock)) == 1
    assert await hass.config_entries.async_unload(online.entry_id)
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_cancelled"
    assert failed == []  # not the node's failure
    await advance(hass, freezer, 60, step=1)
    assert len(sent(mqtt_mock)) == 1  # no retry is left scheduled


async def test_timeout_and_retries_from_options(
    hass: HomeAssistant, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    """Options: 2 s per attempt, 1 retry -> publishes at 0 and 3 s, error at 5 s."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={CONF_HOME_ID: HOME},
        options={**DEFAULT_OPTIONS, CONF_COMMAND_TIMEOUT: 2.0, CONF_COMMAND_RETRIES: 1},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    go_online(hass)
    await hass.async_block_till_done()
    task = start(switch_call(hass, "turn_on"))
    await settle()
    for seconds, publishes in [(2.9, 1), (0.1, 2), (1.9, 2)]:
        await advance(hass, freezer, seconds, step=0.1)
        assert len(sent(mqtt_mock)) == publishes
        assert not task.done()
    await advance(hass, freezer, 0.1)
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert str(err.value) == "plug did not confirm relay on after 2 attempts"
