"""The node's outputs (relay, status LED) as the node last reported or confirmed them.

The one owner of both states: status/relay, status/led and the heartbeat's outputs (hub),
confirmed commands (control) and reboots (availability) all write here, and the switches only
read. Never optimistic: nothing is written before the node speaks.

Both states are persisted with the home (storage.py), so after a restart the switches show what
was last confirmed instead of passing through `unknown` (which writes "turned on" to the logbook
and fires `to: "on"` triggers when the retained state arrives). The rule "a reboot makes the LED
unknown" applies only to nodes that never reported their LED (firmware before status/led): a
node that reports it re-publishes it at every connect. See docs/architecture.md (command model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeassistant.core import callback

from .const import KEY_LED, KEY_RELAY
from .homesync.protocol import LED_STATES, RELAY_STATES
from .updates import Updates


class NodeOutputs:
    """Relay state ("on"/"off") and LED mode ("on"/"off"/"blink") per node; None when unknown."""

    def __init__(
        self,
        updates: Updates,
        *,
        is_known: Callable[[str], bool],
        schedule_save: Callable[[], None],
    ) -> None:
        """States are kept for known (discovered) nodes only, and persisted when they change."""
        self._updates = updates
        self._is_known = is_known
        self._schedule_save = schedule_save
        self._relay: dict[str, str] = {}
        self._led: dict[str, str] = {}
        # Nodes that report their LED themselves (status/led or the heartbeat's "led").
        self._led_reporting: set[str] = set()

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
            self._schedule_save()
            self._updates.async_notify(node_id, KEY_RELAY)

    @callback
    def async_set_led(self, node_id: str, mode: str, *, reported: bool = False) -> None:
        """The node confirmed an LED mode, or `reported` it (status/led, heartbeat)."""
        if not self._is_known(node_id):
            return
        if reported:
            self._led_reporting.add(node_id)
        if self._led.get(node_id) != mode:
            self._led[node_id] = mode
            self._schedule_save()
            self._updates.async_notify(node_id, KEY_LED)

    @callback
    def async_rebooted(self, node_id: str) -> None:
        """The node rebooted: an LED it does not report is back to a default we do not know."""
        if node_id in self._led_reporting:
            return  # it re-publishes status/led at every connect
        if self._led.pop(node_id, None) is not None:
            self._updates.async_notify(node_id, KEY_LED)

    def forget(self, node_id: str) -> None:
        """The node was removed."""
        self._relay.pop(node_id, None)
        self._led.pop(node_id, None)
        self._led_reporting.discard(node_id)

    def export(self) -> dict[str, Any]:
        """What is persisted with the home."""
        return {
            "relay": dict(self._relay),
            "led": dict(self._led),
            "led_reporting": sorted(self._led_reporting),
        }

    def restore(self, stored: object) -> None:
        """Load `export()` output (garbage and unknown nodes are skipped); notifies nobody.

        Runs before the entities exist, so they start with these states.
        """
        if not isinstance(stored, Mapping):
            return
        for key, allowed, target in (
            ("relay", RELAY_STATES, self._relay),
            ("led", LED_STATES, self._led),
        ):
            states = stored.get(key)
            if isinstance(states, Mapping):
                target.update(
                    (node_id, state)
                    for node_id, state in states.items()
                    if self._is_known(node_id) and state in allowed
                )
        reporting = stored.get("led_reporting")
        if isinstance(reporting, list):
            self._led_reporting.update(n for n in reporting if isinstance(n, str))
