"""The one way entities hear about changes: notify (node_id, key), then read from the owner.

An owner (nodes, outputs, availability) changes a value, then calls `async_notify(node_id, key)`;
every listener on that pair runs synchronously and reads what it shows from the owner. Listeners
get no payload, so there is one source of truth per value and no copy to go stale. Platforms use
the same registry to add entities: `(HUB, KEY_NODE_ADDED)` and `(HUB, KEY_METRIC_ADDED)`.
Bus events (heartbeat_iot_node_*, heartbeat_iot_command_*) are for automations, not entities.
A dict lookup per notification keeps the per-message cost O(1). See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from homeassistant.core import CALLBACK_TYPE, callback

type Listener = Callable[[], None]


class Updates:
    """Listeners per (node_id, key) of one home."""

    def __init__(self) -> None:
        """No listener yet."""
        # key -> node_id -> listeners. Keyed by key first: a key nobody listens to on any node
        # (KEY_LAST_SEEN, notified per live message, whose sensor is disabled by default) costs
        # one dict lookup and no tuple per notification.
        self._listeners: dict[str, dict[str, list[Listener]]] = {}

    @callback
    def async_listen(self, node_id: str, key: str, listener: Listener) -> CALLBACK_TYPE:
        """Call `listener` after each change of (node_id, key); returns the remover.

        Every entity listens twice, so with 1 000 nodes this runs ~25 000 times: the remover
        is a `partial` of one method (~130 bytes), not a closure with five cells (~350).
        """
        self._listeners.setdefault(key, {}).setdefault(node_id, []).append(listener)
        return partial(self._async_unlisten, node_id, key, listener)

    @callback
    def _async_unlisten(self, node_id: str, key: str, listener: Listener) -> None:
        by_node = self._listeners.get(key)
        if by_node is None or (listeners := by_node.get(node_id)) is None:
            return
        listeners.remove(listener)
        if not listeners:
            del by_node[node_id]
            if not by_node:
                del self._listeners[key]

    @callback
    def async_notify(self, node_id: str, key: str) -> None:
        """Tell the listeners of (node_id, key) that what they show may have changed."""
        if (by_node := self._listeners.get(key)) is None:
            return
        for listener in by_node.get(node_id, ()):
            listener()
