"""Base entities: one node's entities and the home's (fleet) entities.

Every entity listens through `updates.Updates` on (its node, its key) and (its node,
KEY_STATUS), and reads what it shows from the part that owns it (`self.data.nodes`,
`.outputs`, `.availability`). To add a per-node entity: subclass HomeSyncNodeEntity with a
unique key, read its value in a property, and build it in the platform's
`async_add_node_entities` callback; whoever changes the value calls
`updates.async_notify(node_id, key)`. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import HUB, KEY_NODE_ADDED, KEY_STATUS
from .device import hub_device_info, node_device_info
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData


@callback
def async_add_node_entities(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    domain: Platform,
    build: Callable[[str], Iterable[HomeSyncNodeEntity]],
) -> None:
    """Add a platform's per-node entities for the known nodes now and for new ones on discovery.

    At start, entities the user (or their default) disabled are not even handed to Home
    Assistant, which would look up their registry entry and device only to drop them again
    (issue 14: 6 of 16 entities per node are disabled by default; ~0.1 ms each at start).
    Enabling one reloads the entry, and then it is built.
    """
    data = entry.runtime_data
    disabled = _disabled_unique_ids(hass, entry, domain)

    # One call for every known node (a start with 1 000 restored nodes): Home Assistant
    # schedules one task per call, not one per node.
    async_add_entities(
        [
            entity
            for node_id in data.nodes
            for entity in build(node_id)
            if entity.unique_id not in disabled
        ]
    )

    @callback
    def node_added() -> None:
        if (node_id := data.nodes.newest_node) is not None:
            async_add_entities(build(node_id))

    entry.async_on_unload(data.updates.async_listen(HUB, KEY_NODE_ADDED, node_added))


def _disabled_unique_ids(
    hass: HomeAssistant, entry: HomeSyncConfigEntry, domain: Platform
) -> frozenset[str]:
    """Unique ids of the entry's disabled `domain` entities in the entity registry."""
    registry = er.async_get(hass)
    return frozenset(
        e.unique_id
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.domain == domain and e.disabled_by is not None
    )


# One DeviceInfo per node shared by its ~13 entities (Home Assistant only reads it when it
# registers an entity, and never changes it): ~4 KB less per node. Bounded like max_nodes.
_shared_node_device_info = lru_cache(maxsize=8192)(node_device_info)


class HomeSyncEntity(Entity):
    """Refreshes when its (node, key) or the node's status changed, if the user would notice.

    The one write filter of every entity: on a notification, `_shown()` (availability, state and
    every attribute, as Home Assistant would write them) is compared with what was shown last,
    and the state is written only when they differ. Subclasses do not list what matters; they
    may only name attributes that alone never warrant a write (`_write_ignored_attributes`), or
    take the fast path `async_write_changed()` when they know the state changed.
    """

    # Attributes that change too often to deserve their own write (they are refreshed with the
    # next write for another reason), e.g. the connectivity sensor's last_seen.
    _write_ignored_attributes: frozenset[str] = frozenset()
    # What the user saw after the last write; None: unknown, the next notification writes.
    _last_shown: tuple[object, ...] | None = None

    def __init__(self, data: HomeSyncRuntimeData, node_id: str, key: str) -> None:
        """Bind the entity to its node (or to the home when node_id is HUB)."""
        self.data = data
        self.node_id = node_id
        self.key = key

    # Constants and values derived from (home, node, key) are plain properties, not `_attr_*`:
    # Home Assistant caches each `_attr_`-backed property in the instance's __dict__ on first
    # read, so every `_attr_` costs two slots per entity; with ~10 000 entities for 1 000 nodes
    # that pushed the sensors' __dict__ into the next size class (+750 B each, issue 14).
    @property
    def has_entity_name(self) -> bool:
        """Named after the device plus the translated entity name."""
        return True

    @property
    def should_poll(self) -> bool:
        """Push only: every write comes from a notification."""
        return False

    async def async_added_to_hass(self) -> None:
        """Listen for updates of this entity's key and of its node's status."""
        await super().async_added_to_hass()
        updates = self.data.updates
        self.async_on_remove(updates.async_listen(self.node_id, self.key, self._handle_update))
        self.async_on_remove(
            updates.async_listen(self.node_id, KEY_STATUS, self._handle_status_update)
        )

    @property
    def available(self) -> bool:
        """Unknowable while Home Assistant's own MQTT link is down."""
        return self.data.availability.broker_connected

    @callback
    def _handle_update(self) -> None:
        """The entity's own value may have changed."""
        self.async_write_if_shown_changed()

    @callback
    def _handle_status_update(self) -> None:
        """The node's (or the fleet's) status may have changed what this entity shows."""
        self.async_write_if_shown_changed()

    @callback
    def async_write_if_shown_changed(self) -> None:
        """Write the state if anything the user sees differs from the last write."""
        shown = self._shown()
        if shown != self._last_shown:
            self._last_shown = shown
            self.async_write_ha_state()

    @callback
    def async_write_changed(self) -> None:
        """Write a state known to differ from the last one (skips the comparison).

        Any other write of ours must go through here too: it forgets what was shown, so the
        next notification compares against nothing and writes (never a missed change).
        """
        self._last_shown = None
        self.async_write_ha_state()

    def _shown(self) -> tuple[object, ...]:
        """Everything a user can see of this entity: availability, state, all attributes."""
        attributes: dict[str, Any] = {}
        for part in (
            self.capability_attributes,
            self.state_attributes,
            self.extra_state_attributes,
        ):
            if part:
                attributes.update(part)
        for name in self._write_ignored_attributes:
            attributes.pop(name, None)
        return (self.available, self.state, attributes)


class HomeSyncNodeEntity(HomeSyncEntity):
    """An entity of one node (its device)."""

    # Readings and controls are only trustworthy while the node is online; entities that
    # describe availability itself (connectivity, last seen…) set this to False.
    _requires_online = True

    @property
    def unique_id(self) -> str:
        """`{home}_{node}_{key}` (Home Assistant reads it when it registers the entity)."""
        return f"{self.data.home_id}_{self.node_id}_{self.key}"

    @property
    def device_info(self) -> DeviceInfo:
        """The node's device (one DeviceInfo shared by the node's entities)."""
        return _shared_node_device_info(self.data.home_id, self.node_id)

    @property
    def available(self) -> bool:
        """Offline nodes make their readings and relay unavailable."""
        if self._requires_online:
            return self.data.availability.node_online(self.node_id)
        return self.data.availability.broker_connected


class HomeSyncHubEntity(HomeSyncEntity):
    """An entity of the home's hub device (fleet health)."""

    def __init__(self, data: HomeSyncRuntimeData, key: str) -> None:
        """Unique id `{home}_{key}` on the hub device."""
        super().__init__(data, HUB, key)
        self._attr_unique_id = f"{data.home_id}_{key}"
        self._attr_device_info = hub_device_info(data.home_id)
