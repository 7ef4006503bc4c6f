"""Base entity for HomeSync node entities."""

from __future__ import annotations

from homeassistant.core import callback
from homeassistant.helpers.entity import Entity

from .hub import HomeSyncHub


class HomeSyncNodeEntity(Entity):
    """An entity that belongs to one node and refreshes when the hub says (node, key) changed."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, hub: HomeSyncHub, node_id: str, key: str) -> None:
        """Bind the entity to its node."""
        self.hub = hub
        self.node_id = node_id
        self.key = key
        self._attr_unique_id = f"{hub.home_id}_{node_id}_{key}"
        self._attr_device_info = hub.node_device_info(node_id)

    async def async_added_to_hass(self) -> None:
        """Listen for updates of this entity's key."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.hub.async_add_listener(self.node_id, self.key, self._handle_hub_update)
        )

    @callback
    def _handle_hub_update(self) -> None:
        """Write state when something this entity shows changed (subclasses filter)."""
        self.async_write_ha_state()
