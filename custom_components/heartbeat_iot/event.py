"""One event entity per node: online / offline / rebooted / flapping."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import KEY_EVENT
from .entity import HomeSyncNodeEntity, async_add_node_entities
from .homesync.tracker import EventType
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """An availability event entity for every node, now and on discovery."""
    data = entry.runtime_data

    async_add_node_entities(
        hass,
        entry,
        async_add_entities,
        Platform.EVENT,
        lambda node_id: [AvailabilityEvent(data, node_id)],
    )


class AvailabilityEvent(HomeSyncNodeEntity, EventEntity):
    """The same events as the bus (and the device triggers), as an entity with history."""

    _attr_translation_key = "availability"
    _attr_event_types = [kind.value for kind in EventType]
    _requires_online = False

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """Events of one node."""
        super().__init__(data, node_id, "availability")

    async def async_added_to_hass(self) -> None:
        """Also hear about the node's events (availability.last_event)."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.data.updates.async_listen(self.node_id, KEY_EVENT, self._on_event)
        )

    @callback
    def _on_event(self) -> None:
        if (event := self.data.availability.last_event(self.node_id)) is None:
            return
        self._trigger_event(event.type.value, {"reason": event.reason})
        self.async_write_changed()

    @callback
    def _handle_status_update(self) -> None:
        """Status changes are shown by the connectivity sensor; only events write here."""
