"""Telemetry and diagnostic sensors of HomeSync nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
import math

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorExtraStoredData,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import restore_state
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import UNDEFINED, StateType
from homeassistant.util import dt as dt_util

from .const import (
    HUB,
    KEY_LAST_SEEN,
    KEY_METRIC_ADDED,
    KEY_QUEUED_INTENTS,
    STAT_COMMANDS_CONFIRMED,
    STAT_COMMANDS_FAILED,
    STAT_COMMANDS_PENDING,
    STAT_COMMANDS_SENT,
    STAT_INTENTS_QUEUED,
    STAT_MESSAGES_PER_MINUTE,
    STAT_MESSAGES_REJECTED,
)
from .entity import HomeSyncHubEntity, HomeSyncNodeEntity, async_add_node_entities
from .homesync.protocol import METRICS, MetricSpec
from .homesync.tracker import NodeStatus
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData

# Entities only write state on push; Home Assistant need not serialise updates.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Create sensors for known metrics now and for new ones as they first report."""
    data = entry.runtime_data

    def node_sensors(node_id: str) -> list[HomeSyncNodeEntity]:
        # A node discovered now has no metric yet: each comes with metric_added below.
        metrics = data.nodes[node_id].metrics.values()
        return [
            *(MetricSensor(data, node_id, spec) for spec in metrics),
            *(HealthSensor(data, node_id, desc) for desc in HEALTH_SENSORS),
            QueuedIntentsSensor(data, node_id),
        ]

    # Every node's sensors in one call at start (one task, disabled ones skipped).
    async_add_node_entities(hass, entry, async_add_entities, Platform.SENSOR, node_sensors)
    async_add_entities(
        [
            *(FleetSensor(data, desc) for desc in FLEET_SENSORS),
            *(StatsSensor(data, desc) for desc in STATS_SENSORS),
        ]
    )

    @callback
    def metric_added() -> None:
        if data.nodes.newest_metric is None:
            return
        node_id, key = data.nodes.newest_metric
        node = data.nodes.get(node_id)
        if node is not None and key in node.metrics:
            async_add_entities([MetricSensor(data, node_id, node.metrics[key])])

    entry.async_on_unload(data.updates.async_listen(HUB, KEY_METRIC_ADDED, metric_added))


def _timestamp(value: float | None) -> datetime | None:
    """A datetime, or None when there is none or it is out of range (e.g. an old store)."""
    if value is None:
        return None
    try:
        return dt_util.utc_from_timestamp(value)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True)
class HealthSensorDescription(SensorEntityDescription):
    """A diagnostic sensor computed from the tracker's view of a node."""

    value_fn: Callable[[NodeStatus], StateType | datetime]


HEALTH_SENSORS: tuple[HealthSensorDescription, ...] = (
    HealthSensorDescription(
        key=KEY_LAST_SEEN,
        translation_key=KEY_LAST_SEEN,
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        # Written on every message: off by default; the connectivity sensor carries the
        # last_seen of its last transition for everyone else.
        entity_registry_enabled_default=False,
        value_fn=lambda status: _timestamp(status.last_seen),
    ),
    HealthSensorDescription(
        key="last_boot",
        translation_key="last_boot",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        # Off by default (issue 14: every enabled entity costs ~20 KB of RSS per node): the
        # availability event entity's `rebooted` events carry the same, with history.
        entity_registry_enabled_default=False,
        value_fn=lambda status: _timestamp(status.last_boot),
    ),
    HealthSensorDescription(
        key="reboots",
        translation_key="reboots",
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,  # the count of the `rebooted` events
        value_fn=lambda status: status.reboots,
    ),
    HealthSensorDescription(
        key="link_quality",
        translation_key="link_quality",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
        # Wi-Fi debugging, like the signal strength sensor (also off by default).
        entity_registry_enabled_default=False,
        value_fn=lambda status: (
            None if status.link_quality is None else round(status.link_quality, 1)
        ),
    ),
)


class HealthSensor(HomeSyncNodeEntity, RestoreSensor):
    """Last seen / last boot / reboots / link quality of a node (available while it is offline).

    Until the tracker knows a value again after a restart (link quality needs two heartbeats),
    the sensor shows the value it had: nothing that was known passes through `unknown`.
    """

    entity_description: HealthSensorDescription
    _requires_online = False
    _restored: StateType | date | datetime | Decimal = None

    def __init__(
        self, data: HomeSyncRuntimeData, node_id: str, description: HealthSensorDescription
    ) -> None:
        """One health value of one node (its key is also what it listens on)."""
        super().__init__(data, node_id, description.key)
        self.entity_description = description

    async def async_added_to_hass(self) -> None:
        """Remember the value shown before the restart, as a fallback."""
        await super().async_added_to_hass()
        if (last := await self.async_get_last_sensor_data()) is not None:
            self._restored = last.native_value

    @property
    def native_value(self) -> StateType | date | datetime | Decimal:
        """Computed from the tracker on each write (the restored value until it knows)."""
        status = self.data.availability.status(self.node_id)
        value = None if status is None else self.entity_description.value_fn(status)
        if value is None:
            return self._restored
        self._restored = None  # known again: never fall back to an old value later
        return value


@dataclass(frozen=True, kw_only=True)
class FleetSensorDescription(SensorEntityDescription):
    """A count or ratio over the home's nodes."""

    value_fn: Callable[[HomeSyncRuntimeData], float | int]


FLEET_SENSORS: tuple[FleetSensorDescription, ...] = (
    FleetSensorDescription(
        key="nodes_online",
        translation_key="nodes_online",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.availability.counts()[0],
    ),
    FleetSensorDescription(
        key="nodes_offline",
        translation_key="nodes_offline",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data: data.availability.counts()[1],
    ),
    FleetSensorDescription(
        key="offline_ratio",
        translation_key="offline_ratio",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda data: round(data.availability.offline_ratio(), 2),
    ),
)


class FleetSensor(HomeSyncHubEntity, SensorEntity):
    """Nodes online / offline / offline ratio of a home."""

    entity_description: FleetSensorDescription

    def __init__(self, data: HomeSyncRuntimeData, description: FleetSensorDescription) -> None:
        """One fleet number of one home."""
        super().__init__(data, description.key)
        self.entity_description = description

    @property
    def native_value(self) -> float | int:
        """Computed from the tracker's counters (O(1))."""
        return self.entity_description.value_fn(self.data)


@lru_cache(maxsize=1024)
def _metric_description(spec: MetricSpec) -> SensorEntityDescription:
    """One description per metric, shared by that metric's sensors on every node.

    Issue 14: six `_attr_*` per sensor instance made each of the 5 000 sensors of 1 000 nodes
    carry its own copy of what the catalogue already says. Bounded like max_metrics kinds.
    """
    translated = spec.key in METRICS
    return SensorEntityDescription(
        key=spec.key,
        translation_key=spec.key if translated else None,
        name=UNDEFINED if translated else spec.key.replace("_", " ").capitalize(),
        native_unit_of_measurement=spec.unit,
        device_class=SensorDeviceClass(spec.device_class) if spec.device_class else None,
        state_class=SensorStateClass(spec.state_class) if spec.state_class else None,
        suggested_display_precision=spec.precision,
        # Signal strength changes on every report: useful for debugging, noise otherwise.
        entity_category=EntityCategory.DIAGNOSTIC if spec.diagnostic else None,
        entity_registry_enabled_default=not spec.diagnostic,
    )


def _cached_reading(hass: HomeAssistant, entity_id: str) -> float | None:
    """The reading Home Assistant's restore cache holds for a sensor, if it is a number.

    Until issue 14 the metric sensors were RestoreSensors; a store written then has no
    readings, so the first start after the upgrade takes them from the cache once (it keeps
    what it loaded for the whole run anyway).
    """
    stored = restore_state.async_get(hass).last_states.get(entity_id)
    if stored is None or stored.extra_data is None:
        return None
    data = SensorExtraStoredData.from_dict(stored.extra_data.as_dict())
    value = None if data is None else data.native_value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


class MetricSensor(HomeSyncNodeEntity, SensorEntity):
    """One telemetry metric of a node (or its Wi-Fi signal).

    Not a RestoreSensor (issue 14): the home's store keeps the last readings (storage.py), so
    Home Assistant's restore cache need not hold a second copy of every sensor's state for
    the whole run and write it every 15 minutes.
    """

    def __init__(self, data: HomeSyncRuntimeData, node_id: str, spec: MetricSpec) -> None:
        """Describe the sensor from the metric catalogue."""
        super().__init__(data, node_id, spec.key)
        self.entity_description = _metric_description(spec)

    async def async_added_to_hass(self) -> None:
        """No stored reading (a store from before issue 14): Home Assistant's cache has it."""
        await super().async_added_to_hass()
        values = self.data.nodes[self.node_id].values
        if self.key in values:
            return
        if (last := _cached_reading(self.hass, self.entity_id)) is not None:
            # Into the node's readings, so the home's store keeps it from now on.
            values[self.key] = last

    # The reading and its reason are read from the node registry (their one owner), not
    # copied into the entity: no per-sensor copy, and a plain property is not cached in the
    # instance either (HA caches `native_value` per instance otherwise).
    @property
    def native_value(self) -> float | None:
        """The node's last reading of this metric (stored across restarts)."""
        node = self.data.nodes.get(self.node_id)
        return None if node is None else node.values.get(self.key)

    @property
    def extra_state_attributes(self) -> dict[str, str] | None:
        """Why there is no reading, while the meter cannot measure it (e.g. below_range)."""
        node = self.data.nodes.get(self.node_id)
        reason = None if node is None else node.unmeasured.get(self.key)
        return None if reason is None else {"reason": reason}

    @callback
    def _handle_update(self) -> None:
        """A new reading: the registry only notifies changed values, so write (fast path)."""
        self.async_write_changed()


# --- the home's statistics (issue 10: what the seeds' status endpoints showed) ----------------

_TOTAL = SensorStateClass.TOTAL_INCREASING
_NOW = SensorStateClass.MEASUREMENT
STATS_SENSORS: tuple[SensorEntityDescription, ...] = (
    SensorEntityDescription(
        key=STAT_COMMANDS_SENT, translation_key=STAT_COMMANDS_SENT, state_class=_TOTAL
    ),
    SensorEntityDescription(
        key=STAT_COMMANDS_CONFIRMED, translation_key=STAT_COMMANDS_CONFIRMED, state_class=_TOTAL
    ),
    SensorEntityDescription(
        key=STAT_COMMANDS_FAILED, translation_key=STAT_COMMANDS_FAILED, state_class=_TOTAL
    ),
    SensorEntityDescription(
        key=STAT_COMMANDS_PENDING, translation_key=STAT_COMMANDS_PENDING, state_class=_NOW
    ),
    SensorEntityDescription(
        key=STAT_INTENTS_QUEUED, translation_key=STAT_INTENTS_QUEUED, state_class=_NOW
    ),
    SensorEntityDescription(
        key=STAT_MESSAGES_PER_MINUTE,
        translation_key=STAT_MESSAGES_PER_MINUTE,
        native_unit_of_measurement="messages/min",
        state_class=_NOW,
        suggested_display_precision=0,
    ),
    SensorEntityDescription(
        key=STAT_MESSAGES_REJECTED, translation_key=STAT_MESSAGES_REJECTED, state_class=_TOTAL
    ),
)


class StatsSensor(HomeSyncHubEntity, SensorEntity):
    """One statistic of the home; written only when the value it shows changed."""

    def __init__(self, data: HomeSyncRuntimeData, description: SensorEntityDescription) -> None:
        """One counter of stats.HomeStatistics (notified on (HUB, key))."""
        super().__init__(data, description.key)
        self.entity_description = description

    @property
    def native_value(self) -> float | int | None:
        """Read from the home's statistics (O(1))."""
        return self.data.stats.value(self.key)

    async def async_added_to_hass(self) -> None:
        """Remember what the first write showed: the base filter writes only what changed."""
        await super().async_added_to_hass()
        self._last_shown = self._shown()


class QueuedIntentsSensor(HomeSyncNodeEntity, SensorEntity):
    """How many commands wait in the offline queue for this node (diagnostic)."""

    _requires_online = False  # most interesting precisely while the node is offline
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    # Off by default (issue 14: ~20 KB of RSS per enabled entity): only interesting to whoever
    # queues commands for offline nodes; the home's "Commands queued for offline nodes"
    # sensor counts them all.
    _attr_entity_registry_enabled_default = False
    _attr_state_class = SensorStateClass.MEASUREMENT
    _attr_translation_key = KEY_QUEUED_INTENTS

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """Notified on (node_id, KEY_QUEUED_INTENTS) when the queue changes."""
        super().__init__(data, node_id, KEY_QUEUED_INTENTS)

    @property
    def native_value(self) -> int:
        """Counted in the (small) offline queue."""
        return self.data.control.queued(self.node_id)

    async def async_added_to_hass(self) -> None:
        """Remember what the first write showed: the base filter writes only what changed."""
        await super().async_added_to_hass()
        self._last_shown = self._shown()
