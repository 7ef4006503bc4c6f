"""What a user sees at the edges (issue 10 #1 #5, issue 16 #8 #9, issue 14 mass expiry).

Integration tests through HA's MQTT (mocked client) with a frozen clock.
"""

from __future__ import annotations

from datetime import timedelta
import logging
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNKNOWN
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.heartbeat_iot import availability as availability_module
from custom_components.heartbeat_iot.const import DOMAIN

from .conftest import HOME, publish

ONLINE = f"{DOMAIN}_node_online"
OFFLINE = f"{DOMAIN}_node_offline"


def _eid(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert entity_id is not None, unique_id
    return entity_id


def connectivity(hass: HomeAssistant, node: str) -> str:
    state = hass.states.get(_eid(hass, "binary_sensor", f"{HOME}_{node}_connectivity"))
    assert state is not None
    return state.state


def heartbeat(hass: HomeAssistant, node: str, seq: int, uptime: int) -> None:
    publish(hass, node, "status", "heartbeat", {"seq": seq, "uptime": uptime, "interval": 30})


def birth(hass: HomeAssistant, node: str, *, retain: bool) -> None:
    publish(hass, node, "status", "online", {"online": True, "reason": "boot"}, retain=retain)


async def advance(hass: HomeAssistant, freezer: FrozenDateTimeFactory, seconds: float) -> None:
    freezer.tick(timedelta(seconds=seconds))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


class FleetWatch:
    """Every value the fleet entities took (what an automation on them would have seen)."""

    def __init__(self, hass: HomeAssistant) -> None:
        self.hass = hass
        self.offline = _eid(hass, "sensor", f"{HOME}_nodes_offline")
        self.ratio = _eid(hass, "sensor", f"{HOME}_offline_ratio")
        self.degraded = _eid(hass, "binary_sensor", f"{HOME}_fleet_degraded")
        self.values: dict[str, list[str]] = {self.offline: [], self.ratio: [], self.degraded: []}

        @callback
        def on_change(event: Event[EventStateChangedData]) -> None:
            new = event.data["new_state"]
            if new is not None and new.entity_id in self.values:
                self.values[new.entity_id].append(new.state)

        hass.bus.async_listen("state_changed", on_change)


# ---------------------------------------------------------------- issue 10 #1 and #5


async def test_first_setup_raises_no_false_alarm(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Six nodes known from retained births: the fleet numbers never say "offline"."""
    caplog.set_level(logging.INFO, logger="custom_components.heartbeat_iot")
    watch = FleetWatch(hass)
    offline_events = async_capture_events(hass, OFFLINE)
    online_events = async_capture_events(hass, ONLINE)
    nodes = [f"plug-0{i}" for i in range(1, 7)]
    for node in nodes:  # what the broker hands over at subscribe time
        birth(hass, node, retain=True)
    await hass.async_block_till_done()
    assert {connectivity(hass, node) for node in nodes} == {STATE_UNKNOWN}  # not "off"

    # Each node's next heartbeat comes within its 30 s interval.
    for k, node in enumerate(nodes):
        await advance(hass, freezer, 4)
        heartbeat(hass, node, 10 + k, 500 + k)
        await hass.async_block_till_done()
    assert {connectivity(hass, node) for node in nodes} == {STATE_ON}

    assert set(watch.values[watch.offline]) <= {"0"}  # was 0 -> 6 -> 0
    assert set(watch.values[watch.ratio]) <= {"0.0"}
    assert STATE_ON not in watch.values[watch.degraded]  # fleet degraded never turned on
    assert offline_events == []
    assert online_events == []  # first verdicts, not transitions
    assert "back online" not in caplog.text  # issue 10 #5


async def test_back_online_is_logged_only_after_being_offline(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="custom_components.heartbeat_iot")
    birth(hass, "plug", retain=True)
    heartbeat(hass, "plug", 1, 100)
    await hass.async_block_till_done()
    assert "back online" not in caplog.text
    publish(hass, "plug", "status", "online", {"online": False, "reason": "shutdown"})
    await hass.async_block_till_done()
    assert "HomeSync node home1/plug is offline (shutdown)" in caplog.text
    publish(hass, "plug", "status", "online", {"online": True, "reason": "boot", "uptime": 3})
    await hass.async_block_till_done()
    assert caplog.text.count(f"HomeSync node {HOME}/plug is back online") == 1


async def test_known_node_that_never_speaks_goes_offline_after_its_timeout(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    offline_events = async_capture_events(hass, OFFLINE)
    birth(hass, "ghost", retain=True)
    await hass.async_block_till_done()
    await advance(hass, freezer, 89)
    assert connectivity(hass, "ghost") == STATE_UNKNOWN
    await advance(hass, freezer, 2)
    assert connectivity(hass, "ghost") == STATE_OFF
    assert offline_events == []  # its first verdict: there was no "online" to take back


async def test_start_after_a_long_stop_raises_no_false_alarm(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """HA down for 10 minutes: nodes that are fine are not "offline" at start."""
    for node in ("a", "b", "c"):
        heartbeat(hass, node, 1, 100)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    freezer.tick(timedelta(minutes=10))
    assert await hass.config_entries.async_setup(loaded_entry.entry_id)
    await hass.async_block_till_done()
    watch = FleetWatch(hass)
    online_events = async_capture_events(hass, ONLINE)
    offline_events = async_capture_events(hass, OFFLINE)
    assert {connectivity(hass, node) for node in ("a", "b", "c")} == {STATE_UNKNOWN}
    nodes_offline = hass.states.get(watch.offline)
    assert nodes_offline is not None
    assert nodes_offline.state == "0"
    heartbeat(hass, "a", 2, 700)
    heartbeat(hass, "b", 2, 700)
    await hass.async_block_till_done()
    assert connectivity(hass, "a") == STATE_ON
    assert online_events == []  # online before the stop, online now: nothing happened
    await advance(hass, freezer, 60)
    heartbeat(hass, "a", 3, 760)
    heartbeat(hass, "b", 3, 760)
    await advance(hass, freezer, 31)  # c: silent for 91 s since the start
    assert connectivity(hass, "c") == STATE_OFF
    assert [e.data["node_id"] for e in offline_events] == ["c"]  # automations last heard "on"
    assert set(watch.values[watch.offline]) <= {"0", "1"}


# ---------------------------------------------------------------- issue 16 #8


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_forged_will_contradicted_at_once_is_recorded_and_never_flaps(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    online_events = async_capture_events(hass, ONLINE)
    heartbeat(hass, "plug", 1, 100)
    await hass.async_block_till_done()
    for minute in range(1, 6):  # a forged will a minute, the node answers within a second
        await advance(hass, freezer, 59)
        publish(hass, "plug", "status", "online", {"online": False, "reason": "shutdown"})
        await hass.async_block_till_done()
        await advance(hass, freezer, 0.5)
        heartbeat(hass, "plug", 1 + minute, 100 + 60 * minute)
        await hass.async_block_till_done()
    flapping = hass.states.get(_eid(hass, "binary_sensor", f"{HOME}_plug_flapping"))
    assert flapping is not None
    assert flapping.state == STATE_OFF  # five forgeries used to flag it and mute its alerts
    assert [e.data["reason"] for e in online_events] == ["will_contradicted"] * 5
    assert "contradicted by a live message" in caplog.text
    assert caplog.text.count("contradicted by a live message") == 1  # rate-limited
    state = hass.states.get(_eid(hass, "binary_sensor", f"{HOME}_plug_connectivity"))
    assert state is not None
    assert (state.state, state.attributes["reason"]) == (STATE_ON, "will_contradicted")


# ---------------------------------------------------------------- issue 16 #9


async def test_whole_fleet_quiet_at_once_is_not_declared_offline(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stall (flood, busy loop, broker shedding our messages) is not 20 nodes dying."""
    caplog.set_level(logging.INFO, logger="custom_components.heartbeat_iot")
    offline_events = async_capture_events(hass, OFFLINE)
    nodes = [f"n{i:02d}" for i in range(20)]
    for node in nodes:
        heartbeat(hass, node, 1, 100)
    await hass.async_block_till_done()
    await advance(hass, freezer, 130)  # nothing arrives for 130 s (timeout 90 s)
    assert offline_events == []
    assert {connectivity(hass, node) for node in nodes} == {STATE_ON}
    assert "Stopped hearing 20 of 20 HomeSync nodes" in caplog.text
    for node in nodes:  # delivery resumes
        heartbeat(hass, node, 2, 230)
    await advance(hass, freezer, 2)
    assert "are heard again" in caplog.text
    assert offline_events == []


async def test_a_real_mass_outage_is_reported_with_its_own_reason(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    offline_events = async_capture_events(hass, OFFLINE)
    nodes = [f"n{i:02d}" for i in range(20)]
    for node in nodes:
        heartbeat(hass, node, 1, 100)
    await hass.async_block_till_done()
    await advance(hass, freezer, 91)  # held for one more timeout...
    assert offline_events == []
    await advance(hass, freezer, 91)  # ...then reported
    assert len(offline_events) == 20
    assert {e.data["reason"] for e in offline_events} == {"mass_silence"}
    assert {connectivity(hass, node) for node in nodes} == {STATE_OFF}


# ---------------------------------------------------------------- issue 14: mass expiry


async def test_mass_expiry_is_written_in_slices(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """120 nodes expiring together: at most SLICE of them change per loop iteration."""
    monkeypatch.setattr(availability_module, "SLICE", 25)
    data: Any = loaded_entry.runtime_data
    tracker = data.availability.tracker
    # Slicing, not the correlated rule, is under test: every node here goes silent at once.
    monkeypatch.setattr(tracker, "_is_mass", lambda late, online: False)
    offline_events = async_capture_events(hass, OFFLINE)
    nodes = [f"n{i:03d}" for i in range(120)]
    for node in nodes:
        heartbeat(hass, node, 1, 100)
    await hass.async_block_till_done()

    sizes: list[int] = []
    original = tracker.tick

    def counting_tick(limit: int | None = None) -> Any:
        out = original(limit)
        sizes.append(len(out.changed))
        return out

    monkeypatch.setattr(tracker, "tick", counting_tick)
    await advance(hass, freezer, 91)
    assert len(offline_events) == 120
    assert max(sizes) <= 25
    assert sum(sizes) == 120
    assert {connectivity(hass, node) for node in nodes} == {STATE_OFF}
