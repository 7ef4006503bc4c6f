"""TCP_NODELAY on Home Assistant's MQTT connection: set while we are loaded, guarded, optional.

The harness's paho client is a MagicMock; here its ``socket()`` returns a real loopback TCP
socket, so the option is read back from the kernel. The real client on a real broker, including
a reconnect, is covered by tests/e2e/test_tcp_nodelay_real.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import logging
import socket
from typing import Any

from homeassistant.components.mqtt.const import MQTT_CONNECTION_STATE
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.dispatcher import async_dispatcher_send
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import (
    CONF_HOME_ID,
    CONF_TCP_NODELAY,
    DEFAULT_OPTIONS,
    DOMAIN,
)
from custom_components.heartbeat_iot.diagnostics import async_get_config_entry_diagnostics

from .conftest import HOME, publish

LOGGER = "custom_components.heartbeat_iot"


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.fixture
def tcp_socket_factory(socket_enabled: None) -> Iterator[Callable[[], socket.socket]]:
    """Connected loopback TCP sockets (the client end), closed at the end."""
    opened: list[socket.socket] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    opened.append(server)

    def make() -> socket.socket:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        opened.extend((client, peer))
        assert not nodelay(client)  # the kernel's default, as HA's client leaves it
        return client

    try:
        yield make
    finally:
        for sock in opened:
            sock.close()


@pytest.fixture
def ha_socket(
    mqtt_client_mock: Any, tcp_socket_factory: Callable[[], socket.socket]
) -> socket.socket:
    """The socket HA's (mocked) paho client reports: a real TCP socket."""
    sock = tcp_socket_factory()
    mqtt_client_mock.socket.return_value = sock
    return sock


def second_entry() -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title="HomeSync home2",
        data={CONF_HOME_ID: "home2"},
        options=dict(DEFAULT_OPTIONS),
        unique_id="home2",
    )


async def test_set_while_loaded_and_cleared_after_unload(
    hass: HomeAssistant, ha_socket: socket.socket, loaded_entry: MockConfigEntry
) -> None:
    assert nodelay(ha_socket)

    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert not nodelay(ha_socket)  # we leave HA's socket as we found it


async def test_applied_again_after_a_reconnect(
    hass: HomeAssistant,
    mqtt_client_mock: Any,
    ha_socket: socket.socket,
    tcp_socket_factory: Callable[[], socket.socket],
    loaded_entry: MockConfigEntry,
) -> None:
    """A reconnect makes a new socket: it gets the option as soon as the link is up."""
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, False)
    new_socket = tcp_socket_factory()
    mqtt_client_mock.socket.return_value = new_socket
    async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)
    await hass.async_block_till_done()
    assert nodelay(new_socket)


async def test_shared_by_homes_until_the_last_unloads(
    hass: HomeAssistant, ha_socket: socket.socket, loaded_entry: MockConfigEntry
) -> None:
    other = second_entry()
    other.add_to_hass(hass)
    assert await hass.config_entries.async_setup(other.entry_id)
    await hass.async_block_till_done()

    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert nodelay(ha_socket)  # home2 still wants it
    assert await hass.config_entries.async_unload(other.entry_id)
    await hass.async_block_till_done()
    assert not nodelay(ha_socket)


async def test_ha_internals_changed_logs_once_and_setup_goes_on(
    hass: HomeAssistant,
    mqtt_mock: Any,
    entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HA's MQTT client without the paho client we look for: one warning, nothing fails."""
    mqtt_mock._mqttc = object()  # a future HA that renamed or hid its paho client
    other = second_entry()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for config_entry in (entry, other):
            config_entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(config_entry.entry_id)
            await hass.async_block_till_done()
        async_dispatcher_send(hass, MQTT_CONNECTION_STATE, True)  # a reconnect
        await hass.async_block_till_done()

    warnings = [r.getMessage() for r in caplog.records if "TCP_NODELAY" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "commands still work" in warnings[0]
    assert entry.state is ConfigEntryState.LOADED
    assert other.state is ConfigEntryState.LOADED
    # ...and the integration works: a node still appears from its messages.
    publish(hass, "plug1", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    power = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{HOME}_plug1_power")
    assert power is not None
    assert float(hass.states.get(power).state) == 5


async def test_not_a_tcp_socket_is_left_alone_quietly(
    hass: HomeAssistant,
    mqtt_client_mock: Any,
    setup_entry: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """paho's unix-socket transport: Nagle does not apply, nothing to warn about."""
    unix_a, unix_b = socket.socketpair()
    mqtt_client_mock.socket.return_value = unix_a
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            entry = await setup_entry()
        assert entry.state is ConfigEntryState.LOADED
        assert not [r for r in caplog.records if "TCP_NODELAY" in r.getMessage()]
    finally:
        unix_a.close()
        unix_b.close()


async def test_option_off_leaves_the_socket_alone(
    hass: HomeAssistant, ha_socket: socket.socket, loaded_entry: MockConfigEntry
) -> None:
    """Turning the option off in the options flow clears the option on the live socket."""
    assert nodelay(ha_socket)
    result = await hass.config_entries.options.async_init(loaded_entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {**DEFAULT_OPTIONS, CONF_TCP_NODELAY: False}
    )
    await hass.async_block_till_done()
    assert loaded_entry.options[CONF_TCP_NODELAY] is False
    assert loaded_entry.state is ConfigEntryState.LOADED  # reloaded with the option off
    assert not nodelay(ha_socket)
    diagnostics = await async_get_config_entry_diagnostics(hass, loaded_entry)
    assert diagnostics["tcp_nodelay"] == "off (option)"


async def test_diagnostics_say_whether_it_is_on(
    hass: HomeAssistant, ha_socket: socket.socket, loaded_entry: MockConfigEntry
) -> None:
    diagnostics = await async_get_config_entry_diagnostics(hass, loaded_entry)
    assert diagnostics["tcp_nodelay"] == "on"
