"""tcp_nodelay.py's guards, one by one, on a stand-in for Home Assistant's MQTT client.

tests/test_tcp_nodelay.py covers the integration path (setup, reconnect, unload, options);
these are the cases the mocked client never produces: no client, paho's websocket wrapper, no
socket yet, the option already set, a client that raises, and a socket that refuses the reset.
"""

from __future__ import annotations

from collections.abc import Iterator
import logging
import socket
from types import SimpleNamespace
from typing import Any
import weakref

from homeassistant.components import mqtt
import pytest

from custom_components.heartbeat_iot import tcp_nodelay
from custom_components.heartbeat_iot.tcp_nodelay import (
    STATUS_ALREADY,
    STATUS_ON,
    STATUS_WAITING,
    _apply,
    _NodelayState,
    _restore,
)


def fake_hass(get_socket: Any) -> Any:
    """Just what tcp_nodelay reads: hass.data["mqtt"].client._mqttc.socket()."""
    paho = SimpleNamespace(socket=get_socket)
    return SimpleNamespace(data={mqtt.DOMAIN: SimpleNamespace(client=SimpleNamespace(_mqttc=paho))})


@pytest.fixture
def tcp(socket_enabled: None) -> Iterator[socket.socket]:
    """An (unconnected) TCP socket: the option can be read and set on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        yield sock
    finally:
        sock.close()


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_no_mqtt_client_is_unsupported_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    state = _NodelayState()
    hass: Any = SimpleNamespace(data={})
    _apply(hass, state)
    _apply(hass, state)
    assert state.status == "unsupported (no MQTT client in hass.data)"
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == tcp_nodelay.__name__
    ]
    assert len(warnings) == 1
    assert "Could not set TCP_NODELAY" in warnings[0].getMessage()


def test_not_connected_yet_waits() -> None:
    state = _NodelayState()
    _apply(fake_hass(lambda: None), state)
    assert state.status == STATUS_WAITING
    assert state.changed is None


def test_websocket_wrapper_is_unwrapped(tcp: socket.socket) -> None:
    state = _NodelayState()
    wrapper = SimpleNamespace(_socket=tcp)  # paho's websocket transport: no setsockopt
    _apply(fake_hass(lambda: wrapper), state)
    assert state.status == STATUS_ON
    assert nodelay(tcp)


def test_already_set_is_left_to_its_owner(tcp: socket.socket) -> None:
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    state = _NodelayState()
    _apply(fake_hass(lambda: tcp), state)
    assert state.status == STATUS_ALREADY
    assert state.changed is None  # not ours: unload will not clear it
    assert nodelay(tcp)


def test_a_client_that_raises_never_fails_setup(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("paho changed")

    state = _NodelayState()
    _apply(fake_hass(broken), state)
    assert state.status == "unsupported (RuntimeError: paho changed)"
    assert "RuntimeError: paho changed" in caplog.text


class _RefusingSocket(socket.socket):
    """A TCP socket whose option can no longer be changed (e.g. the peer reset it)."""

    def setsockopt(self, *args: Any) -> None:
        raise OSError("connection reset")


def test_restore_on_a_socket_that_refuses_only_logs(
    socket_enabled: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, tcp_nodelay.__name__)
    sock = _RefusingSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        state = _NodelayState(changed=weakref.ref(sock))
        _restore(state)
        assert state.changed is None
        assert "Could not clear TCP_NODELAY: connection reset" in caplog.text
    finally:
        sock.close()
