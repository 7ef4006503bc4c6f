"""Commands, confirmations and the offline queue of a home (DESIGN §4).

PLACEHOLDER INTERFACE written by the lead; the issue-5 work replaces the bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeassistant.core import HomeAssistant

if TYPE_CHECKING:
    from .hub import HomeSyncHub


class NodeControl:
    """Owns the CommandManager and IntentQueue of one hub."""

    def __init__(self, hass: HomeAssistant, hub: HomeSyncHub) -> None:
        """Bind to the hub."""
        self.hass = hass
        self.hub = hub

    def handle_response(self, node_id: str, data: dict[str, Any]) -> None:
        """A validated, live response/command from the node."""

    def node_online(self, node_id: str) -> None:
        """The node just became online: send its queued intents."""

    def forget(self, node_id: str) -> None:
        """The node was removed: drop its queue and pending commands."""

    def stop(self) -> None:
        """Unload: cancel everything in flight."""

    def export(self) -> Any:
        """JSON-able state to persist (the offline queue)."""
        return []

    def restore(self, data: Any) -> None:
        """Restore persisted state; tolerate garbage."""
