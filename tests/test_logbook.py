"""The logbook says why: our events read as sentences on the logbook page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
import logging
from pathlib import Path
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.heartbeat_iot.const import DOMAIN, EVENT_COMMAND_FAILED
from custom_components.heartbeat_iot.homesync.tracker import Availability
from custom_components.heartbeat_iot.logbook import DESCRIBE

from .conftest import HOME, publish


async def _logbook(hass: HomeAssistant, hass_ws_client: WebSocketGenerator) -> list[dict[str, Any]]:
    await async_wait_recording_done(hass)
    client = await hass_ws_client()
    await client.send_json_auto_id(
        {
            "type": "logbook/get_events",
            "start_time": (dt_util.utcnow().replace(year=2000)).isoformat(),
            "end_time": dt_util.utcnow().isoformat(),
        }
    )
    answer = await client.receive_json()
    assert answer["success"], answer
    return [entry for entry in answer["result"] if entry.get("domain") == DOMAIN]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    recorder_mock: Recorder, enable_custom_integrations: None, hass: HomeAssistant, tmp_path: Path
) -> None:
    """As conftest's, with the recorder set up before `hass` (the harness requires that order)."""
    hass.config.config_dir = str(tmp_path)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)  # the harness echoes SQL


@pytest.fixture
async def logbook_entry(
    hass: HomeAssistant,
    setup_entry: Callable[[], Awaitable[MockConfigEntry]],
) -> MockConfigEntry:
    """Recorder, logbook and the integration, with node plug-01 discovered."""
    assert await async_setup_component(hass, "logbook", {})
    entry = await setup_entry()
    publish(hass, "plug-01", "status", "heartbeat", {"seq": 1, "uptime": 10, "interval": 30})
    await hass.async_block_till_done()
    return entry


def _device_id(hass: HomeAssistant) -> str:
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug-01")})
    assert device is not None
    return device.id


async def test_offline_and_reboot_read_as_sentences(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, logbook_entry: MockConfigEntry
) -> None:
    """A will and a reboot, fired by the integration itself, say what happened."""
    will = {"online": False, "reason": "unexpected_disconnect"}
    publish(hass, "plug-01", "status", "online", will)
    # A will counts after its 1 s hold (tests/test_will_hold.py); the recorder needs real time
    # here (a frozen clock keeps it from recording), so wait for the real timer.
    availability = logbook_entry.runtime_data.availability
    for _ in range(50):
        await asyncio.sleep(0.1)
        if availability.state("plug-01") is Availability.OFFLINE:
            break
    publish(hass, "plug-01", "status", "heartbeat", {"seq": 0, "uptime": 2, "interval": 30})
    await hass.async_block_till_done()

    entries = await _logbook(hass, hass_ws_client)
    messages = [(e["name"], e["message"]) for e in entries]
    assert ("plug-01", "went offline: its connection dropped (last will)") in messages
    assert ("plug-01", "rebooted (heartbeat count restarted)") in messages
    assert all(e.get("context_device_id", _device_id(hass)) for e in entries)


async def test_renamed_device_and_failed_command(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, logbook_entry: MockConfigEntry
) -> None:
    """The user's name for the device is used; a failed command says how many attempts."""
    device_id = _device_id(hass)
    dr.async_get(hass).async_update_device(device_id, name_by_user="Kettle plug")
    hass.bus.async_fire(
        EVENT_COMMAND_FAILED,
        {
            "device_id": device_id,
            "home_id": HOME,
            "node_id": "plug-01",
            "command": "relay",
            "action": "on",
            "attempts": 4,
            "reason": "timeout",
            "error": None,
        },
    )
    await hass.async_block_till_done()

    entries = await _logbook(hass, hass_ws_client)
    assert {
        "name": "Kettle plug",
        "message": "command relay on failed after 4 attempts: no confirmation",
    }.items() <= next(e for e in entries if "command" in e["message"]).items()


async def test_timeout_says_how_long_the_silence_was(
    hass: HomeAssistant, logbook_entry: MockConfigEntry, freezer: FrozenDateTimeFactory
) -> None:
    """A frozen node: its offline event carries the timeout it missed (interval 30 s x 3)."""
    offline = async_capture_events(hass, f"{DOMAIN}_node_offline")
    freezer.tick(timedelta(seconds=91))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert [DESCRIBE[e.event_type](e.data) for e in offline] == [
        "went offline: no heartbeat for 90 s"
    ]


@pytest.mark.parametrize(
    ("event", "data", "message"),
    [
        (
            "node_offline",
            {"reason": "timeout", "timeout": 90},
            "went offline: no heartbeat for 90 s",
        ),
        ("node_offline", {"reason": "timeout"}, "went offline: no heartbeat within its timeout"),
        ("node_offline", {"reason": "shutdown"}, "went offline: it shut down"),
        ("node_offline", {"reason": "something_new"}, "went offline (something_new)"),
        ("node_online", {"reason": "heartbeat"}, "is back online: heartbeat received"),
        (
            "node_online",
            {"reason": "will_contradicted"},
            "is online: its offline message was contradicted within 2 s",
        ),
        (
            "node_offline",
            {"reason": "mass_silence"},
            "went offline: most of the home went silent at once",
        ),
        ("node_rebooted", {"reason": "uptime_reset"}, "rebooted (uptime reset)"),
        ("node_flapping", {"reason": "flapping"}, "started flapping between online and offline"),
        (
            "command_failed",
            {"command": "led", "action": "blink", "reason": "error", "error": "busy"},
            "command led blink failed: the node refused: busy",
        ),
        (
            "command_completed",
            {"command": "relay", "action": "off"},
            "command relay off from the offline queue was confirmed",
        ),
    ],
)
def test_messages(event: str, data: dict[str, Any], message: str) -> None:
    """Every event we fire has a sentence, including reasons added after this was written."""
    assert DESCRIBE[f"{DOMAIN}_{event}"](data).startswith(message)
