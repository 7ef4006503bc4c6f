"""Device registry identity of a home's hub device and of its nodes (one place for both).

Also where that identity changes: a reconfigured home id moves the devices and entities.
"""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo

from .const import DOMAIN, MANUFACTURER


def node_identifier(home_id: str, node_id: str) -> tuple[str, str]:
    """Device registry identifier of a node."""
    return (DOMAIN, f"{home_id}/{node_id}")


def hub_identifier(home_id: str) -> tuple[str, str]:
    """Device registry identifier of a home's hub device."""
    return (DOMAIN, home_id)


def hub_device_info(home_id: str) -> DeviceInfo:
    """Device info of the home's hub device."""
    return DeviceInfo(
        identifiers={hub_identifier(home_id)},
        name=f"HomeSync {home_id}",
        manufacturer=MANUFACTURER,
        model="Home",
        entry_type=DeviceEntryType.SERVICE,
    )


def node_device_info(home_id: str, node_id: str) -> DeviceInfo:
    """Device info of a node."""
    return DeviceInfo(
        identifiers={node_identifier(home_id, node_id)},
        name=node_id,
        manufacturer=MANUFACTURER,
        model="HomeSync node",
        via_device=hub_identifier(home_id),
    )


def node_id_for_device(home_id: str, device: dr.DeviceEntry) -> str | None:
    """The node id behind a device of this home, if it is a node device."""
    prefix = f"{home_id}/"
    for domain, ident in device.identifiers:
        if domain == DOMAIN and ident.startswith(prefix):
            return ident.removeprefix(prefix)
    return None


@callback
def async_move_home(hass: HomeAssistant, entry_id: str, old: str, new: str) -> None:
    """Re-address an entry's devices and entities from home `old` to home `new`.

    Reconfigure is for nodes re-flashed with a new home id: moving keeps their devices, names,
    entity ids, history and automations, instead of leaving the old home's devices attached
    (and undeletable) next to new ones. Nodes that never publish under the new home go offline
    by their timeout and later become stale (a repair offers to remove them).
    """
    devices = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(devices, entry_id):
        identifiers = {_moved_identifier(ident, old, new) for ident in device.identifiers}
        if identifiers == device.identifiers:
            continue
        changes: dict[str, Any] = {"new_identifiers": identifiers}
        if device.name == f"HomeSync {old}":
            changes["name"] = f"HomeSync {new}"
        devices.async_update_device(device.id, **changes)
    entities = er.async_get(hass)
    for entity in er.async_entries_for_config_entry(entities, entry_id):
        if entity.unique_id.startswith(f"{old}_"):
            new_unique_id = f"{new}_{entity.unique_id.removeprefix(f'{old}_')}"
            entities.async_update_entity(entity.entity_id, new_unique_id=new_unique_id)


def _moved_identifier(ident: tuple[str, str], old: str, new: str) -> tuple[str, str]:
    domain, value = ident
    if domain != DOMAIN:
        return ident
    if value == old:
        return (DOMAIN, new)
    if value.startswith(f"{old}/"):
        return (DOMAIN, f"{new}/{value.removeprefix(f'{old}/')}")
    return ident
