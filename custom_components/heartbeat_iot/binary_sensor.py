"""Connectivity and flapping per node, fleet degraded per home."""

from __future__ import annotations

from typing import Any

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
)
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.util import dt as dt_util

from .entity import HomeSyncHubEntity, HomeSyncNodeEntity, async_add_node_entities
from .homesync.tracker import Availability
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Per-node sensors for known nodes now and for new nodes on discovery."""
    data = entry.runtime_data
    async_add_entities([FleetDegradedSensor(data)])

    async_add_node_entities(
        hass,
        entry,
        async_add_entities,
        Platform.BINARY_SENSOR,
        lambda node_id: [ConnectivitySensor(data, node_id), FlappingSensor(data, node_id)],
    )


class ConnectivitySensor(HomeSyncNodeEntity, BinarySensorEntity):
    """On while the node proves it is alive; shows offline (not unavailable) when it is not."""

    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY
    _attr_translation_key = "connectivity"
    _requires_online = False
    # last_seen is refreshed with every state write only (transitions, reason or timeout
    # changes), so heartbeats do not churn the state machine; keep it out of the recorder.
    _unrecorded_attributes = frozenset({"last_seen"})
    _write_ignored_attributes = frozenset({"last_seen"})

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """Connectivity of one node."""
        super().__init__(data, node_id, "connectivity")

    @property
    def is_on(self) -> bool | None:
        """Online according to the heartbeat tracker; unknown until it was heard live."""
        state = self.data.availability.state(self.node_id)
        if state is None or state is Availability.UNKNOWN:
            return None
        return state is Availability.ONLINE

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Why the node is in this state, when it was last heard from, and its timeout."""
        status = self.data.availability.status(self.node_id)
        if status is None:
            return {}
        return {
            "reason": status.reason,
            "last_seen": (
                dt_util.utc_from_timestamp(status.last_seen).isoformat()
                if status.last_seen is not None
                else None
            ),
            "timeout": status.timeout,
        }


class FlappingSensor(HomeSyncNodeEntity, BinarySensorEntity):
    """On while the node flaps between online and offline (its events are muted then)."""

    _attr_device_class = BinarySensorDeviceClass.PROBLEM
    _attr_entity_category = EntityCategory.DIAGNOSTIC
    _attr_translation_key = "flapping"
    _requires_online = False
    # Off by default (issue 14: ~20 KB of RSS per enabled entity and node): the availability
    # event entity's `flapping` events tell when a node starts flapping.
    _attr_entity_registry_enabled_default = False

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """Flapping flag of one node."""
        super().__init__(data, node_id, "flapping")

    @property
    def is_on(self) -> bool | None:
        """Flagged by the tracker's flap damping."""
        status = self.data.availability.status(self.node_id)
        return None if status is None else status.flapping


class FleetDegradedSensor(HomeSyncHubEntity, BinarySensorEntity):
    """On when more than the configured share of the home's nodes is offline."""

    _attr_device_class = BinarySensorDeviceClass.PROBLEM
    _attr_translation_key = "fleet_degraded"

    def __init__(self, data: HomeSyncRuntimeData) -> None:
        """Fleet health of one home."""
        super().__init__(data, "fleet_degraded")

    @property
    def is_on(self) -> bool:
        """Offline ratio strictly above the threshold."""
        return self.data.availability.offline_ratio() > self.data.options.offline_ratio_threshold

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """The numbers behind the verdict."""
        return {
            "offline_ratio": round(self.data.availability.offline_ratio(), 2),
            "threshold": self.data.options.offline_ratio_threshold,
        }
