"""The offline queue (device shadow): queued intents, delivery on return, TTL, restarts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant, ServiceResponse
from homeassistant.exceptions import ServiceValidationError
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.const import (
    DOMAIN,
    EVENT_COMMAND_COMPLETED,
    EVENT_COMMAND_FAILED,
)

from .command_helpers import (
    NODE,
    advance,
    device_id,
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


async def send(hass: HomeAssistant, **data: Any) -> ServiceResponse:
    """send_command with queue: true unless the test says otherwise."""
    return await send_command(hass, **{"queue": True, **data})


@pytest.fixture
async def offline(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> MockConfigEntry:
    """The node was seen (relay off), then dropped off the network."""
    relay_status(hass, "off")
    go_online(hass)
    await hass.async_block_till_done()
    go_offline(hass)
    await hass.async_block_till_done()
    return loaded_entry


async def restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Unload (the hub writes its Store) and set up again from what was stored."""
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def test_queued_command_sent_once_when_node_returns(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    completed = async_capture_events(hass, EVENT_COMMAND_COMPLETED)
    response = await send(hass, command="relay", action="on")
    assert response is not None
    assert response.pop("expires_at") == (dt_util.utcnow() + timedelta(hours=1)).isoformat()
    assert response == {
        "request_id": None,
        "status": "queued",
        "result": None,
        "error": None,
        "attempts": 0,
        "latency_ms": None,
    }
    assert sent(mqtt_mock) == []

    go_online(hass, seq=2)
    await settle()
    [payload] = sent(mqtt_mock)
    assert payload["action"] == "on"
    relay_status(hass, "on", retain=False)
    respond(hass, payload["request_id"], result="on")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert state(hass) == STATE_ON
    [event] = completed
    assert event.data["device_id"] == device_id(hass)
    assert event.data["node_id"] == NODE
    assert event.data["command"] == "relay"
    assert event.data["action"] == "on"
    assert event.data["request_id"] == payload["request_id"]
    assert event.data["status"] == "success"
    assert event.data["source"] == "queue"

    # Later messages and another return do not send it again.
    go_offline(hass)
    await hass.async_block_till_done()
    go_online(hass, seq=3)
    await hass.async_block_till_done()
    assert len(sent(mqtt_mock)) == 1


async def test_last_intent_per_command_wins(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any
) -> None:
    await send(hass, command="relay", action="on")
    await send(hass, command="relay", action="off")
    await send(hass, command="led", action="blink")
    go_online(hass, seq=2)
    await settle()
    assert [p["action"] for p in sent(mqtt_mock)] == ["off"]
    assert [p["action"] for p in sent(mqtt_mock, "led")] == ["blink"]
    respond(hass, sent(mqtt_mock)[0]["request_id"], result="off")
    respond(hass, sent(mqtt_mock, "led")[0]["request_id"], result="blink")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert state(hass) == STATE_OFF
    assert state(hass, "led") == STATE_ON


async def test_expired_intent_fails_and_is_never_sent(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on")  # default TTL: 1 h
    await advance(hass, freezer, 3599, step=600)
    assert failed == []
    await advance(hass, freezer, 2, step=1)
    [event] = failed
    assert event.data["reason"] == "expired"
    assert event.data["request_id"] is None
    assert event.data["source"] == "queue"
    assert event.data["device_id"] == device_id(hass)
    assert event.data["action"] == "on"
    go_online(hass, seq=2)
    await settle()
    assert sent(mqtt_mock) == []


async def test_queue_ttl_per_call(
    hass: HomeAssistant, offline: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="led", action="off", queue_ttl=60)
    await send(hass, command="relay", action="off", queue_ttl=120)
    await advance(hass, freezer, 61, step=10)
    assert [e.data["command"] for e in failed] == ["led"]
    await advance(hass, freezer, 60, step=10)
    assert [e.data["command"] for e in failed] == ["led", "relay"]


async def test_queue_survives_restart(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any
) -> None:
    completed = async_capture_events(hass, EVENT_COMMAND_COMPLETED)
    await send(hass, command="relay", action="on")
    await restart(hass, offline)
    assert sent(mqtt_mock) == []
    go_online(hass, seq=2)
    await settle()
    [payload] = sent(mqtt_mock)
    respond(hass, payload["request_id"], result="on")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert state(hass) == STATE_ON
    assert [e.data["request_id"] for e in completed] == [payload["request_id"]]


async def test_unload_leaves_no_expiry_timer(
    hass: HomeAssistant, offline: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on", queue_ttl=60)
    assert await hass.config_entries.async_unload(offline.entry_id)
    await hass.async_block_till_done()
    await advance(hass, freezer, 120, step=10)
    assert failed == []  # unloaded: the intent waits in storage, nothing fires


async def test_intent_expired_during_downtime_fails_after_restart(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on", queue_ttl=60)
    assert await hass.config_entries.async_unload(offline.entry_id)
    await hass.async_block_till_done()
    freezer.tick(120)
    assert await hass.config_entries.async_setup(offline.entry_id)
    await advance(hass, freezer, 0.1)
    assert [e.data["reason"] for e in failed] == ["expired"]
    go_online(hass, seq=2)
    await settle()
    assert sent(mqtt_mock) == []


async def test_delivery_cut_by_restart_is_sent_again(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Unloaded while delivering: the intent is stored again and sent on the next message.

    After the restart the node is still online (recent last seen): no transition happens,
    so its next live message is what sends the queue.
    """
    completed = async_capture_events(hass, EVENT_COMMAND_COMPLETED)
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on")
    go_online(hass, seq=2)
    await settle()
    assert len(sent(mqtt_mock)) == 1
    await restart(hass, offline)
    assert failed == []
    assert len(sent(mqtt_mock)) == 1
    go_online(hass, seq=3)
    await settle()
    payloads = sent(mqtt_mock)
    assert len(payloads) == 2
    respond(hass, payloads[1]["request_id"], result="on")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert len(completed) == 1
    assert state(hass) == STATE_ON


async def test_queued_delivery_without_answer_fails(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on")
    go_online(hass, seq=2)
    await settle()
    await advance(hass, freezer, 30, step=1)
    assert len(sent(mqtt_mock)) == 4
    [event] = failed
    assert event.data["reason"] == "timeout"
    assert event.data["source"] == "queue"
    assert event.data["attempts"] == 4


async def test_online_node_with_queue_is_sent_now(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    task = start(send(hass, command="relay", action="on"))
    await settle()
    [payload] = sent(mqtt_mock)
    respond(hass, payload["request_id"], result="on")
    response = await task
    assert response is not None
    assert response["status"] == "success"


async def test_toggle_cannot_be_queued(hass: HomeAssistant, offline: MockConfigEntry) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await send(hass, command="relay", action="toggle")
    assert err.value.translation_key == "toggle_not_queueable"


async def test_diagnostics_show_queue_and_pending(
    hass: HomeAssistant,
    offline: MockConfigEntry,
    mqtt_mock: Any,
    hass_client: ClientSessionGenerator,
) -> None:
    assert await async_setup_component(hass, "diagnostics", {})
    await send(hass, command="relay", action="on")
    await send(hass, command="config", action="set", params={"config": {"heartbeat_interval": 10}})
    diagnostics: Any = await get_diagnostics_for_config_entry(hass, hass_client, offline)
    queue = diagnostics["control"]["queue"]
    assert [(i["node_id"], i["command"], i["action"]) for i in queue] == [
        (NODE, "relay", "on"),
        (NODE, "config", "set"),
    ]
    assert queue[1]["params"] == {"config": {"heartbeat_interval": 10}}
    assert dt_util.parse_datetime(queue[0]["expires_at"]) is not None
    assert diagnostics["control"]["pending"] == []

    go_online(hass, seq=2)
    await settle()
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, offline)
    assert diagnostics["control"]["queue"] == []
    pending = diagnostics["control"]["pending"]
    assert sorted(p["command"] for p in pending) == ["config", "relay"]
    assert sorted(i["command"] for i in diagnostics["control"]["delivering"]) == [
        "config",
        "relay",
    ]
    for command in ("relay", "config"):
        respond(hass, sent(mqtt_mock, command)[0]["request_id"], result="ok")
    await hass.async_block_till_done(wait_background_tasks=True)


async def test_removing_the_node_drops_its_queue(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await send(hass, command="relay", action="on")
    offline.runtime_data.async_forget_node(NODE)
    await advance(hass, freezer, 3601, step=600)
    assert failed == []  # gone, not expired
    go_online(hass, seq=2)
    await settle()
    assert sent(mqtt_mock) == []


async def test_forgetting_a_node_mid_delivery_reports_nothing(
    hass: HomeAssistant, offline: MockConfigEntry, mqtt_mock: Any
) -> None:
    completed = async_capture_events(hass, EVENT_COMMAND_COMPLETED)
    await send(hass, command="relay", action="on")
    go_online(hass, seq=2)
    await settle()
    [payload] = sent(mqtt_mock)
    offline.runtime_data.async_forget_node(NODE)
    respond(hass, payload["request_id"], result="on")  # rediscovers the node, nothing else
    await hass.async_block_till_done(wait_background_tasks=True)
    assert completed == []


async def test_stored_intent_the_node_cannot_take_fails(
    hass: HomeAssistant,
    setup_entry: Any,
    entry: MockConfigEntry,
    mqtt_mock: Any,
    hass_storage: dict[str, Any],
) -> None:
    """A hand-edited store: a malformed intent is skipped, an unsendable one fails."""
    now = dt_util.utcnow().timestamp()
    intent = {"node_id": NODE, "command": "relay", "queued_at": now, "expires_at": now + 60}
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "nodes": {NODE: {"firmware": None, "metrics": {}}},
            "control": [
                {**intent, "action": "on", "params": {"request_id": "forged"}},
                {**intent, "command": "led", "action": None},
            ],
        },
    }
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    await setup_entry()
    go_online(hass)
    await hass.async_block_till_done(wait_background_tasks=True)
    assert sent(mqtt_mock) == []
    [event] = failed
    assert event.data["reason"] == "error"
    assert event.data["command"] == "relay"
    assert "request_id" in event.data["error"]
