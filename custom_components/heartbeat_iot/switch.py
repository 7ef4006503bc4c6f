"""Relay and status LED per node: confirmed by the node, never optimistic.

See docs/architecture.md §6 (command model).
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchDeviceClass, SwitchEntity
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import KEY_LED, KEY_RELAY
from .control import LED, RELAY
from .entity import HomeSyncNodeEntity, async_add_node_entities
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData

# No limit: each call waits for its own node's confirmation (up to timeout × attempts plus
# backoff), so serialising would let one silent node delay a scene's other relays by ~30 s.
# The CommandManager bounds what is in flight per node (16).
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Relay and LED switches for known nodes now and for new nodes on discovery."""
    data = entry.runtime_data

    async_add_node_entities(
        hass,
        entry,
        async_add_entities,
        Platform.SWITCH,
        lambda node_id: [RelaySwitch(data, node_id), LedSwitch(data, node_id)],
    )


class RelaySwitch(HomeSyncNodeEntity, SwitchEntity):
    """The node's relay. Shows what the node reported or confirmed; unavailable while offline.

    No entity category: the relay is the node's main control and must be exposed to Assist
    ("turn on <device> relay").
    """

    _attr_device_class = SwitchDeviceClass.OUTLET
    _attr_translation_key = "relay"

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """The relay of one node."""
        super().__init__(data, node_id, KEY_RELAY)

    @property
    def is_on(self) -> bool | None:
        """status/relay (retained, so known at start) or the last confirmed command."""
        state = self.data.outputs.relay(self.node_id)
        return None if state is None else state == "on"

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Switch on; returns once the node confirmed, raises when it did not."""
        await self.data.control.async_command(self.node_id, RELAY, "on")

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Switch off; returns once the node confirmed, raises when it did not."""
        await self.data.control.async_command(self.node_id, RELAY, "off")

    async def async_toggle(self, **kwargs: Any) -> None:
        """Known state: the explicit opposite (what the user saw). Unknown: the node's toggle."""
        if (on := self.is_on) is None:
            await self.data.control.async_command(self.node_id, RELAY, "toggle")
        else:
            await self.data.control.async_command(self.node_id, RELAY, "off" if on else "on")


class LedSwitch(HomeSyncNodeEntity, SwitchEntity):
    """The node's status LED: on (or blinking) / off, as confirmed by the node.

    There is no LED status topic, so the state is unknown until the first confirmed command
    (and again after the node reboots, when its LED returns to following the relay).
    """

    _attr_entity_category = EntityCategory.CONFIG
    _attr_translation_key = "led"

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """The status LED of one node (unknown again after a reboot: outputs.py)."""
        super().__init__(data, node_id, KEY_LED)

    @property
    def is_on(self) -> bool | None:
        """On while the LED is forced on or blinking."""
        mode = self.data.outputs.led(self.node_id)
        return None if mode is None else mode != "off"

    async def async_turn_on(self, **kwargs: Any) -> None:
        """LED on; returns once the node confirmed."""
        await self.data.control.async_command(self.node_id, LED, "on")

    async def async_turn_off(self, **kwargs: Any) -> None:
        """LED off; returns once the node confirmed."""
        await self.data.control.async_command(self.node_id, LED, "off")
