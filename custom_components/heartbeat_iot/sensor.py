"""Telemetry and diagnostic sensors of HomeSync nodes."""

from __future__ import annotations

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import HomeSyncConfigEntry
from .entity import HomeSyncNodeEntity
from .hub import HomeSyncHub, signal_new_metric
from .protocol import METRICS, MetricSpec

# Entities only write state on push; Home Assistant need not serialise updates.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Create sensors for known metrics now and for new ones as they first report."""
    hub = entry.runtime_data.hub
    async_add_entities(
        MetricSensor(hub, node.node_id, spec)
        for node in hub.nodes.values()
        for spec in node.metrics.values()
    )

    @callback
    def add_metric(node_id: str, key: str) -> None:
        node = hub.nodes.get(node_id)
        if node is not None and key in node.metrics:
            async_add_entities([MetricSensor(hub, node_id, node.metrics[key])])

    entry.async_on_unload(
        async_dispatcher_connect(hass, signal_new_metric(entry.entry_id), add_metric)
    )


class MetricSensor(HomeSyncNodeEntity, RestoreSensor):
    """One telemetry metric of a node (or its Wi-Fi signal)."""

    def __init__(self, hub: HomeSyncHub, node_id: str, spec: MetricSpec) -> None:
        """Describe the sensor from the metric catalogue."""
        super().__init__(hub, node_id, spec.key)
        self._attr_native_unit_of_measurement = spec.unit
        if spec.device_class:
            self._attr_device_class = SensorDeviceClass(spec.device_class)
        if spec.state_class:
            self._attr_state_class = SensorStateClass(spec.state_class)
        self._attr_suggested_display_precision = spec.precision
        if spec.key in METRICS:
            self._attr_translation_key = spec.key
        else:
            self._attr_name = spec.key.replace("_", " ").capitalize()
        if spec.diagnostic:
            # Signal strength changes on every report: useful for debugging, noise otherwise.
            self._attr_entity_category = EntityCategory.DIAGNOSTIC
            self._attr_entity_registry_enabled_default = False
        self._attr_native_value = hub.nodes[node_id].values.get(spec.key)

    async def async_added_to_hass(self) -> None:
        """Restore the last reading so a restart shows a value before the next message."""
        await super().async_added_to_hass()
        if self._attr_native_value is None and (last := await self.async_get_last_sensor_data()):
            self._attr_native_value = last.native_value

    @callback
    def _handle_hub_update(self) -> None:
        value = self.hub.nodes[self.node_id].values.get(self.key)
        if value == self._attr_native_value:
            return  # unchanged readings cost no state write
        self._attr_native_value = value
        self.async_write_ha_state()
