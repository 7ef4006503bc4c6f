"""Config flow: user step, MQTT discovery, options, reconfigure."""

from __future__ import annotations

from typing import Any

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import (
    CONF_COMMAND_RETRIES,
    CONF_HOME_ID,
    CONF_MAX_NODES,
    CONF_MIN_TIMEOUT,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
    DOMAIN,
)

from .conftest import publish


def _info(topic: str) -> MqttServiceInfo:
    return MqttServiceInfo(
        topic=topic,
        payload='{"online": true}',
        qos=1,
        retain=True,
        subscribed_topic="homesync/+/nodes/+/status/online",
        timestamp=0.0,
    )


async def test_user_step_creates_entry(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: " home1 "}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "HomeSync home1"
    assert result["data"] == {CONF_HOME_ID: "home1"}
    assert result["options"] == DEFAULT_OPTIONS
    assert result["result"].unique_id == "home1"


async def test_user_step_offers_homes_seen_on_broker_at_once(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    """Homes found by HA's MQTT discovery are offered without scanning the broker again."""
    MockConfigEntry(domain=DOMAIN, data={CONF_HOME_ID: "done"}, unique_id="done").add_to_hass(hass)
    for home in ("garage", "attic", "done"):
        publish(hass, "n1", "status", "online", {"online": True}, retain=True, home=home)
    publish(hass, "n1", "telemetry", "power", {"value": 1}, home="nothome")
    await hass.async_block_till_done(wait_background_tasks=True)
    subscriptions = mqtt_mock.async_subscribe.call_count

    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )

    assert result["type"] is FlowResultType.FORM
    assert mqtt_mock.async_subscribe.call_count == subscriptions  # no scan, no wait
    # Already configured homes are not offered; only birth messages count.
    assert result["description_placeholders"] == {"seen": "attic, garage"}
    selector = result["data_schema"].schema[CONF_HOME_ID]
    assert selector.config["options"] == ["attic", "garage"]
    assert selector.config["custom_value"] is True

    # Picking a discovered home adds it and closes its discovery card.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "attic"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    left = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["unique_id"] for flow in left] == ["garage"]


async def test_user_step_invalid_then_fixed(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "home/1"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_HOME_ID: "invalid_home_id"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "home-1"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_step_already_configured(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "home1"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_user_step_without_mqtt(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "mqtt_not_configured"


async def test_mqtt_discovery_confirm(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": config_entries.SOURCE_MQTT},
        data=_info("homesync/garage/nodes/n1/status/online"),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "confirm"
    assert result["description_placeholders"] == {"home_id": "garage"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_HOME_ID: "garage"}


async def test_mqtt_discovery_from_a_real_birth_message(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    """The manifest's mqtt topic makes HA start our flow when a node announces itself."""
    publish(hass, "n1", "status", "online", {"online": True}, retain=True, home="cellar")
    await hass.async_block_till_done(wait_background_tasks=True)
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == 1
    assert flows[0]["context"]["source"] == config_entries.SOURCE_MQTT
    assert flows[0]["context"]["title_placeholders"] == {"home_id": "cellar"}


async def test_mqtt_discovery_already_configured(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> None:
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": config_entries.SOURCE_MQTT},
        data=_info("homesync/home1/nodes/n7/status/online"),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_mqtt_discovery_invalid_topic(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": config_entries.SOURCE_MQTT},
        data=_info("homesync/home1/nodes/n1/status/online/extra"),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_options_flow(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    new = {
        **DEFAULT_OPTIONS,
        CONF_MAX_NODES: 10.0,
        CONF_MIN_TIMEOUT: 45.0,
        CONF_TIMEOUT_MULTIPLIER: 4.5,
        CONF_COMMAND_RETRIES: 1.0,
    }
    result = await hass.config_entries.options.async_configure(result["flow_id"], new)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    # Number selectors hand back floats; whole-number options are stored as ints.
    assert loaded_entry.options[CONF_MAX_NODES] == 10
    assert isinstance(loaded_entry.options[CONF_MAX_NODES], int)
    assert loaded_entry.options[CONF_TIMEOUT_MULTIPLIER] == 4.5
    assert loaded_entry.runtime_data.options.max_nodes == 10  # reloaded with the new options


async def test_reconfigure_changes_home(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    result = await loaded_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "bad home"}
    )
    assert result["errors"] == {CONF_HOME_ID: "invalid_home_id"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "home2"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert loaded_entry.unique_id == "home2"
    assert loaded_entry.data[CONF_HOME_ID] == "home2"
    assert loaded_entry.title == "HomeSync home2"
    assert loaded_entry.runtime_data.home_id == "home2"


async def test_reconfigure_same_home_is_allowed(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await loaded_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "home1"}
    )
    assert result["reason"] == "reconfigure_successful"


async def test_reconfigure_to_existing_home_aborts(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    MockConfigEntry(domain=DOMAIN, data={CONF_HOME_ID: "other"}, unique_id="other").add_to_hass(
        hass
    )
    result = await loaded_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOME_ID: "other"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert loaded_entry.unique_id == "home1"
