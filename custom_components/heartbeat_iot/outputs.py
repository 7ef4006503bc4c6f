"""The node's outputs (relay, status LED) as the node last reported or confirmed them.

The one owner of both states: status/relay (hub), confirmed commands (control) and reboots
(availability) all write here, and the switches only read. The rule "a reboot makes the LED
unknown" lives here too, so it holds while the LED entity is disabled. Never optimistic: nothing
is written before the node speaks. See docs/architecture.md (command model).
"""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.core import callback

from .const import KEY_LED, KEY_RELAY
from .updates import Updates


class NodeOutputs:
    """Relay state ("on"/"off") and LED mode ("on"/"off"/"blink") per node; None when unknown."""

    def __init__(self, updates: Updates, *, is_known: Callable[[str], bool]) -> None:
        """Relay states are kept for known (discovered) nodes only."""
        self._updates = updates
        self._is_known = is_known
        self._relay: dict[str, str] = {}
        self._led: dict[str, str] = {}

    def relay(self, node_id: str) -> str | None:
        """ "on" / "off" as the node last reported or confirmed it; None when unknown."""
        return self._relay.get(node_id)

    def led(self, node_id: str) -> str | None:
        """The LED mode the node last confirmed ("on", "off", "blink"); None when unknown."""
        return self._led.get(node_id)

    def led_modes(self) -> dict[str, str]:
        """Every known LED mode (diagnostics)."""
        return dict(self._led)

    @callback
    def async_set_relay(self, node_id: str, state: str) -> None:
        """The relay is in `state`, as reported (status/relay) or confirmed by the node."""
        if self._is_known(node_id) and self._relay.get(node_id) != state:
            self._relay[node_id] = state
            self._updates.async_notify(node_id, KEY_RELAY)

    @callback
    def async_set_led(self, node_id: str, mode: str) -> None:
        """The node confirmed an LED mode (there is no LED status topic)."""
        if self._led.get(node_id) != mode:
            self._led[node_id] = mode
            self._updates.async_notify(node_id, KEY_LED)

    @callback
    def async_rebooted(self, node_id: str) -> None:
        """The node rebooted: its LED is back to its default mode, which we do not know."""
        if self._led.pop(node_id, None) is not None:
            self._updates.async_notify(node_id, KEY_LED)

    def forget(self, node_id: str) -> None:
        """The node was removed."""
        self._relay.pop(node_id, None)
        self._led.pop(node_id, None)
