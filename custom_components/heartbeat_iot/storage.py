"""Persistence of one home: its nodes, their availability and the offline queue, in one Store.

Format (version STORAGE_VERSION): `{"nodes": NodeRegistry.export(), "tracker":
HeartbeatTracker.export(), "outputs": NodeOutputs.export(), "control": NodeControl.export(),
"values": {node_id: {metric: last reading}}}` ("outputs" and "values" are optional: stores
written before they existed load without them). Writes are debounced (one per
STORAGE_SAVE_DELAY however busy the home is: every live message asks for one) and flushed on
unload and at Home Assistant's final write. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.storage import Store

from .availability import AvailabilityMonitor
from .const import DOMAIN, STORAGE_SAVE_DELAY, STORAGE_VERSION
from .control import NodeControl
from .nodes import NodeRegistry
from .outputs import NodeOutputs


def node_store(hass: HomeAssistant, entry_id: str) -> Store[dict[str, Any]]:
    """Where a home's nodes, availability and offline queue are persisted."""
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}")


class NodeStorage:
    """The Store of one home, written at most once per delay."""

    def __init__(
        self, hass: HomeAssistant, entry_id: str, collect: Callable[[], dict[str, Any]]
    ) -> None:
        """`collect` builds the data to write (called when the write happens)."""
        self._store = node_store(hass, entry_id)
        self._collect = collect
        self._save_pending = False

    async def async_load(self) -> dict[str, Any]:
        """What was stored ({} on the first start)."""
        return await self._store.async_load() or {}

    def _data_to_save(self) -> dict[str, Any]:
        self._save_pending = False
        return self._collect()

    @callback
    def schedule_save(self) -> None:
        """Persist soon; writes at most once per delay, however many messages arrive.

        Store.async_delay_save re-arms its timer on every call, so calling it per heartbeat
        would postpone the write for as long as traffic flows (and cost a timer per message).
        """
        if not self._save_pending:
            self._save_pending = True
            self._store.async_delay_save(self._data_to_save, STORAGE_SAVE_DELAY)

    async def async_save(self) -> None:
        """Write now (unload)."""
        await self._store.async_save(self._data_to_save())


def collect(
    nodes: NodeRegistry,
    availability: AvailabilityMonitor,
    outputs: NodeOutputs,
    control: NodeControl,
) -> dict[str, Any]:
    """The stored format of one home."""
    return {
        "nodes": nodes.export(),
        "tracker": availability.export(),
        "outputs": outputs.export(),
        "control": control.export(),
        "values": export_values(nodes),
    }


def export_values(nodes: NodeRegistry) -> dict[str, dict[str, float]]:
    """The last reading of every metric (unmeasured ones left out: they restore as unknown).

    Kept here rather than by Home Assistant's restore cache (issue 14): the sensors are not
    RestoreSensors, so a reading is stored once per home instead of once per sensor state.
    """
    return {
        node_id: readings
        for node_id, node in nodes.items()
        if (readings := {k: v for k, v in node.values.items() if v is not None})
    }


def restore_values(stored: Any, nodes: NodeRegistry) -> None:
    """Put the stored readings back, for known nodes and metrics only (garbage skipped)."""
    if not isinstance(stored, Mapping):
        return
    for node_id, readings in stored.items():
        node = nodes.get(node_id) if isinstance(node_id, str) else None
        if node is None or not isinstance(readings, Mapping):
            continue
        for key, value in readings.items():
            if (
                key in node.metrics
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                node.values[key] = value


def restore(
    stored: dict[str, Any],
    nodes: NodeRegistry,
    availability: AvailabilityMonitor,
    outputs: NodeOutputs,
    control: NodeControl,
) -> None:
    """Load the stored format (tolerating garbage): nodes, availability, outputs, the queue,
    the last readings."""
    stored_nodes = stored.get("nodes")
    if not isinstance(stored_nodes, dict):
        return
    restored = nodes.restore(stored_nodes)
    restore_values(stored.get("values"), nodes)
    availability.restore(stored.get("tracker"), stored_nodes, restored)
    outputs.restore(stored.get("outputs"))
    control.restore(stored.get("control"))
