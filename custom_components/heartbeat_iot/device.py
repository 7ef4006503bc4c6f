"""Device registry identity of a home's hub device and of its nodes (one place for both)."""

from __future__ import annotations

from homeassistant.helpers import device_registry as dr
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
