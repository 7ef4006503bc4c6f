"""Home Assistant in the test process against a real broker: what tests/e2e and benchmarks share.

The end-to-end tests (``tests/e2e/``) and the relay benchmark run pytest-homeassistant-custom-
component's ``hass`` against a real mosquitto (or the RabbitMQ cluster). They all need the same
steps: a broker on a free loopback port, Home Assistant's own MQTT entry connected to it, then
our entry, unloaded again at the end, and a way to wait for something without a blind sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
import socket
import time
from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import CONF_HOME_ID, DEFAULT_OPTIONS, DOMAIN
from devstack.firmware import load_test_harness


@contextmanager
def running_mosquitto(workdir: Path) -> Iterator[Any]:
    """A running ``harness.Broker`` (real mosquitto) on a free loopback port, stopped on exit.

    The harness picks a free port and then starts mosquitto on it; another process can take the
    port in between, so a broker that does not stay up is tried again on a new port.
    """
    harness = load_test_harness()
    for attempt in range(3):
        folder = workdir / f"broker{attempt}"
        folder.mkdir(parents=True)
        server = harness.Broker(str(folder))
        server.start()
        time.sleep(0.1)
        if server.proc is not None and server.proc.poll() is None:
            break
        server.stop()  # lost the race for the port
    else:
        raise RuntimeError("mosquitto did not stay up on a free port")
    try:
        yield server
    finally:
        server.stop()


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` on the event loop (real time) until truthy and return its value;
    fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def ha_mqtt_socket(hass: HomeAssistant) -> socket.socket | None:
    """The socket of Home Assistant's MQTT client (None while it has none)."""
    sock = hass.data[mqtt.DOMAIN].client._mqttc.socket()  # a test may look inside
    return sock if isinstance(sock, socket.socket) else None


@asynccontextmanager
async def homesync_on_broker(
    hass: HomeAssistant,
    port: int,
    home: str,
    *,
    options: Mapping[str, Any] | None = None,
    mqtt_data: Mapping[str, Any] | None = None,
    mqtt_options: Mapping[str, Any] | None = None,
    connect_timeout: float = 15,
) -> AsyncIterator[MockConfigEntry]:
    """Home Assistant's MQTT entry on the broker at ``port``, connected, then our entry for
    ``home`` (``options`` default to ``DEFAULT_OPTIONS``), loaded; both unloaded on exit.

    ``mqtt_data`` adds to the MQTT entry's data (credentials); ``mqtt_options`` are its options
    (``{"birth_message": {}}`` leaves out HA's own birth message).
    """
    mqtt_entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={"broker": "127.0.0.1", "port": port, **(mqtt_data or {})},
        options=dict(mqtt_options or {}),
        version=1,
        minor_version=2,
    )
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"HomeSync {home}",
        data={CONF_HOME_ID: home},
        options=dict(DEFAULT_OPTIONS if options is None else options),
        unique_id=home,
    )
    # MQTT reads configuration.yaml; the harness gives each test an empty config folder.
    config_yaml = Path(hass.config.path("configuration.yaml"))
    await hass.async_add_executor_job(config_yaml.write_text, "")
    try:
        mqtt_entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
        await wait_until(lambda: mqtt.is_connected(hass), connect_timeout, "HA's MQTT connected")
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
        yield entry
    finally:
        for config_entry in (entry, mqtt_entry):
            if config_entry.state is ConfigEntryState.LOADED:
                await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()
