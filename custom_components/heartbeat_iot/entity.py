"""Base entities: one node's entities and the home's (fleet) entities."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeassistant.core import callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import KEY_STATUS
from .hub import HUB, HomeSyncHub, signal_new_node


@callback
def async_add_node_entities(
    hub: HomeSyncHub,
    async_add_entities: AddConfigEntryEntitiesCallback,
    build: Callable[[str], Iterable[Entity]],
) -> None:
    """Add a platform's per-node entities for the known nodes now and for new ones on discovery."""

    @callback
    def add_node(node_id: str) -> None:
        async_add_entities(build(node_id))

    for node_id in hub.nodes:
        add_node(node_id)
    hub.entry.async_on_unload(
        async_dispatcher_connect(hub.hass, signal_new_node(hub.entry.entry_id), add_node)
    )


class HomeSyncEntity(Entity):
    """Refreshes when the hub says its (node, key) or the node's status changed."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, hub: HomeSyncHub, node_id: str, key: str) -> None:
        """Bind the entity to its node (or to the home when node_id is HUB)."""
        self.hub = hub
        self.node_id = node_id
        self.key = key

    async def async_added_to_hass(self) -> None:
        """Listen for updates of this entity's key and of its node's status."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.hub.async_add_listener(self.node_id, self.key, self._handle_hub_update)
        )
        self.async_on_remove(
            self.hub.async_add_listener(self.node_id, KEY_STATUS, self._handle_status_update)
        )

    @property
    def available(self) -> bool:
        """Unknowable while Home Assistant's own MQTT link is down."""
        return self.hub.broker_connected

    @callback
    def _handle_hub_update(self) -> None:
        """The entity's own value changed (subclasses filter unchanged values)."""
        self.async_write_ha_state()

    @callback
    def _handle_status_update(self) -> None:
        """The node's status changed: write only if what this entity shows changed."""
        shown = self._shown()
        if shown != self._last_shown:
            self._last_shown = shown
            self.async_write_ha_state()

    _last_shown: tuple[object, ...] | None = None

    def _shown(self) -> tuple[object, ...]:
        """What a user sees of this entity (subclasses add attributes that matter)."""
        return (self.available, self.state)


class HomeSyncNodeEntity(HomeSyncEntity):
    """An entity of one node (its device)."""

    # Readings and controls are only trustworthy while the node is online; entities that
    # describe availability itself (connectivity, last seen…) set this to False.
    _requires_online = True

    def __init__(self, hub: HomeSyncHub, node_id: str, key: str) -> None:
        """Unique id `{home}_{node}_{key}` on the node's device."""
        super().__init__(hub, node_id, key)
        self._attr_unique_id = f"{hub.home_id}_{node_id}_{key}"
        self._attr_device_info = hub.node_device_info(node_id)

    @property
    def available(self) -> bool:
        """Offline nodes make their readings and relay unavailable."""
        if self._requires_online:
            return self.hub.node_online(self.node_id)
        return self.hub.broker_connected


class HomeSyncHubEntity(HomeSyncEntity):
    """An entity of the home's hub device (fleet health)."""

    def __init__(self, hub: HomeSyncHub, key: str) -> None:
        """Unique id `{home}_{key}` on the hub device."""
        super().__init__(hub, HUB, key)
        self._attr_unique_id = f"{hub.home_id}_{key}"
        self._attr_device_info = hub.hub_device_info
