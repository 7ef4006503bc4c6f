"""The floor's entities: what a device's entity costs Home Assistant, and nothing more.

``FloorSensor`` is also bench_entity_cost's floor (it imports it from here), so the two
benchmarks' floors are the same class.
"""

from __future__ import annotations

from homeassistant.components.sensor import SensorEntity
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import CONF_KINDS, floor_device
from .kinds import add_kinds

# What a node has enabled by default (tests/test_entity_footprint.py).
FLOOR_PER_NODE = 10


class FloorSensor(SensorEntity):
    """Home Assistant's minimum for an entity on a device: unique id, device, name, value."""

    _attr_has_entity_name = True
    _attr_should_poll = False
    _attr_native_value = 1.5

    def __init__(self, node: int, index: int, device: DeviceInfo) -> None:
        """Value `index` of device `node`."""
        self._attr_unique_id = f"floor_{node}_{index}"
        self._attr_name = f"Value {index}"
        self._attr_device_info = device


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """``entry.data["devices"]`` devices with FLOOR_PER_NODE sensors each, added at once (or,
    with ``kinds``, the five readings of the kinds floor)."""
    if entry.data.get(CONF_KINDS):
        add_kinds(Platform.SENSOR, entry, async_add_entities)
        return
    count: int = entry.data["devices"]
    devices = [floor_device(n) for n in range(count)]
    async_add_entities(
        [FloorSensor(n, k, devices[n]) for n in range(count) for k in range(FLOOR_PER_NODE)]
    )
