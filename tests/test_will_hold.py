"""A Last Will counts only once it is clear it is not a broker shutting down (issue 11).

mosquitto publishes every connected client's will while it shuts down, a few milliseconds
before it closes Home Assistant's own link, and keeps them as the retained state across the
restart. Taken as real, every node of the home would fire ``node_offline`` at every broker (or
host) restart. The tracker holds a live will for ``TrackerSettings.will_hold`` (1 s) and drops
it when our link goes down within that time or the node speaks; a retained will of a node
automations know as online is left to the silence timeout (docs/availability.md).
"""

from __future__ import annotations

import logging

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers.dispatcher import async_dispatcher_send
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.heartbeat_iot.const import DOMAIN
from custom_components.heartbeat_iot.homesync.tracker import (
    Availability,
    EventType,
    HeartbeatTracker,
    TrackerSettings,
)

from .command_helpers import advance
from .conftest import publish
from .fakes import FakeClock
from .test_availability import connectivity, heartbeat
from .test_tracker import T0, hb, kinds, lwt, make

OFFLINE = f"{DOMAIN}_node_offline"
ONLINE = f"{DOMAIN}_node_online"


def online_tracker(**settings: float) -> tuple[HeartbeatTracker, FakeClock]:
    """An online node with the hold (test_tracker's make() takes wills at once)."""
    tracker, clock = make(TrackerSettings(**settings))  # type: ignore[arg-type]
    hb(tracker, interval=30)
    return tracker, clock


def tick_at(tracker: HeartbeatTracker, clock: FakeClock, at: float) -> list[tuple[EventType, str]]:
    clock.now = at
    return kinds(tracker.tick())


# ---------------------------------------------------------------- the pure tracker


def test_a_live_will_counts_after_the_hold() -> None:
    tracker, clock = online_tracker()
    assert kinds(lwt(tracker)) == []
    assert tracker.state("n1") is Availability.ONLINE  # held, not yet believed
    assert tracker.next_deadline() == T0 + 1.0  # the glue's one timer wakes for it
    assert tick_at(tracker, clock, T0 + 0.99) == []
    assert tick_at(tracker, clock, T0 + 1.0) == [(EventType.OFFLINE, "unexpected_disconnect")]
    assert tracker.state("n1") is Availability.OFFLINE


def test_a_will_followed_by_the_loss_of_our_link_is_a_broker_shutdown() -> None:
    tracker, clock = online_tracker()
    lwt(tracker)
    clock.now = T0 + 0.005
    assert tracker.set_broker_connected(False).events == []
    assert tracker.wills_ignored == 1
    clock.now = T0 + 10
    tracker.set_broker_connected(True)
    assert tracker.state("n1") is Availability.ONLINE
    # Nothing was left behind: the node is judged by its heartbeats from the reconnect on.
    assert tick_at(tracker, clock, T0 + 10 + 90) == []
    assert tick_at(tracker, clock, T0 + 10 + 90.01) == [(EventType.OFFLINE, "timeout")]


def test_the_node_speaking_during_the_hold_drops_its_will() -> None:
    tracker, clock = online_tracker()
    lwt(tracker)
    clock.now = T0 + 0.3
    out = tracker.on_online_status("n1", True, reason="reconnect", uptime=101, retained=False)
    assert out.events == []
    assert tick_at(tracker, clock, T0 + 5) == []
    status = tracker.status("n1")
    assert status is not None
    assert status.state is Availability.ONLINE
    assert status.contradicted_wills == 1  # diagnostics still count the race


def test_a_retained_will_of_an_online_node_is_left_to_its_timeout() -> None:
    tracker, clock = online_tracker()
    assert kinds(lwt(tracker, retained=True)) == []
    assert tick_at(tracker, clock, T0 + 5) == []
    assert tracker.state("n1") is Availability.ONLINE
    assert tick_at(tracker, clock, T0 + 90.01) == [(EventType.OFFLINE, "timeout")]


def test_a_retained_will_of_a_node_never_heard_is_still_its_offline_baseline() -> None:
    tracker, _clock = make(TrackerSettings())
    assert kinds(lwt(tracker, retained=True)) == []
    assert tracker.state("n1") is Availability.OFFLINE


def test_the_nodes_own_offline_message_counts_at_once() -> None:
    tracker, _clock = online_tracker()
    out = tracker.on_online_status("n1", False, reason="shutdown", uptime=None, retained=False)
    assert kinds(out) == [(EventType.OFFLINE, "shutdown")]


def test_no_hold_is_the_old_fast_path() -> None:
    tracker, _clock = online_tracker(will_hold=0.0)
    assert kinds(lwt(tracker)) == [(EventType.OFFLINE, "unexpected_disconnect")]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), True])
def test_the_hold_must_be_a_number_not_below_zero(bad: float) -> None:
    with pytest.raises(ValueError, match="will_hold"):
        TrackerSettings(will_hold=bad)


# ---------------------------------------------------------------- through Home Assistant


def publish_will(hass: HomeAssistant, node: str) -> None:
    publish(hass, node, "status", "online", {"online": False, "reason": "unexpected_disconnect"})


async def test_broker_shutdown_wills_fire_no_offline_event(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    offline = async_capture_events(hass, OFFLINE)
    online = async_capture_events(hass, ONLINE)
    for node in ("plug", "lamp"):
        heartbeat(hass, node, 0, 10)
    await hass.async_block_till_done()
    # What mosquitto does on SIGTERM: every client's will, then it closes our link.
    with caplog.at_level(logging.INFO):
        publish_will(hass, "plug")
        publish_will(hass, "lamp")
        await hass.async_block_till_done()
        assert connectivity(hass, "plug") == STATE_ON
        async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
        await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_UNAVAILABLE
    assert "Ignored the last wills of 2 HomeSync nodes" in caplog.text
    await advance(hass, freezer, 10)
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_ON
    assert connectivity(hass, "lamp") == STATE_ON
    heartbeat(hass, "plug", 1, 21)
    heartbeat(hass, "lamp", 1, 21)
    await advance(hass, freezer, 5)
    assert offline == []
    assert online == []


async def test_a_heartbeat_during_the_hold_drops_the_will(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """A reconnect race on a node in its steady state (heartbeats that change nothing)."""
    offline = async_capture_events(hass, OFFLINE)
    for seq in range(25):  # past the 20-heartbeat link window: nothing visible changes any more
        heartbeat(hass, "plug", seq, 10 + seq)
        await advance(hass, freezer, 1)
    publish_will(hass, "plug")
    await advance(hass, freezer, 0.3)
    heartbeat(hass, "plug", 25, 35)
    await advance(hass, freezer, 5)
    assert connectivity(hass, "plug") == STATE_ON
    assert offline == []


async def test_a_real_will_still_turns_the_node_offline_within_two_seconds(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    offline = async_capture_events(hass, OFFLINE)
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    publish_will(hass, "plug")
    await advance(hass, freezer, 0.4)
    assert connectivity(hass, "plug") == STATE_ON
    await advance(hass, freezer, 1.6)  # the hold, then the timer's 0.5 s grid
    assert connectivity(hass, "plug") == STATE_OFF
    assert [e.data["reason"] for e in offline] == ["unexpected_disconnect"]


async def test_a_retained_will_after_a_broker_restart_fires_nothing(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """HA reconnects before the node: the broker still holds the will it published as it shut
    down, and hands it to our fresh subscription as retained."""
    offline = async_capture_events(hass, OFFLINE)
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await advance(hass, freezer, 10)
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    publish(
        hass,
        "plug",
        "status",
        "online",
        {"online": False, "reason": "unexpected_disconnect"},
        retain=True,
    )
    await advance(hass, freezer, 5)
    assert connectivity(hass, "plug") == STATE_ON
    publish(hass, "plug", "status", "online", {"online": True, "reason": "reconnect"})
    await advance(hass, freezer, 5)
    assert connectivity(hass, "plug") == STATE_ON
    assert offline == []
