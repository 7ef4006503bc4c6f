"""The heartbeat_iot.send_command action: response data, validation, failures.

See docs/architecture.md §6 and docs/commands.md.
"""

from __future__ import annotations

from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components import automation
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, selector
from homeassistant.helpers.service import async_get_all_descriptions
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_mock_service,
)
import voluptuous as vol

from custom_components.heartbeat_iot.const import DOMAIN, EVENT_COMMAND_FAILED
from custom_components.heartbeat_iot.services import SEND_COMMAND_SCHEMA

from .command_helpers import (
    advance,
    device_id,
    go_offline,
    respond,
    send_command,
    sent,
    settle,
    start,
    state,
)
from .conftest import HOME

send = send_command


async def test_response_data(hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any) -> None:
    task = start(send(hass, command="relay", action="on"))
    await settle()
    [payload] = sent(mqtt_mock)
    respond(hass, payload["request_id"], result="on")
    response = await task
    assert response is not None
    latency = response.pop("latency_ms")
    assert isinstance(latency, float)
    assert latency >= 0
    assert response == {
        "request_id": payload["request_id"],
        "status": "success",
        "result": "on",
        "error": None,
        "attempts": 1,
    }
    await hass.async_block_till_done()
    assert state(hass) == STATE_ON  # a confirmed relay command also moves the switch


async def test_without_response_returns_nothing(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    task = start(send(hass, return_response=False, command="led", action="blink"))
    await settle()
    [payload] = sent(mqtt_mock, "led")
    respond(hass, payload["request_id"], result="blink")
    assert await task is None
    await hass.async_block_till_done()
    assert state(hass, "led") == STATE_ON  # blinking counts as on


async def test_answer_on_third_attempt(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    task = start(send(hass, command="relay", action="on"))
    await settle()
    await advance(hass, freezer, 13, step=1)  # timeouts at 5 and 11 s, third publish at 13 s
    payloads = sent(mqtt_mock)
    assert len(payloads) == 3
    respond(hass, payloads[0]["request_id"], result="on")
    response = await task
    assert response is not None
    assert response["status"] == "success"
    assert response["attempts"] == 3
    assert response["latency_ms"] == pytest.approx(13000, abs=200)


async def test_timeout_and_retries_per_call(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, freezer: FrozenDateTimeFactory
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    task = start(send(hass, command="relay", action="off", timeout=2, retries=0))
    await settle()
    await advance(hass, freezer, 2, step=1)
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_timeout"
    assert len(sent(mqtt_mock)) == 1
    [event] = failed
    assert event.data["source"] == "service"
    assert event.data["attempts"] == 1


async def test_config_command(hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any) -> None:
    params = {"config": {"heartbeat_interval": 15, "telemetry_interval": 5}}
    task = start(send(hass, command="config", action="set", params=params))
    await settle()
    [payload] = sent(mqtt_mock, "config")
    assert payload["action"] == "set"
    assert payload["config"] == params["config"]
    respond(hass, payload["request_id"], result="ok", config=params["config"])
    response = await task
    assert response is not None
    assert response["result"] == "ok"


async def test_node_error_raises_and_fires_event(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    params = {"config": {"heartbeat_interval": 99999}}
    task = start(send(hass, command="config", action="set", params=params))
    await settle()
    [payload] = sent(mqtt_mock, "config")
    respond(hass, payload["request_id"], "error", error="heartbeat_interval out of range 1..3600")
    with pytest.raises(HomeAssistantError) as err:
        await task
    assert err.value.translation_key == "command_rejected"
    assert "out of range" in str(err.value)
    [event] = failed
    assert event.data["device_id"] == device_id(hass)
    assert event.data["reason"] == "error"
    assert event.data["request_id"] == payload["request_id"]


async def test_command_failed_device_trigger(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    """Any failed command fires the event behind the device trigger."""
    calls = async_mock_service(hass, "test", "automation")
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "trigger": {
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": device_id(hass),
                    "type": "command_failed",
                },
                "action": {
                    "service": "test.automation",
                    "data_template": {"error": "{{ trigger.event.data.error }}"},
                },
            }
        },
    )
    task = start(send(hass, command="led", action="on"))
    await settle()
    respond(hass, sent(mqtt_mock, "led")[0]["request_id"], "error", error="no LED fitted")
    with pytest.raises(HomeAssistantError):
        await task
    await hass.async_block_till_done()
    assert [call.data["error"] for call in calls] == ["no LED fitted"]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"command": "relay", "action": "blink"}, "invalid_action"),
        ({"command": "led", "action": "toggle"}, "invalid_action"),
        ({"command": "config", "action": "on"}, "invalid_action"),
        ({"command": "config", "action": "set"}, "config_params_required"),
        (
            {"command": "config", "action": "set", "params": {"config": {}}},
            "config_params_required",
        ),
        ({"command": "relay", "action": "on", "params": {"request_id": "x"}}, "reserved_params"),
    ],
)
async def test_validation_errors(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any, data: dict[str, Any], key: str
) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await send(hass, **data)
    assert err.value.translation_key == key
    assert str(err.value) != key  # the translation exists and renders
    assert sent(mqtt_mock) == []


async def test_bad_action_message(hass: HomeAssistant, online: MockConfigEntry) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await send(hass, command="relay", action="Blink")
    assert str(err.value) == (
        '"blink" is not an action of the relay command. Use one of: on, off, toggle'
    )


async def test_schema_errors(hass: HomeAssistant, online: MockConfigEntry) -> None:
    with pytest.raises(vol.Invalid):
        await send(hass, command="ota", action="update")
    with pytest.raises(vol.Invalid):
        await send(hass, command="relay", action="on", params="on")
    with pytest.raises(vol.Invalid):
        await send(hass, command="relay", action="on", retries=-1)


async def test_unknown_device(hass: HomeAssistant, online: MockConfigEntry) -> None:
    hub_device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, HOME)})
    assert hub_device is not None
    for device in ("not-a-device", hub_device.id):
        with pytest.raises(ServiceValidationError) as err:
            await send(hass, device_id=device, command="relay", action="on")
        assert err.value.translation_key == "unknown_device"


async def test_offline_node_without_queue(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_offline(hass)
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError) as err:
        await send(hass, command="relay", action="on")
    assert err.value.translation_key == "node_offline"
    assert str(err.value).startswith("plug is offline, so the command was not sent")
    assert sent(mqtt_mock) == []


async def test_too_many_pending(
    hass: HomeAssistant, online: MockConfigEntry, mqtt_mock: Any
) -> None:
    """16 commands in flight per node; the 17th is refused with a clear error."""
    tasks = [start(send(hass, command="led", action="on")) for _ in range(16)]
    await settle()
    assert len(sent(mqtt_mock, "led")) == 16
    with pytest.raises(HomeAssistantError) as err:
        await send(hass, command="led", action="off")
    assert err.value.translation_key == "too_many_pending"
    assert str(err.value) == (
        "plug already has 16 commands waiting for confirmation. Try again when they are done"
    )
    for payload in sent(mqtt_mock, "led"):
        respond(hass, payload["request_id"], result="on")
    for task in tasks:
        response = await task
        assert response is not None
        assert response["status"] == "success"
    assert [p["action"] for p in sent(mqtt_mock, "led")] == ["on"] * 16


async def test_action_description_matches_schema(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """services.yaml documents every field the schema takes, with valid selectors."""
    descriptions = await async_get_all_descriptions(hass)
    described = descriptions[DOMAIN]["send_command"]
    assert described["name"] == "Send command"
    assert set(described["fields"]) == {str(key) for key in SEND_COMMAND_SCHEMA.schema}
    for field in described["fields"].values():
        selector.validate_selector(field["selector"])
