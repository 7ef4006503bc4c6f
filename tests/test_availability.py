"""Heartbeat availability in Home Assistant (issue 4 acceptance, docs/architecture.md §5)."""

from __future__ import annotations

from datetime import timedelta
import logging
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.heartbeat_iot.const import (
    CONF_HEARTBEAT_INTERVAL,
    CONF_MIN_TIMEOUT,
    CONF_OFFLINE_RATIO,
    DEFAULT_OPTIONS,
    DOMAIN,
)

from .command_helpers import advance
from .conftest import HOME, publish

ONLINE = f"{DOMAIN}_node_online"
OFFLINE = f"{DOMAIN}_node_offline"
REBOOTED = f"{DOMAIN}_node_rebooted"
FLAPPING = f"{DOMAIN}_node_flapping"


def eid(hass: HomeAssistant, node: str, key: str, platform: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{HOME}_{node}_{key}")
    assert entity_id is not None, f"no {platform} for {node}/{key}"
    return entity_id


def state(hass: HomeAssistant, node: str, key: str, platform: str) -> Any:
    return hass.states.get(eid(hass, node, key, platform))


def connectivity(hass: HomeAssistant, node: str) -> str:
    return str(state(hass, node, "connectivity", "binary_sensor").state)


def heartbeat(hass: HomeAssistant, node: str, seq: int, uptime: int, interval: int = 30) -> None:
    publish(hass, node, "status", "heartbeat", {"seq": seq, "uptime": uptime, "interval": interval})


def by_node(events: list[Event], node: str) -> list[Event]:
    return [event for event in events if event.data["node_id"] == node]


async def test_frozen_node_goes_offline_at_timeout(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """Heartbeats and telemetry stop, no LWT (TCP still open): offline at 90 s, once."""
    offline = async_capture_events(hass, OFFLINE)
    for seq in range(3):
        heartbeat(hass, "plug", seq, 100 + 30 * seq)
        publish(hass, "plug", "telemetry", "power", {"value": 50 + seq})
        await hass.async_block_till_done()
        if seq < 2:
            await advance(hass, freezer, 30)
    assert connectivity(hass, "plug") == STATE_ON
    assert float(state(hass, "plug", "power", "sensor").state) == 52

    await advance(hass, freezer, 89)
    assert connectivity(hass, "plug") == STATE_ON
    assert offline == []
    await advance(hass, freezer, 1.5)  # 90.5 s of silence: within timeout + 1 s
    assert connectivity(hass, "plug") == STATE_OFF
    attributes = state(hass, "plug", "connectivity", "binary_sensor").attributes
    assert attributes["reason"] == "timeout"
    assert attributes["timeout"] == 90
    assert len(offline) == 1
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug")})
    assert device is not None
    assert offline[0].data == {
        "device_id": device.id,
        "home_id": HOME,
        "node_id": "plug",
        "reason": "timeout",
        "timeout": 90.0,  # for the logbook's "no heartbeat for 90 s"
    }
    # Readings of an offline node are unavailable; the connectivity sensor shows "off".
    assert state(hass, "plug", "power", "sensor").state == STATE_UNAVAILABLE
    await advance(hass, freezer, 600)
    assert len(offline) == 1  # fired once, not per tick


async def test_announced_interval_sets_timeout(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "slow", 0, 5, interval=60)  # 3 x 60 = 180 s
    await hass.async_block_till_done()
    await advance(hass, freezer, 179)
    assert connectivity(hass, "slow") == STATE_ON
    await advance(hass, freezer, 2)
    assert connectivity(hass, "slow") == STATE_OFF


async def test_lwt_counts_after_its_hold_and_heartbeat_recovers(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    online = async_capture_events(hass, ONLINE)
    offline = async_capture_events(hass, OFFLINE)
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_ON
    publish(hass, "plug", "status", "online", {"online": False, "reason": "unexpected_disconnect"})
    await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_ON  # held 1 s: not a broker shutting down?
    await advance(hass, freezer, 1.5)  # the hold, then the timer's 0.5 s grid
    assert connectivity(hass, "plug") == STATE_OFF
    assert [e.data["reason"] for e in offline] == ["unexpected_disconnect"]
    await advance(hass, freezer, 5)
    heartbeat(hass, "plug", 1, 15)
    await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_ON
    # Discovery sets a baseline without an event; the recovery is an event.
    assert [e.data["reason"] for e in online] == ["heartbeat"]


async def test_graceful_shutdown_is_offline_with_reason(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    heartbeat(hass, "plug", 0, 10)
    publish(hass, "plug", "status", "online", {"online": False, "reason": "shutdown"}, retain=True)
    await hass.async_block_till_done()
    assert connectivity(hass, "plug") == STATE_OFF
    assert state(hass, "plug", "connectivity", "binary_sensor").attributes["reason"] == "shutdown"


async def _restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def test_restart_long_dead_node_with_retained_birth_is_offline(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "dead", 0, 10)
    heartbeat(hass, "alive", 0, 10)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    freezer.tick(timedelta(hours=2))  # Home Assistant was down for two hours
    assert await hass.config_entries.async_setup(loaded_entry.entry_id)
    await hass.async_block_till_done()
    # The broker replays the retained birth of the node that died meanwhile.
    publish(hass, "dead", "status", "online", {"online": True, "reason": "boot"}, retain=True)
    await hass.async_block_till_done()
    # Not heard since the start: unknown, not offline (issue 10 #1); "alive" speaks.
    assert connectivity(hass, "dead") == STATE_UNKNOWN
    heartbeat(hass, "alive", 1, 7300)
    await hass.async_block_till_done()
    assert connectivity(hass, "alive") == STATE_ON
    # Silent for its timeout counted from the start: offline now.
    await advance(hass, freezer, 91)
    assert connectivity(hass, "dead") == STATE_OFF


async def test_restart_recent_node_is_online_without_a_message(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    await advance(hass, freezer, 20)
    await _restart(hass, loaded_entry)
    assert connectivity(hass, "plug") == STATE_ON  # no "unknown until the next message"
    # ...and it keeps only the remaining deadline: 90 s after the last heartbeat.
    await advance(hass, freezer, 69)
    assert connectivity(hass, "plug") == STATE_ON
    await advance(hass, freezer, 2)
    assert connectivity(hass, "plug") == STATE_OFF


async def test_broker_outage_declares_nobody_offline(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    offline = async_capture_events(hass, OFFLINE)
    heartbeat(hass, "quiet", 0, 10)
    heartbeat(hass, "chatty", 0, 10)
    await hass.async_block_till_done()
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    await hass.async_block_till_done()
    # We cannot know: every node entity is unavailable, none is "offline".
    assert connectivity(hass, "quiet") == STATE_UNAVAILABLE
    for _ in range(10):
        await advance(hass, freezer, 30)  # five minutes without the broker
    assert offline == []
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert connectivity(hass, "quiet") == STATE_ON
    # Grace: silence counts again only from the reconnect.
    await advance(hass, freezer, 60)
    heartbeat(hass, "chatty", 1, 370)
    await advance(hass, freezer, 29)
    assert connectivity(hass, "quiet") == STATE_ON
    assert offline == []
    await advance(hass, freezer, 2)
    assert connectivity(hass, "quiet") == STATE_OFF
    assert connectivity(hass, "chatty") == STATE_ON
    assert [e.data["node_id"] for e in offline] == ["quiet"]


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_flapping_node_is_damped(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    online = async_capture_events(hass, ONLINE)
    offline = async_capture_events(hass, OFFLINE)
    flapping = async_capture_events(hass, FLAPPING)
    for seq in range(8):  # toggling every 20 s
        heartbeat(hass, "flappy", seq, 10 + seq)
        await advance(hass, freezer, 20)
        publish(
            hass, "flappy", "status", "online", {"online": False, "reason": "unexpected_disconnect"}
        )
        await advance(hass, freezer, 2)  # the will counts after its 1 s hold
        await advance(hass, freezer, 18)
    assert len(flapping) == 1
    assert state(hass, "flappy", "flapping", "binary_sensor").state == STATE_ON
    # 16 transitions; the 5th flags flapping (its own event is replaced by the flapping
    # event) and from then on online/offline events are muted.
    assert [e.data["reason"] for e in offline] == ["unexpected_disconnect"] * 2
    assert [e.data["reason"] for e in online] == ["heartbeat"] * 2
    assert connectivity(hass, "flappy") == STATE_OFF  # the state itself still tells the truth

    # Stable again after 2 x timeout without a transition. The last event automations saw
    # was "online", but the node is offline: they get one catch-up event.
    # The last transition is the last will, which counted 2 s after it arrived (its hold): 179 s
    # since then is the loop's last 18 s plus 161.
    await advance(hass, freezer, 161)
    assert state(hass, "flappy", "flapping", "binary_sensor").state == STATE_ON
    await advance(hass, freezer, 2)
    assert state(hass, "flappy", "flapping", "binary_sensor").state == STATE_OFF
    assert [e.data["reason"] for e in offline][-1] == "flapping_ended"
    assert len(flapping) == 1
    # Unmuted: the next transition is an event again.
    heartbeat(hass, "flappy", 0, 1)
    await hass.async_block_till_done()
    assert online[-1].data["reason"] == "heartbeat"
    assert len(online) == 3


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_reboot_is_detected_from_seq_reset(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    rebooted = async_capture_events(hass, REBOOTED)
    for seq in range(3):
        heartbeat(hass, "plug", 40 + seq, 1000 + 30 * seq)
        await advance(hass, freezer, 30)
    heartbeat(hass, "plug", 0, 3)
    await hass.async_block_till_done()
    assert [e.data["reason"] for e in rebooted] == ["seq_reset"]
    assert state(hass, "plug", "reboots", "sensor").state == "1"
    last_boot = dt_util.parse_datetime(state(hass, "plug", "last_boot", "sensor").state)
    assert last_boot is not None
    assert abs((dt_util.utcnow() - last_boot).total_seconds() - 3) < 1
    assert connectivity(hass, "plug") == STATE_ON


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_link_quality_from_seq_gaps(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    for seq in (0, 1, 2, 4, 5, 7, 8, 9):  # 3 and 6 lost: 8 of 10 received
        heartbeat(hass, "plug", seq, 10 + 30 * seq)
        await advance(hass, freezer, 30)
    assert float(state(hass, "plug", "link_quality", "sensor").state) == pytest.approx(80)


@pytest.mark.parametrize(("offline_nodes", "degraded"), [(10, STATE_OFF), (11, STATE_ON)])
async def test_fleet_degraded_threshold(
    hass: HomeAssistant, mqtt_mock: Any, offline_nodes: int, degraded: str
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"home_id": HOME},
        options={**DEFAULT_OPTIONS, CONF_OFFLINE_RATIO: 10.0},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    for index in range(100):
        heartbeat(hass, f"n{index}", 0, 10)
    for index in range(offline_nodes):
        publish(hass, f"n{index}", "status", "online", {"online": False, "reason": "shutdown"})
    await hass.async_block_till_done()

    def hub_state(key: str, platform: str = "sensor") -> str:
        entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{HOME}_{key}")
        assert entity_id is not None
        return str(hass.states.get(entity_id).state)  # type: ignore[union-attr]

    assert hub_state("nodes_online") == str(100 - offline_nodes)
    assert hub_state("nodes_offline") == str(offline_nodes)
    assert float(hub_state("offline_ratio")) == offline_nodes
    assert hub_state("fleet_degraded", "binary_sensor") == degraded


async def test_birth_of_a_new_node_does_not_reload_the_home(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """A birth message also runs MQTT discovery; it must leave the running home alone."""
    hub = loaded_entry.runtime_data.hub
    heartbeat(hass, "old", 0, 10)
    publish(hass, "new", "status", "online", {"online": True, "reason": "boot"}, retain=True)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert loaded_entry.runtime_data.hub is hub
    # Our discovery starts no flow for a configured home (discovery.py), so the entry is not
    # even rewritten with discovery keys any more (issue 16 #9).
    assert not loaded_entry.discovery_keys
    assert connectivity(hass, "old") == STATE_ON


async def test_event_entity_records_node_events(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "plug", 0, 10)
    publish(hass, "plug", "status", "online", {"online": False, "reason": "unexpected_disconnect"})
    await advance(hass, freezer, 2)  # the will counts after its 1 s hold
    event_state = state(hass, "plug", "availability", "event")
    assert event_state.attributes["event_type"] == "offline"
    assert event_state.attributes["reason"] == "unexpected_disconnect"
    assert event_state.attributes["event_types"] == ["online", "offline", "rebooted", "flapping"]


async def test_set_node_timeout_service(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug")})
    assert device is not None
    await hass.services.async_call(
        DOMAIN, "set_node_timeout", {"device_id": device.id, "timeout": 600}, blocking=True
    )
    assert state(hass, "plug", "connectivity", "binary_sensor").attributes["timeout"] == 600
    await advance(hass, freezer, 300)
    assert connectivity(hass, "plug") == STATE_ON
    # The override survives a restart.
    await _restart(hass, loaded_entry)
    await advance(hass, freezer, 299)
    assert connectivity(hass, "plug") == STATE_ON
    await advance(hass, freezer, 2)
    assert connectivity(hass, "plug") == STATE_OFF
    # 0 clears it.
    heartbeat(hass, "plug", 1, 700)
    await hass.async_block_till_done()
    await hass.services.async_call(
        DOMAIN, "set_node_timeout", {"device_id": device.id, "timeout": 0}, blocking=True
    )
    assert state(hass, "plug", "connectivity", "binary_sensor").attributes["timeout"] == 90


async def test_options_change_timeouts(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    hass.config_entries.async_update_entry(
        loaded_entry,
        options={**loaded_entry.options, CONF_HEARTBEAT_INTERVAL: 10, CONF_MIN_TIMEOUT: 20},
    )
    await hass.async_block_till_done()  # reloads
    publish(hass, "plug", "telemetry", "power", {"value": 1})  # no interval announced
    await hass.async_block_till_done()
    assert state(hass, "plug", "connectivity", "binary_sensor").attributes["timeout"] == 30
    await advance(hass, freezer, 31)
    assert connectivity(hass, "plug") == STATE_OFF


async def test_unavailable_and_back_logged_once(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    heartbeat(hass, "plug", 0, 10)
    await hass.async_block_till_done()
    with caplog.at_level(logging.INFO, logger="custom_components.heartbeat_iot"):
        await advance(hass, freezer, 91)
        await advance(hass, freezer, 91)
        heartbeat(hass, "plug", 1, 200)
        heartbeat(hass, "plug", 2, 201)
        await hass.async_block_till_done()
    messages = [r.getMessage() for r in caplog.records if "plug" in r.getMessage()]
    assert messages == [
        f"HomeSync node {HOME}/plug is offline (timeout)",
        f"HomeSync node {HOME}/plug is back online",
    ]


async def test_heartbeats_that_change_nothing_write_nothing(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    heartbeat(hass, "plug", 0, 10)
    heartbeat(hass, "plug", 1, 40)  # link quality known from here on
    publish(hass, "plug", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    changes: list[Event] = []

    @callback
    def record(event: Event) -> None:
        entity_id = event.data["entity_id"]
        # The home's message statistics move on their own minute timer, by design (issue 10).
        if entity_id.endswith(("_messages_per_minute", "_messages_rejected_as_invalid")):
            return
        if entity_id.startswith(("binary_sensor.", "sensor.", "event.")):
            changes.append(event)

    hass.bus.async_listen("state_changed", record)
    for seq in range(2, 7):
        await advance(hass, freezer, 30)
        heartbeat(hass, "plug", seq, 10 + 30 * seq)
        await hass.async_block_till_done()
    assert changes == []
