"""Relay and LED state that tells the truth at the edges (issues 10 and 11).

The node reports its LED like its relay (retained status/led), the heartbeat carries both (so a
broker without retained delivery still gets them), the integration announces itself so nodes
re-publish their state, and a restart never passes a known state through `unknown`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNKNOWN
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
    async_fire_time_changed,
)

from custom_components.heartbeat_iot.announce import MAX_PROBES, PROBE_WAIT_S
from custom_components.heartbeat_iot.homesync.protocol import (
    HUB_ONLINE_PAYLOAD,
    HUB_PROBE_PAYLOAD,
)

from .command_helpers import NODE, entity_id, go_online, relay_status, state
from .conftest import HOME, publish

HUB_STATUS = f"homesync/{HOME}/hub/status"


def _published(mqtt_mock: Any, payload: str = HUB_ONLINE_PAYLOAD) -> list[Any]:
    """What the hub published on hub/status with that payload (the announcement by default)."""
    return [
        c
        for c in mqtt_mock.async_publish.call_args_list
        if c.args[0] == HUB_STATUS and c.args[1] == payload
    ]


async def _hear(hass: HomeAssistant, payload: str, *, retain: bool = False) -> None:
    """The broker delivers a message on hub/status to HA's own subscription."""
    async_fire_mqtt_message(hass, HUB_STATUS, payload, qos=1, retain=retain)
    await hass.async_block_till_done()


async def _wait(hass: HomeAssistant, seconds: float) -> None:
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=seconds))
    await hass.async_block_till_done()


async def test_hub_announces_itself_at_start_and_on_every_reconnect(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Nodes re-publish birth, relay, LED and firmware when they hear this (not retained)."""
    await hass.async_block_till_done()
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == 1
    await _hear(hass, HUB_PROBE_PAYLOAD)  # our subscriptions are live
    calls = _published(mqtt_mock)
    assert [c.args[1:] for c in calls] == [('{"online": true}', 1, False)]

    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await hass.async_block_till_done()
    assert len(_published(mqtt_mock)) == 1  # nothing to say while the link is down
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    await _hear(hass, HUB_PROBE_PAYLOAD)
    assert len(_published(mqtt_mock)) == 2


async def test_hub_announces_once_its_probe_comes_back(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Nodes are asked only once HA hears its own subscriptions work (RabbitMQ).

    HA's MQTT client subscribes after a cooldown but publishes at once, so an announcement
    published at start could be answered before HA listens. The hub probes hub/status with a
    payload nodes ignore until it hears it back (a retained copy proves nothing), then
    announces once: every node answers once, and is heard.
    """
    await hass.async_block_till_done()
    assert _published(mqtt_mock) == []  # no announcement before the probe came back
    await _wait(hass, PROBE_WAIT_S + 0.1)
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == 2  # not heard back: probed again

    await _hear(hass, HUB_PROBE_PAYLOAD, retain=True)
    await _wait(hass, 2 * PROBE_WAIT_S + 0.2)
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == 3  # a retained copy is no echo
    assert _published(mqtt_mock) == []

    await _hear(hass, HUB_PROBE_PAYLOAD)
    assert len(_published(mqtt_mock)) == 1  # heard: announced, once
    await _hear(hass, HUB_ONLINE_PAYLOAD)  # our announcement comes back: nothing more
    await _wait(hass, 10 * PROBE_WAIT_S)
    assert len(_published(mqtt_mock)) == 1
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == 3


async def test_hub_probes_not_heard_back_stop_and_it_announces_anyway(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    """A broker ACL that denies HA reading hub/status must not make it probe forever."""
    for step in range(1, 3 * MAX_PROBES):
        await _wait(hass, step * PROBE_WAIT_S + 0.5)
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == MAX_PROBES
    assert len(_published(mqtt_mock)) == 1  # announced all the same, once

    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert len(_published(mqtt_mock, HUB_PROBE_PAYLOAD)) == MAX_PROBES + 1  # afresh


async def test_led_reported_by_the_node_is_a_real_toggle(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """status/led gives the LED a known state; a reboot of such a node does not forget it."""
    go_online(hass)
    publish(hass, NODE, "status", "led", {"state": "off", "source": "boot"}, retain=True)
    await hass.async_block_till_done()
    assert state(hass, "led") == STATE_OFF

    publish(hass, NODE, "status", "led", {"state": "blink", "source": "command"})
    await hass.async_block_till_done()
    assert state(hass, "led") == STATE_ON

    publish(hass, NODE, "status", "heartbeat", {"seq": 0, "uptime": 1, "interval": 30})
    await hass.async_block_till_done()
    assert state(hass, "led") == STATE_ON  # rebooted, and it re-publishes status/led itself


async def test_heartbeat_carries_relay_and_led(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """With no retained message at all (RabbitMQ + wildcards), the heartbeat is enough."""
    publish(
        hass,
        NODE,
        "status",
        "heartbeat",
        {"seq": 1, "uptime": 5, "interval": 30, "relay": "on", "led": "off"},
    )
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON
    assert state(hass, "led") == STATE_OFF

    publish(hass, NODE, "status", "heartbeat", {"seq": 2, "uptime": 35, "relay": "sideways"})
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON  # an invalid heartbeat is skipped whole


async def test_restart_never_passes_known_state_through_unknown(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """After a restart the relay and LED show their last state at once, not unknown → on."""
    relay_status(hass, "on")
    publish(hass, NODE, "status", "led", {"state": "off", "source": "boot"}, retain=True)
    go_online(hass)
    await hass.async_block_till_done()
    assert (state(hass), state(hass, "led")) == (STATE_ON, STATE_OFF)

    relay, led = entity_id(hass, "relay"), entity_id(hass, "led")
    written: list[tuple[str, str]] = []

    @callback
    def record(event: Event[EventStateChangedData]) -> None:
        if (new := event.data["new_state"]) is not None:
            written.append((new.entity_id, new.state))

    unsub = async_track_state_change_event(hass, [relay, led], record)
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    unsub()

    assert (relay, STATE_UNKNOWN) not in written
    assert (led, STATE_UNKNOWN) not in written
    assert (state(hass), state(hass, "led")) == (STATE_ON, STATE_OFF)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_restart_keeps_link_quality_until_the_tracker_knows_again(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """Link quality needs two heartbeats; until then it shows what it showed, not unknown."""
    for seq in (1, 2, 3):
        publish(hass, NODE, "status", "heartbeat", {"seq": seq, "uptime": seq * 30})
    await hass.async_block_till_done()
    quality = entity_id(hass, "link_quality", platform="sensor")
    before = hass.states.get(quality)
    assert before is not None
    assert before.state not in (STATE_UNKNOWN, "unavailable")

    written: list[str] = []

    @callback
    def record(event: Event[EventStateChangedData]) -> None:
        if (new := event.data["new_state"]) is not None:
            written.append(new.state)

    unsub = async_track_state_change_event(hass, [quality], record)
    assert await hass.config_entries.async_reload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    unsub()
    assert STATE_UNKNOWN not in written
    assert hass.states.get(quality).state == before.state


async def test_restart_before_mqtt_connects_shows_the_restored_state(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """At start HA's MQTT client connects a moment after us: not a reason for `unavailable`.

    Only if the link never comes up within the grace do the node's entities become
    unavailable (nothing can be known then).
    """
    relay_status(hass, "on")
    go_online(hass)
    await hass.async_block_till_done()
    relay = entity_id(hass, "relay")
    written: list[str] = []

    @callback
    def record(event: Event[EventStateChangedData]) -> None:
        if (new := event.data["new_state"]) is not None:
            written.append(new.state)

    # Unload first (removing entities writes `unavailable`; a real restart does not), then start
    # again while HA's MQTT client is not connected yet.
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    unsub = async_track_state_change_event(hass, [relay], record)
    with patch("homeassistant.components.mqtt.is_connected", return_value=False):
        assert await hass.config_entries.async_setup(loaded_entry.entry_id)
        await hass.async_block_till_done()
    assert state(hass) == STATE_ON
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON
    assert "unavailable" not in written

    # A restart during a real broker outage: after the grace, unavailable.
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    with patch("homeassistant.components.mqtt.is_connected", return_value=False):
        assert await hass.config_entries.async_setup(loaded_entry.entry_id)
        await hass.async_block_till_done()
    assert state(hass) == STATE_ON
    freezer.tick(timedelta(seconds=31))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    unsub()
    assert state(hass) == "unavailable"
