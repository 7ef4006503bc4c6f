"""Device triggers and the shipped blueprint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components import automation
from homeassistant.components.blueprint import models as bp_models
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_get_device_automations,
    async_mock_service,
)

from custom_components.heartbeat_iot.const import DOMAIN

from .command_helpers import go_offline, go_online
from .conftest import HOME, publish

ROOT = Path(__file__).parent.parent
REPO_BLUEPRINT = ROOT / "blueprints" / "automation" / DOMAIN / "node_offline_notify.yaml"
SHIPPED_BLUEPRINT = ROOT / "custom_components" / DOMAIN / "blueprints" / "node_offline_notify.yaml"


def node_device(hass: HomeAssistant, node: str) -> dr.DeviceEntry:
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/{node}")})
    assert device is not None
    return device


async def test_device_triggers_listed(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> None:
    go_online(hass, "plug", seq=0)
    await hass.async_block_till_done()
    triggers = await async_get_device_automations(
        hass, DeviceAutomationType.TRIGGER, node_device(hass, "plug").id
    )
    ours = sorted(t["type"] for t in triggers if t["domain"] == DOMAIN)
    assert ours == [
        "command_failed",
        "node_flapping",
        "node_offline",
        "node_online",
        "node_rebooted",
    ]
    hub = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, HOME)})
    assert hub is not None
    hub_triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, hub.id)
    assert [t for t in hub_triggers if t["domain"] == DOMAIN] == []


@pytest.mark.parametrize(
    ("trigger_type", "cause"),
    [
        ("node_offline", lambda hass: go_offline(hass, "plug")),
        (
            "node_rebooted",
            lambda hass: publish(
                hass, "plug", "status", "heartbeat", {"seq": 0, "uptime": 1, "interval": 30}
            ),
        ),
    ],
)
async def test_device_trigger_fires_automation(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, trigger_type: str, cause: Any
) -> None:
    go_online(hass, "plug", seq=7)
    go_online(hass, "other", seq=7)
    await hass.async_block_till_done()
    calls = async_mock_service(hass, "test", "automation")
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "trigger": {
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": node_device(hass, "plug").id,
                    "type": trigger_type,
                },
                "action": {
                    "service": "test.automation",
                    "data_template": {"reason": "{{ trigger.event.data.reason }}"},
                },
            }
        },
    )
    go_offline(hass, "other")  # another node's event does not trigger this device's automation
    await hass.async_block_till_done()
    assert calls == []
    cause(hass)
    await hass.async_block_till_done()
    assert len(calls) == 1
    assert calls[0].data["reason"] in {"shutdown", "seq_reset"}


def _load_blueprint() -> bp_models.Blueprint:
    return bp_models.Blueprint(
        yaml_util.load_yaml_dict(SHIPPED_BLUEPRINT),
        expected_domain="automation",
        schema=automation.config.AUTOMATION_BLUEPRINT_SCHEMA,
    )


def test_blueprint_copies_are_identical() -> None:
    """HACS installs only custom_components/; the repo copy is for the import link."""
    assert REPO_BLUEPRINT.read_bytes() == SHIPPED_BLUEPRINT.read_bytes()


def test_blueprint_is_valid() -> None:
    blueprint = _load_blueprint()
    assert blueprint.validate() is None
    inputs = bp_models.BlueprintInputs(
        blueprint,
        {
            "use_blueprint": {
                "path": f"{DOMAIN}/node_offline_notify.yaml",
                "input": {"connectivity_entity": ["binary_sensor.plug_connectivity"]},
            }
        },
    )
    inputs.validate()
    config = inputs.async_substitute()
    assert config["triggers"][0]["for"] == {"minutes": 5}


async def test_blueprint_notifies_after_n_minutes(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    go_online(hass, "plug", seq=0)
    await hass.async_block_till_done()
    entity_id = er.async_get(hass).async_get_entity_id(
        "binary_sensor", DOMAIN, f"{HOME}_plug_connectivity"
    )
    notifications = async_mock_service(hass, "notify", "phone")
    with patch(
        "homeassistant.components.blueprint.models.DomainBlueprints._load_blueprint",
        return_value=_load_blueprint(),
    ):
        assert await async_setup_component(
            hass,
            automation.DOMAIN,
            {
                automation.DOMAIN: {
                    "use_blueprint": {
                        "path": f"{DOMAIN}/node_offline_notify.yaml",
                        "input": {
                            "connectivity_entity": [entity_id],
                            "offline_minutes": 3,
                            "notify_action": "notify.phone",
                        },
                    }
                }
            },
        )
    go_offline(hass, "plug")
    await hass.async_block_till_done()
    for minutes in (1, 2):
        freezer.tick(timedelta(minutes=1))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()
        assert notifications == [], minutes
    freezer.tick(timedelta(minutes=1, seconds=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert len(notifications) == 1
    message = notifications[0].data["message"]
    assert "plug Connectivity has been offline for 3 minutes" in message
    assert "shutdown" in message


async def test_blueprint_installed_when_missing_never_overwritten(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry, tmp_path: Path
) -> None:
    hass.config.config_dir = str(tmp_path)
    target = tmp_path / "blueprints" / "automation" / DOMAIN / "node_offline_notify.yaml"
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert target.read_bytes() == SHIPPED_BLUEPRINT.read_bytes()

    target.write_text("# my own edits\n")
    from custom_components.heartbeat_iot.blueprint import async_install_blueprint

    await async_install_blueprint(hass)
    assert target.read_text() == "# my own edits\n"


async def test_blueprint_install_failure_is_a_warning_not_a_failed_setup(
    hass: HomeAssistant,
    mqtt_mock: Any,
    entry: MockConfigEntry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A config folder we cannot write to (here: a file where the folder should be)."""
    hass.config.config_dir = str(tmp_path)
    (tmp_path / "blueprints").write_text("not a folder\n")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert "Could not install the blueprint" in caplog.text
    assert (tmp_path / "blueprints").read_text() == "not a folder\n"
