"""Shared fixtures for the integration tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
import json
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_mqtt_message,
)
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

# Import our package before the `hass` fixture mounts the harness's own testing config,
# whose `custom_components` package would otherwise shadow ours ("Integration not found").
import custom_components  # noqa: F401
from custom_components.heartbeat_iot.const import CONF_HOME_ID, DEFAULT_OPTIONS, DOMAIN

HOME = "home1"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    enable_custom_integrations: None, hass: HomeAssistant, tmp_path: Path
) -> None:
    """Load integrations from ./custom_components; give each test its own config folder.

    Setup installs the blueprint into the config folder, which by default is a folder
    inside the installed test harness.
    """
    hass.config.config_dir = str(tmp_path)


@pytest.fixture(autouse=True)
def no_repo_bundles(tmp_path: Path) -> Iterator[None]:
    """Firmware bundles a developer built in firmware/dist must not change what tests see."""
    with patch("custom_components.heartbeat_iot.firmware.REPO_DIST", tmp_path / "no-dist"):
        yield


@pytest.fixture
def expected_lingering_timers() -> bool:
    """The mocked MQTT client leaves its periodic misc timer scheduled; that is not ours."""
    return True


def topic(node: str, category: str, name: str, home: str = HOME) -> str:
    """A HomeSync topic."""
    return f"homesync/{home}/nodes/{node}/{category}/{name}"


def publish(
    hass: HomeAssistant,
    node: str,
    category: str,
    name: str,
    payload: dict[str, Any] | str | bytes,
    *,
    retain: bool = False,
    home: str = HOME,
) -> None:
    """Deliver a message as the broker would (JSON-encodes dicts)."""
    data = json.dumps(payload) if isinstance(payload, dict) else payload
    async_fire_mqtt_message(hass, topic(node, category, name, home), data, qos=1, retain=retain)


@pytest.fixture
def entry() -> MockConfigEntry:
    """A config entry for home1 with default options."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"HomeSync {HOME}",
        data={CONF_HOME_ID: HOME},
        options=dict(DEFAULT_OPTIONS),
        unique_id=HOME,
    )


@pytest.fixture
async def setup_entry(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry
) -> Callable[[], Awaitable[MockConfigEntry]]:
    """Return a coroutine that adds and sets up the entry."""

    async def _setup() -> MockConfigEntry:
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        return entry

    return _setup


@pytest.fixture
async def loaded_entry(
    setup_entry: Callable[[], Awaitable[MockConfigEntry]],
) -> MockConfigEntry:
    """The entry, set up."""
    return await setup_entry()


@pytest.fixture
async def online(hass: HomeAssistant, loaded_entry: MockConfigEntry) -> MockConfigEntry:
    """The entry loaded and the test node online, its relay reported off."""
    from .command_helpers import go_online, relay_status, state  # they import this module

    relay_status(hass, "off")
    go_online(hass)
    await hass.async_block_till_done()
    assert state(hass) == "off"
    return loaded_entry


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Every entity enabled, also those off by default (HA core's fixture of the same name)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots with Home Assistant's serializer (ids masked), in tests/snapshots/ (as HA core).

    The harness defines the same fixture as a plugin, where syrupy's own one wins; a conftest
    fixture takes precedence over both.
    """
    return snapshot.use_extension(HomeAssistantSnapshotExtension)
