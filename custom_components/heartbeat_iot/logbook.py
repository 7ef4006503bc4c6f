"""Logbook entries that say why: our bus events described in words.

Without this the logbook shows only "Availability detected an event". Each event's data says
which node and why (docs/architecture.md, events); the message is built from that alone, so an
entry recorded months ago reads the same today. Logbook messages are not translatable in Home
Assistant, so they are English, like core's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from homeassistant.components.logbook.const import LOGBOOK_ENTRY_MESSAGE, LOGBOOK_ENTRY_NAME
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN, EVENT_COMMAND_COMPLETED, EVENT_COMMAND_FAILED

# Why a node went offline, came back or rebooted, by the reason its event carries.
_OFFLINE: Final = {
    "unexpected_disconnect": "went offline: its connection dropped (last will)",
    "shutdown": "went offline: it shut down",
    "not_seen": "is offline: not heard from since it became known",
    "mass_silence": "went offline: most of the home went silent at once and stayed silent",
}
_ONLINE: Final = {
    "heartbeat": "is back online: heartbeat received",
    "boot": "is back online: it booted",
    "reconnect": "is back online: it reconnected",
    "will_contradicted": (
        "is online: its offline message was contradicted within 2 s (a reconnect race or a "
        "forged will)"
    ),
}
_REBOOTED: Final = {
    "seq_reset": "rebooted (heartbeat count restarted)",
    "uptime_reset": "rebooted (uptime reset)",
    "boot": "rebooted (it announced a boot)",
}
_COMMAND_FAILED: Final = {
    "timeout": "did not confirm",
    "error": "refused",
    "expired": "arrived too late (expired)",
}


def _offline(data: Mapping[str, Any]) -> str:
    reason = str(data.get("reason", ""))
    if reason == "timeout":
        timeout = data.get("timeout")
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            return f"went offline: no heartbeat for {timeout:g} s"
        return "went offline: no heartbeat within its timeout"
    return _OFFLINE.get(reason, f"went offline ({reason})" if reason else "went offline")


def _online(data: Mapping[str, Any]) -> str:
    return _ONLINE.get(str(data.get("reason", "")), "is back online")


def _rebooted(data: Mapping[str, Any]) -> str:
    return _REBOOTED.get(str(data.get("reason", "")), "rebooted")


def _flapping(_data: Mapping[str, Any]) -> str:
    return "started flapping between online and offline (its events are muted while it flaps)"


def _command(data: Mapping[str, Any]) -> str:
    return " ".join(str(data[key]) for key in ("command", "action") if data.get(key))


def _command_failed(data: Mapping[str, Any]) -> str:
    reason = str(data.get("reason", ""))
    what = _COMMAND_FAILED.get(reason, "failed")
    attempts = data.get("attempts")
    text = f"command {_command(data)} failed: the node {what}"
    if reason == "timeout" and isinstance(attempts, int) and attempts > 0:
        text = f"command {_command(data)} failed after {attempts} attempts: no confirmation"
    elif reason not in _COMMAND_FAILED and reason:
        text = f"command {_command(data)} failed ({reason})"
    if error := data.get("error"):
        text += f": {error}"
    return text


def _command_completed(data: Mapping[str, Any]) -> str:
    return f"command {_command(data)} from the offline queue was confirmed"


DESCRIBE: Final[dict[str, Callable[[Mapping[str, Any]], str]]] = {
    f"{DOMAIN}_node_offline": _offline,
    f"{DOMAIN}_node_online": _online,
    f"{DOMAIN}_node_rebooted": _rebooted,
    f"{DOMAIN}_node_flapping": _flapping,
    EVENT_COMMAND_FAILED: _command_failed,
    EVENT_COMMAND_COMPLETED: _command_completed,
}


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, str]]], None],
) -> None:
    """Describe every event the integration fires."""

    @callback
    def describe(event: Event) -> dict[str, str]:
        data = event.data
        return {
            LOGBOOK_ENTRY_NAME: _node_name(hass, data),
            LOGBOOK_ENTRY_MESSAGE: DESCRIBE[str(event.event_type)](data),
        }

    for event_type in DESCRIBE:
        async_describe_event(DOMAIN, event_type, describe)


def _node_name(hass: HomeAssistant, data: Mapping[str, Any]) -> str:
    """The device's name as the user sees it (renamed or not), else the node id."""
    device_id = data.get("device_id")
    if isinstance(device_id, str) and (device := dr.async_get(hass).async_get(device_id)):
        return device.name_by_user or device.name or str(data.get("node_id"))
    return f"HomeSync node {data.get('node_id')}"
