"""A second floor: the kinds of entity a node has enabled, each with nothing of ours behind it.

``FloorSensor`` (sensor.py) says what ten entities cost Home Assistant; a node's ten are not ten
plain sensors: a connectivity binary sensor, two switches, five readings with device class,
unit and state class, an event entity and a firmware update entity (the last two restore their
state through Home Assistant's restore cache). Each class here carries the same Home
Assistant-facing description as ours (device class, unit, state class, entity category,
supported features, event types) and a constant value: no listener, no node data, no code of
ours. The descriptions are copied from ours (update.py, switch.py, binary_sensor.py, event.py,
the readings' metric specs) on purpose rather than imported: bench_system loads this component in
a hass of its own, which must not import a line of our integration. What ours costs above this
floor is our code; what this floor costs above FloorSensor is
the entity kinds users rely on (benchmarks/NOTES.md). bench_entity_cost measures it in Home
Assistant's test harness; bench_system in a real hass, as the entry this component makes with
``kinds: true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.components.binary_sensor import BinarySensorDeviceClass, BinarySensorEntity
from homeassistant.components.event import EventEntity
from homeassistant.components.sensor import SensorDeviceClass, SensorEntity, SensorStateClass
from homeassistant.components.switch import SwitchDeviceClass, SwitchEntity
from homeassistant.components.update import UpdateDeviceClass, UpdateEntity, UpdateEntityFeature
from homeassistant.const import (
    EntityCategory,
    Platform,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfEnergy,
    UnitOfPower,
    UnitOfTemperature,
)
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity

# What makes one device's entities of a platform: (device number, its DeviceInfo) -> entities.
Builders = dict[Platform, Callable[[int, DeviceInfo], list[Entity]]]

# A node's readings in the fleets both benchmarks run: key, device class, unit, state class.
READINGS = (
    ("power", SensorDeviceClass.POWER, UnitOfPower.WATT, SensorStateClass.MEASUREMENT),
    (
        "voltage",
        SensorDeviceClass.VOLTAGE,
        UnitOfElectricPotential.VOLT,
        SensorStateClass.MEASUREMENT,
    ),
    (
        "current",
        SensorDeviceClass.CURRENT,
        UnitOfElectricCurrent.AMPERE,
        SensorStateClass.MEASUREMENT,
    ),
    (
        "energy",
        SensorDeviceClass.ENERGY,
        UnitOfEnergy.KILO_WATT_HOUR,
        SensorStateClass.TOTAL_INCREASING,
    ),
    (
        "temperature",
        SensorDeviceClass.TEMPERATURE,
        UnitOfTemperature.CELSIUS,
        SensorStateClass.MEASUREMENT,
    ),
)


class _Kind(Entity):
    """Unique id, device, name: what every entity of this floor has."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, node: int, key: str, device: DeviceInfo) -> None:
        self._attr_unique_id = f"kinds_{node}_{key}"
        self._attr_name = key.capitalize()
        self._attr_device_info = device


class KindConnectivity(_Kind, BinarySensorEntity):
    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY
    _attr_is_on = True


class _KindSwitch(_Kind, SwitchEntity):
    _attr_is_on = False

    def turn_on(self, **kwargs: Any) -> None:
        """Never called by the benchmarks."""

    def turn_off(self, **kwargs: Any) -> None:
        """Never called by the benchmarks."""


class KindRelay(_KindSwitch):
    _attr_device_class = SwitchDeviceClass.OUTLET


class KindLed(_KindSwitch):
    _attr_entity_category = EntityCategory.CONFIG


class KindReading(_Kind, SensorEntity):
    _attr_native_value = 1.5

    def __init__(
        self,
        node: int,
        reading: tuple[str, SensorDeviceClass, str, SensorStateClass],
        device: DeviceInfo,
    ) -> None:
        key, self._attr_device_class, self._attr_native_unit_of_measurement, state_class = reading
        self._attr_state_class = state_class
        super().__init__(node, key, device)


class KindEvent(_Kind, EventEntity):
    _attr_event_types = ["online", "offline", "rebooted", "flapping"]


class KindUpdate(_Kind, UpdateEntity):
    _attr_device_class = UpdateDeviceClass.FIRMWARE
    _attr_entity_category = EntityCategory.CONFIG
    _attr_supported_features = (
        UpdateEntityFeature.INSTALL
        | UpdateEntityFeature.PROGRESS
        | UpdateEntityFeature.RELEASE_NOTES
    )
    _attr_installed_version = "1.0.0"
    _attr_latest_version = "1.0.0"


# One device's entities of each platform: the ten a node has enabled (the platforms the kinds
# floor's entry forwards, __init__.py).
KIND_BUILDERS: Builders = {
    Platform.BINARY_SENSOR: lambda n, device: [KindConnectivity(n, "connectivity", device)],
    Platform.EVENT: lambda n, device: [KindEvent(n, "availability", device)],
    Platform.SENSOR: lambda n, device: [KindReading(n, reading, device) for reading in READINGS],
    Platform.SWITCH: lambda n, device: [KindRelay(n, "relay", device), KindLed(n, "led", device)],
    Platform.UPDATE: lambda n, device: [KindUpdate(n, "firmware", device)],
}
