"""TCP_NODELAY on Home Assistant's real MQTT client socket, against a real mosquitto.

The unit tests (tests/test_tcp_nodelay.py) use the harness's mocked paho client; this one
proves the feature detection finds the socket of Home Assistant 2025.4's real client, and that
a reconnect (broker restarted on the same port) gets the option again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import socket
from typing import Any

from homeassistant.components import mqtt
import homeassistant.components.mqtt.client as mqtt_client
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import CONF_HOME_ID, DEFAULT_OPTIONS, DOMAIN

from .inprocess import ha_mqtt_socket, running_mosquitto, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(socket_enabled: None, tmp_path: Path) -> Iterator[Any]:
    """A real mosquitto on a free loopback port."""
    with running_mosquitto(tmp_path) as server:
        yield server


def nodelay(hass: HomeAssistant) -> bool | None:
    sock = ha_mqtt_socket(hass)
    if sock is None or sock.fileno() < 0:
        return None
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_real_client_socket_gets_tcp_nodelay_and_keeps_it_across_reconnects(
    hass: HomeAssistant, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt_client, "RECONNECT_INTERVAL_SECONDS", 0.2)
    mqtt_entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={"broker": "127.0.0.1", "port": broker.port},
        version=1,
        minor_version=2,
    )
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="HomeSync e2e",
        data={CONF_HOME_ID: "e2e"},
        options=dict(DEFAULT_OPTIONS),
        unique_id="e2e",
    )
    config_yaml = Path(hass.config.path("configuration.yaml"))
    await hass.async_add_executor_job(config_yaml.write_text, "")
    try:
        mqtt_entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
        await wait_until(lambda: mqtt.is_connected(hass), 10, "HA's MQTT client connected")
        assert nodelay(hass) is False  # Home Assistant on its own leaves Nagle on

        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        assert nodelay(hass) is True
        first = ha_mqtt_socket(hass)

        await hass.async_add_executor_job(broker.stop)
        await wait_until(lambda: not mqtt.is_connected(hass), 10, "HA noticed the broker left")
        await hass.async_add_executor_job(broker.start)
        await wait_until(lambda: mqtt.is_connected(hass), 15, "HA's MQTT client reconnected")
        await hass.async_block_till_done()
        assert ha_mqtt_socket(hass) is not first  # a new connection...
        assert nodelay(hass) is True  # ...with the option set again

        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        assert nodelay(hass) is False  # left as we found it
    finally:
        for config_entry in (entry, mqtt_entry):
            if config_entry.state is ConfigEntryState.LOADED:
                await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()
