"""One event entity per node: online / offline / rebooted / flapping."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import HomeSyncConfigEntry
from .entity import HomeSyncNodeEntity, async_add_node_entities
from .homesync.tracker import EventType, TrackerEvent
from .hub import HomeSyncHub

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """An availability event entity for every node, now and on discovery."""
    hub = entry.runtime_data.hub

    async_add_node_entities(
        hub, async_add_entities, lambda node_id: [AvailabilityEvent(hub, node_id)]
    )


class AvailabilityEvent(HomeSyncNodeEntity, EventEntity):
    """The same events as the bus (and the device triggers), as an entity with history."""

    _attr_translation_key = "availability"
    _attr_event_types = [kind.value for kind in EventType]
    _requires_online = False

    def __init__(self, hub: HomeSyncHub, node_id: str) -> None:
        """Events of one node."""
        super().__init__(hub, node_id, "availability")

    async def async_added_to_hass(self) -> None:
        """Receive the node's events from the hub."""
        await super().async_added_to_hass()
        self.async_on_remove(self.hub.async_add_event_listener(self.node_id, self._on_event))

    @callback
    def _on_event(self, event: TrackerEvent) -> None:
        self._trigger_event(event.type.value, {"reason": event.reason})
        self.async_write_ha_state()

    @callback
    def _handle_status_update(self) -> None:
        """Status changes are shown by the connectivity sensor; only events write here."""
