"""TCP_NODELAY on Home Assistant's MQTT connection (README "Your broker", docs/architecture.md).

A confirmed command is a few small packets each way. Without TCP_NODELAY, Nagle's algorithm
holds a small write back until the previous one is acknowledged, and the receiver delays that
ACK by up to ~40 ms: a command sent shortly after Home Assistant's previous write (a burst, a
retry, a scene switching several relays) waits for it. Home Assistant's MQTT client (the mqtt
integration's paho client) does not set the option; the broker and the firmware do.

The socket belongs to that client, not to us: the only way to it is the mqtt integration's
private ``MQTT._mqttc`` attribute (paho's ``Client.socket()`` is public). So every step is
feature-detected, anything unexpected is logged once (per Home Assistant run) and skipped, and
setup never fails because of it. The option is re-applied after every (re)connect of HA's MQTT
link (a reconnect makes a new socket), shared by all config entries that want it, turned off
again (on the current socket) when the last one unloads, and can be turned off in the options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import logging
import socket
from typing import Any
import weakref

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant, callback
from homeassistant.util.hass_dict import HassKey

_LOGGER = logging.getLogger(__name__)

# What diagnostics show.
STATUS_ON = "on"
STATUS_OFF = "off (option)"
STATUS_ALREADY = "on (already set by Home Assistant)"
STATUS_WAITING = "waiting for the MQTT connection"


class _Unsupported(Exception):
    """Home Assistant's MQTT client does not look as expected: skip, log once."""


@dataclass(slots=True)
class _NodelayState:
    """Shared by all entries of one Home Assistant instance."""

    users: set[str] = field(default_factory=set)
    unsub: Callable[[], None] | None = None
    # The socket we switched on (to switch it off again), None when we changed nothing.
    changed: weakref.ref[socket.socket] | None = None
    warned: bool = False
    status: str = STATUS_WAITING


_DATA: HassKey[_NodelayState] = HassKey("heartbeat_iot_tcp_nodelay")


def _client_socket(hass: HomeAssistant) -> Any:
    """The socket of HA's MQTT client (None while not connected); _Unsupported if not found."""
    mqtt_data = hass.data.get(mqtt.DOMAIN)  # DATA_MQTT is HassKey("mqtt")
    client = getattr(mqtt_data, "client", None)
    if client is None:
        raise _Unsupported("no MQTT client in hass.data")
    paho = getattr(client, "_mqttc", None)
    get_socket = getattr(paho, "socket", None)
    if not callable(get_socket):
        raise _Unsupported("the MQTT client has no paho client with socket()")
    sock = get_socket()
    if sock is not None and not hasattr(sock, "setsockopt") and hasattr(sock, "_socket"):
        sock = sock._socket  # paho's websocket wrapper (Home Assistant unwraps it the same way)
    return sock


def _tcp(sock: Any) -> socket.socket | None:
    """The socket if it is a TCP socket we can set options on."""
    if not isinstance(sock, socket.socket):
        return None  # a test double, or a transport we do not know
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None  # e.g. paho's "unix" transport: Nagle does not apply
    return sock


@callback
def _apply(hass: HomeAssistant, state: _NodelayState) -> None:
    """Switch TCP_NODELAY on for the current connection, if there is one. Never raises."""
    try:
        raw = _client_socket(hass)
        if raw is None:
            state.status = STATUS_WAITING
            return
        sock = _tcp(raw)
        if sock is None:
            state.status = f"not applicable ({type(raw).__name__})"
            _LOGGER.debug("MQTT connection is not a TCP socket (%r): TCP_NODELAY not set", raw)
            return
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            state.status = STATUS_ALREADY
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except _Unsupported as err:
        _unsupported(state, str(err))
        return
    except Exception as err:  # code we do not own: never fail because of it
        _unsupported(state, f"{type(err).__name__}: {err}")
        return
    state.changed = weakref.ref(sock)
    state.status = STATUS_ON
    _LOGGER.debug("TCP_NODELAY set on Home Assistant's MQTT connection (fd %s)", sock.fileno())


def _unsupported(state: _NodelayState, reason: str) -> None:
    state.status = f"unsupported ({reason})"
    if not state.warned:
        state.warned = True
        _LOGGER.warning(
            "Could not set TCP_NODELAY on Home Assistant's MQTT connection (%s); commands "
            "still work but may take ~40 ms longer to confirm. Turn the option off to "
            "silence this",
            reason,
        )


@callback
def _restore(state: _NodelayState) -> None:
    """Switch the option off again on the socket we switched on (if it is still open)."""
    sock = state.changed() if state.changed is not None else None
    state.changed = None
    if sock is None or sock.fileno() < 0:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    except OSError as err:
        _LOGGER.debug("Could not clear TCP_NODELAY: %s", err)


@callback
def async_enable_tcp_nodelay(hass: HomeAssistant, entry_id: str) -> Callable[[], None]:
    """Keep TCP_NODELAY on HA's MQTT connection while this entry is loaded; returns release."""
    state = hass.data.get(_DATA)
    if state is None:
        state = hass.data[_DATA] = _NodelayState()
    state.users.add(entry_id)
    if state.unsub is None:

        @callback
        def on_connection(connected: bool) -> None:
            if connected:
                _apply(hass, state)
            else:
                state.changed = None  # that socket is gone; a reconnect makes a new one
                state.status = STATUS_WAITING

        state.unsub = mqtt.async_subscribe_connection_status(hass, on_connection)
    if state.changed is None:
        _apply(hass, state)

    @callback
    def release() -> None:
        state.users.discard(entry_id)
        if state.users:
            return
        if state.unsub is not None:
            state.unsub()
            state.unsub = None
        _restore(state)
        state.status = STATUS_OFF

    return release


@callback
def tcp_nodelay_status(hass: HomeAssistant) -> str:
    """What diagnostics report: on / off (option) / waiting / unsupported (why)."""
    state = hass.data.get(_DATA)
    return STATUS_OFF if state is None or not state.users else state.status
