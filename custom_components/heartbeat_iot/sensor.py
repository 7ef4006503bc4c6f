"""Telemetry and diagnostic sensors of HomeSync nodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
import math
import time
from typing import Any

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorExtraStoredData,
    SensorStateClass,
)
from homeassistant.components.sensor.const import NON_NUMERIC_DEVICE_CLASSES
from homeassistant.const import MAX_LENGTH_STATE_STATE, PERCENTAGE, EntityCategory, Platform
from homeassistant.core import HomeAssistant, StateMachine, callback
from homeassistant.core_config import DATA_CUSTOMIZE
from homeassistant.helpers import device_registry as dr, entity_registry as er, restore_state
from homeassistant.helpers.entity import FLOAT_PRECISION, EntityPlatformState, StateInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import UNDEFINED, StateType
from homeassistant.util import dt as dt_util
from homeassistant.util.enum import try_parse_enum
from homeassistant.util.hass_dict import HassDict

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


# Entity._stringify_state's format of a float state, built once (HA's f-string builds the
# spec on every call: 0.86 against 0.35 µs).
_FLOAT_FORMAT = f".{FLOAT_PRECISION}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _WriteTemplate:
    """What HA's write of a reading sensor computed besides the state, and for what.

    Valid while `registry_entry`, `device_entry` and `customize` are the entity's / Home
    Assistant's current objects; a (re)add of the entity drops it. `attributes` None: the fast
    path is refused for these (e.g. a unit conversion the user chose): HA's write each time.
    """

    registry_entry: er.RegistryEntry | None
    device_entry: dr.DeviceEntry | None
    hass_data: HassDict
    customize: Any
    states: StateMachine
    entity_id: str
    state_info: StateInfo | None
    force_update: bool
    attributes: Mapping[str, Any] | None


class MetricSensor(HomeSyncNodeEntity, SensorEntity):
    """One telemetry metric of a node (or its Wi-Fi signal).

    Not a RestoreSensor (issue 14): the home's store keeps the last readings (storage.py), so
    Home Assistant's restore cache need not hold a second copy of every sensor's state for
    the whole run and write it every 15 minutes.
    """

    # Built by the first fast write (a class default until then: no slot per instance).
    _write_template: _WriteTemplate | None = None

    def __init__(self, data: HomeSyncRuntimeData, node_id: str, spec: MetricSpec) -> None:
        """Describe the sensor from the metric catalogue."""
        super().__init__(data, node_id, spec.key)
        self.entity_description = _metric_description(spec)

    async def async_added_to_hass(self) -> None:
        """No stored reading (a store from before issue 14): Home Assistant's cache has it."""
        await super().async_added_to_hass()
        if self._write_template is not None:  # re-added: entity id, state info… may be new
            self._write_template = None
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
        """A new reading: the registry only notifies changed values, so write it.

        Like `async_write_changed()` (forget what was shown, write without comparing), through
        our own write path when it applies, HA's otherwise.
        """
        self._last_shown = None
        if not self._async_write_reading():
            self.async_write_ha_state()

    @callback
    def _async_write_reading(self) -> bool:
        """Write the reading exactly as Home Assistant's write would; False: take HA's write.

        Issue 14: `async_write_ha_state()` recomputes on every write what cannot have changed
        since the last one (capability attributes, unit, device class, name, icon, the
        registry's capabilities…): a quarter to a third of a plain sensor's write (bench_hub,
        benchmarks/NOTES.md). For the common case (a finite int/float reading shown as it is:
        no unit conversion, a numeric device class, available, no `reason`) this writes the
        state HA makes of such a value with the attributes HA computed the last time
        (`_WriteTemplate`). They stay valid while the registry entry, the device entry and the
        customize config are the same objects: HA replaces each when it changes (and then
        writes through its own path). Anything else takes HA's write.
        tests/test_sensor_write_path.py proves that both write the same state and attributes
        (docs/architecture.md §3, step 7).
        """
        node = self.data.nodes.find(self.node_id)
        if node is None or (value := node.values.get(self.key)) is None:
            return False  # unknown: HA's write
        # SensorEntity.state returns such a value as it is (no conversion: checked when the
        # template was built) and Entity._stringify_state formats it like this. Exact types
        # only: a subclass (bool, a float subclass) takes HA's write.
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return False  # HA's write raises for it: let it
            state = format(value, _FLOAT_FORMAT)  # HA's f"{state:.{FLOAT_PRECISION}}"
        elif kind is int:
            state = str(value)
            if len(state) > MAX_LENGTH_STATE_STATE:
                return False  # HA's write logs it and writes unknown
        else:
            return False
        if (
            self.key in node.unmeasured  # the `reason` attribute
            or self._platform_state is not EntityPlatformState.ADDED
            # A context (set with _context_set, cleared with it) that may expire: HA's write.
            or self._context_set is not None
            or not self.available
        ):
            return False
        # Everything else the write needs is read from the template (one small object per
        # sensor, not a dozen lookups in the entity: at 1 000 sensors each is a cache miss).
        template = self._write_template
        fresh = (
            template is None
            or template.registry_entry is not self.registry_entry
            or template.device_entry is not self.device_entry
            or template.customize is not template.hass_data.get(DATA_CUSTOMIZE)
        )
        if fresh:
            template = self._write_template = self._build_write_template(state)
        assert template is not None
        if template.attributes is None:
            return False
        states = template.states
        states.async_set(
            template.entity_id,
            state,
            template.attributes,
            template.force_update,
            None,  # the entity's context: None while _context_set is (checked above)
            template.state_info,
            time.time(),  # what HA's write stamps the state with
        )
        # From now on the state machine's own (equal, read-only) attributes: one dict per
        # sensor less, and the comparison of the next write reads one object, not two.
        if (
            fresh
            and (written := states.get(template.entity_id)) is not None
            and written.attributes == template.attributes
        ):
            self._write_template = replace(template, attributes=written.attributes)
        return True

    def _build_write_template(self, state: str) -> _WriteTemplate:
        """What HA's write computes besides the state, or a refusal (attributes None)."""
        hass = self.hass
        entry = self.registry_entry
        customize = hass.data.get(DATA_CUSTOMIZE)
        template = _WriteTemplate(
            registry_entry=entry,
            device_entry=self.device_entry,
            hass_data=hass.data,
            customize=customize,
            states=hass.states,
            entity_id=self.entity_id,
            state_info=self._state_info,
            force_update=self.force_update,
            attributes=None,
        )
        if (
            entry is None
            or entry.disabled_by is not None
            # A unit chosen in the entity's settings (or suggested for the unit system):
            # SensorEntity.state converts and rounds, so every write takes HA's path.
            or self.unit_of_measurement != self.native_unit_of_measurement
            or try_parse_enum(SensorDeviceClass, self.device_class) in NON_NUMERIC_DEVICE_CLASSES
            or self.options is not None
        ):
            return template  # refused
        # HA's own computation of this very write (state, attributes, capabilities).
        calculated = self._async_calculate_state()
        if (
            calculated.state != state
            # HA's write would update the registry first (and then the entry is a new one).
            or calculated.capability_attributes != entry.capabilities
            or self.device_class != entry.original_device_class
            or (self.supported_features or 0) != entry.supported_features
        ):
            return template  # refused
        attributes = dict(calculated.attributes)
        if customize is not None and (custom := customize.get(self.entity_id)):
            attributes |= custom  # as HA's write does, after computing
        return replace(template, attributes=attributes)


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
