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

from . import CONF_KINDS, add_floor_entities
from .kinds import KIND_BUILDERS, Builders

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


# The plain floor's one platform: FLOOR_PER_NODE sensors on each device.
PLAIN_BUILDERS: Builders = {
    Platform.SENSOR: lambda n, device: [FloorSensor(n, k, device) for k in range(FLOOR_PER_NODE)]
}


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """``entry.data["devices"]`` devices with FLOOR_PER_NODE sensors each, added at once (or,
    with ``kinds``, the five readings of the kinds floor)."""
    builders = KIND_BUILDERS if entry.data.get(CONF_KINDS) else PLAIN_BUILDERS
    add_floor_entities(builders, Platform.SENSOR, entry, async_add_entities)
