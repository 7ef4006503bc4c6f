"""Hostile input through Home Assistant's MQTT dispatch (issue 16 items 1-6).

What a user would notice: tracebacks in the log, devices nobody owns, thousands of sensors, a
command reported as "did not confirm" when the node answered, a node taken offline by a
command it could not read.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er, issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.const import (
    CONF_MAX_METRICS,
    DEFAULT_MAX_METRICS,
    DOMAIN,
    EVENT_COMMAND_FAILED,
    ISSUE_MAX_METRICS,
)
from custom_components.heartbeat_iot.homesync.protocol import MAX_COMMAND_BYTES

from .command_helpers import (
    NODE,
    go_offline,
    go_online,
    respond,
    send_command,
    sent,
    settle,
    start,
)
from .conftest import HOME, publish

LOGGER = "custom_components.heartbeat_iot"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records at ERROR or above (tracebacks, 'Error adding entity', ...)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def device(hass: HomeAssistant, node: str) -> dr.DeviceEntry | None:
    return dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/{node}")})


def sensor_state(hass: HomeAssistant, node: str, key: str) -> str | None:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{HOME}_{node}_{key}")
    if entity_id is None:
        return None
    state = hass.states.get(entity_id)
    return None if state is None else state.state


# --- item 1: readings that overflow when converted --------------------------------------------


async def test_reading_that_overflows_when_converted_is_skipped(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    publish(hass, "plug", "telemetry", "power", {"value": 1e308, "unit": "kW"})
    publish(hass, "plug", "telemetry", "energy", {"value": 1e307, "unit": "MWh"})
    await hass.async_block_till_done()
    assert errors(caplog) == []
    assert device(hass, "plug") is None  # nothing valid arrived: no device
    assert "Ignoring message on" in caplog.text

    publish(hass, "plug", "telemetry", "power", {"value": 1.5, "unit": "kW"})
    await hass.async_block_till_done()
    assert sensor_state(hass, "plug", "power") == "1500.0"
    publish(hass, "plug", "telemetry", "power", {"value": 1e308, "unit": "kW"})
    await hass.async_block_till_done()
    assert sensor_state(hass, "plug", "power") == "1500.0"
    assert errors(caplog) == []


async def test_bad_unit_creates_no_device(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug", "telemetry", "power", {"value": 1, "unit": "furlong"})
    await hass.async_block_till_done()
    assert device(hass, "plug") is None


# --- item 2: absurd but well-formed numbers ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("heartbeat", {"seq": 1, "uptime": 63_000_000_000, "interval": 30}),
        ("online", {"online": True, "reason": "boot", "uptime": 63_000_000_000}),
        ("heartbeat", {"seq": 2**64, "uptime": 5}),
    ],
)
async def test_absurd_numbers_are_refused_and_diagnostics_still_download(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    hass_client: ClientSessionGenerator,
    caplog: pytest.LogCaptureFixture,
    name: str,
    payload: dict[str, Any],
) -> None:
    go_online(hass)  # a known node first: the absurd message must not break its entities
    await hass.async_block_till_done()
    publish(hass, NODE, "status", name, payload)
    publish(hass, "fresh", "status", name, payload)
    await hass.async_block_till_done()
    assert errors(caplog) == []
    assert device(hass, "fresh") is None
    assert "Ignoring message on" in caplog.text

    assert await async_setup_component(hass, "diagnostics", {})
    data: Any = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    assert data["nodes"][NODE]["availability"]["state"] == "online"


@pytest.mark.usefixtures("entity_registry_enabled_by_default")  # off by default (issue 14)
async def test_absurd_stored_timestamps_do_not_break_anything(
    hass: HomeAssistant,
    setup_entry: Any,
    entry: MockConfigEntry,
    hass_storage: dict[str, Any],
    hass_client: ClientSessionGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store written before the bounds existed (last boot before year 1) still loads."""
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "nodes": {NODE: {"firmware": "1.0", "metrics": {}}},
            "tracker": {
                NODE: {
                    "state": "offline",
                    "reason": "timeout",
                    "last_seen": 1.0e9,
                    "last_boot": -6.3e10,
                    "uptime": 63_000_000_000,
                }
            },
        },
    }
    await setup_entry()
    assert errors(caplog) == []
    assert sensor_state(hass, NODE, "last_boot") in ("unknown", "unavailable")
    assert await async_setup_component(hass, "diagnostics", {})
    data: Any = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert data["nodes"][NODE]["availability"]["last_boot"] is None


# --- item 3: names nobody defined -------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "name"),
    [("status", "foo"), ("status", "reboot"), ("response", "bar"), ("response", "foo")],
)
async def test_unknown_status_or_response_name_is_neither_device_nor_proof_of_life(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, category: str, name: str
) -> None:
    publish(hass, "ghost", category, name, {})
    await hass.async_block_till_done()
    assert device(hass, "ghost") is None
    assert "ghost" not in loaded_entry.runtime_data.nodes

    go_online(hass)
    await hass.async_block_till_done()
    go_offline(hass)
    await hass.async_block_till_done()
    publish(hass, NODE, category, name, {"seq": 1})
    await hass.async_block_till_done()
    assert not loaded_entry.runtime_data.availability.node_online(NODE)


# --- item 4: metrics per node are capped ------------------------------------------------------


async def test_metric_cap_per_node_with_repair_issue(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert DEFAULT_MAX_METRICS == 32
    for i in range(40):
        publish(hass, NODE, "telemetry", f"m{i}", {"value": i})
    await hass.async_block_till_done()

    node = loaded_entry.runtime_data.nodes[NODE]
    assert len(node.metrics) == 32
    assert sensor_state(hass, NODE, "m31") == "31.0"
    assert sensor_state(hass, NODE, "m32") is None
    issue = issue_registry.async_get_issue(DOMAIN, f"{ISSUE_MAX_METRICS}_{loaded_entry.entry_id}")
    assert issue is not None
    assert issue.translation_key == ISSUE_MAX_METRICS
    assert issue.translation_placeholders == {
        "home_id": HOME,
        "node_id": NODE,
        "max_metrics": "32",
    }
    cap_lines = [r for r in caplog.records if "metrics" in r.getMessage() and r.levelno >= 30]
    assert len(cap_lines) == 1  # rate-limited

    # Known metrics keep updating; the node is alive.
    publish(hass, NODE, "telemetry", "m0", {"value": 100})
    await hass.async_block_till_done()
    assert sensor_state(hass, NODE, "m0") == "100.0"
    assert loaded_entry.runtime_data.availability.node_online(NODE)


async def test_metric_cap_is_an_option(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options={**entry.options, CONF_MAX_METRICS: 2})
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    for key in ("power", "voltage", "current"):
        publish(hass, NODE, "telemetry", key, {"value": 1})
    await hass.async_block_till_done()
    assert sorted(entry.runtime_data.nodes[NODE].metrics) == ["power", "voltage"]


# --- item 5: an answer the schema rejects -----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        ({"result": "x" * 300}, "at most 256 characters for dictionary value @ data['result']"),
        ({"result": {"state": "on"}}, "data['result']"),
        ({"status": "maybe"}, "data['status']"),
    ],
)
async def test_invalid_answer_fails_at_once(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    mqtt_mock: Any,
    caplog: pytest.LogCaptureFixture,
    extra: dict[str, Any],
    what: str,
) -> None:
    failed = async_capture_events(hass, EVENT_COMMAND_FAILED)
    go_online(hass)
    await hass.async_block_till_done()
    task = start(send_command(hass, command="relay", action="on"))
    await settle()
    [payload] = sent(mqtt_mock)
    answer = {"request_id": payload["request_id"], "status": "success", **extra}
    publish(hass, NODE, "response", "command", answer)
    with pytest.raises(HomeAssistantError) as err:
        await task

    assert err.value.translation_key == "command_invalid_answer"
    assert len(sent(mqtt_mock)) == 1  # no retries: the node did answer
    assert what in (err.value.translation_placeholders or {})["error"]
    assert any(
        "invalid response" in r.getMessage() and what in r.getMessage() for r in caplog.records
    )
    await hass.async_block_till_done()
    assert [e.data["reason"] for e in failed] == ["invalid"]


# --- item 6: commands a node cannot take ------------------------------------------------------


async def test_command_larger_than_a_node_takes_is_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    params = {"config": {"heartbeat_interval": 5, "note": "x" * 16_000}}
    with pytest.raises(ServiceValidationError) as err:
        await send_command(hass, command="config", action="set", params=params)
    assert err.value.translation_key == "command_too_large"
    placeholders = err.value.translation_placeholders or {}
    assert placeholders["limit"] == str(MAX_COMMAND_BYTES)
    assert int(placeholders["size"]) > 16_000
    assert sent(mqtt_mock, "config") == []

    # Queued for an offline node: refused the same way, nothing stored.
    go_offline(hass)
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError) as err:
        await send_command(hass, command="config", action="set", params=params, queue=True)
    assert err.value.translation_key == "command_too_large"
    assert loaded_entry.runtime_data.control.diagnostics()["queue"] == []


@pytest.mark.parametrize("ttl", [0, -5, "soon", 10**6, True])
async def test_invalid_ttl_is_refused(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any, ttl: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError) as err:
        await send_command(hass, command="relay", action="on", params={"ttl": ttl})
    assert err.value.translation_key == "invalid_ttl"
    assert sent(mqtt_mock) == []


async def test_valid_ttl_is_sent(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, mqtt_mock: Any
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    task = start(send_command(hass, command="relay", action="on", params={"ttl": 120}))
    await settle()
    [payload] = sent(mqtt_mock)
    assert payload["ttl"] == 120
    respond(hass, payload["request_id"], result="on")
    assert (await task or {})["status"] == "success"
    assert len(json.dumps(payload)) < MAX_COMMAND_BYTES
