"""The node registry of one home: discovery under the node cap, devices, telemetry values.

A node exists from its first valid message (or from storage) until its device is removed. The
registry owns what is known about it besides availability and outputs: its metrics and their
last values, its firmware, and its device in Home Assistant's device registry. Over the cap
(`max_nodes` option) a node is ignored with a rate-limited warning and one repair issue; so is
a metric beyond the per-node cap (`max_metrics` option: one node inventing names cannot create
thousands of sensors).
See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
import logging
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, issue_registry as ir

from .const import (
    DOMAIN,
    HUB,
    ISSUE_MAX_METRICS,
    ISSUE_MAX_NODES,
    KEY_FIRMWARE,
    KEY_METRIC_ADDED,
    KEY_NODE_ADDED,
)
from .device import hub_device_info, node_device_info
from .homesync.protocol import MIN_QUALITY, MetricSpec, metric_spec, normalize_value
from .homesync.ratelimit import RateLimitedLogger
from .updates import Updates

_LOGGER = logging.getLogger(__package__)
_MISSING: Any = object()


@dataclass(slots=True)
class NodeData:
    """What is known about one node besides availability and outputs."""

    node_id: str
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    # None: the node said it cannot measure the metric now; `unmeasured` holds its reason.
    values: dict[str, float | None] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
    firmware: str | None = None
    device_id: str | None = None


# A validated reading in its metric's unit: (spec, value, unmeasured); value None with the
# reason it is missing. A plain tuple: one is built per reading (a NamedTuple costs ~0.2 µs).
type Reading = tuple[MetricSpec, float | None, str | None]


def reading_of(spec: MetricSpec, data: Mapping[str, Any]) -> Reading | None:
    """`NodeRegistry.reading()` with the metric's spec known (the hub keeps it per topic).

    None: low quality, dropped (the caller logs it with `log_dropped`). Raises ProtocolError
    like `reading()`.
    """
    quality = data.get("quality")
    if quality is not None and quality < MIN_QUALITY:
        return None
    if (value := data["value"]) is None:
        return (spec, None, str(data.get("reason") or "unmeasured"))
    unit = data.get("unit")
    if unit is None or unit == spec.unit:  # normalize_value's no-conversion case, inline
        return (spec, value, None)
    return (spec, normalize_value(spec, value, unit), None)


def log_dropped(node_id: str, key: str, data: Mapping[str, Any]) -> None:
    """The debug line of a reading dropped for its low quality."""
    _LOGGER.debug("Dropping %s/%s: quality %s", node_id, key, data.get("quality"))


class NodeRegistry(Mapping[str, NodeData]):
    """The discovered nodes of one home, by node id."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        entry_id: str,
        home_id: str,
        max_nodes: int,
        max_metrics: int,
        updates: Updates,
        schedule_save: Callable[[], None],
    ) -> None:
        """An empty registry; `restore` and `async_discover` fill it."""
        self.hass = hass
        self._entry_id = entry_id
        self._home_id = home_id
        self._max_nodes = max_nodes
        self._max_metrics = max_metrics
        self._metric_cap_reported = False
        self._updates = updates
        self._schedule_save = schedule_save
        self._nodes: dict[str, NodeData] = {}
        self._warn = RateLimitedLogger(_LOGGER)
        self._cap_reported = False
        # What the last (HUB, KEY_NODE_ADDED) / (HUB, KEY_METRIC_ADDED) notification announced.
        self.newest_node: str | None = None
        self.newest_metric: tuple[str, str] | None = None

    @property
    def max_nodes(self) -> int:
        """The configured cap on the home's nodes."""
        return self._max_nodes

    def __getitem__(self, node_id: str) -> NodeData:
        """The node with this id (KeyError when unknown)."""
        return self._nodes[node_id]

    def __iter__(self) -> Iterator[str]:
        """Node ids in discovery order."""
        return iter(self._nodes)

    def __len__(self) -> int:
        """How many nodes the home has."""
        return len(self._nodes)

    def find(self, node_id: str) -> NodeData | None:
        """The node, or None when unknown (O(1); `Mapping.get` is a Python-level detour)."""
        return self._nodes.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        """Whether the node is known (O(1); the hot path asks per message)."""
        return node_id in self._nodes

    # --- devices --------------------------------------------------------------------------

    def async_register_devices(self) -> None:
        """Create (or refresh) the hub device and the device of every known node."""
        dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self._entry_id, **hub_device_info(self._home_id)
        )
        for node in self._nodes.values():
            self._register_device(node)

    def _register_device(self, node: NodeData) -> None:
        info = node_device_info(self._home_id, node.node_id)
        if node.firmware is not None:
            info["sw_version"] = node.firmware
        device = dr.async_get(self.hass).async_get_or_create(config_entry_id=self._entry_id, **info)
        node.device_id = device.id

    def device_id(self, node_id: str) -> str | None:
        """The node's device id (None for an unknown node)."""
        node = self._nodes.get(node_id)
        return None if node is None else node.device_id

    def node_name(self, node_id: str) -> str:
        """The node's name as the user sees it (their device name, else the node id)."""
        node = self._nodes.get(node_id)
        if node is not None and node.device_id is not None:
            device = dr.async_get(self.hass).async_get(node.device_id)
            if device is not None:
                return device.name_by_user or device.name or node_id
        return node_id

    # --- discovery ------------------------------------------------------------------------

    @callback
    def async_discover(self, node_id: str) -> NodeData | None:
        """The node, discovering it on its first message (None when over the cap)."""
        if (node := self._nodes.get(node_id)) is not None:
            return node
        if len(self._nodes) >= self._max_nodes:
            self._report_cap(node_id)
            return None
        node = NodeData(node_id)
        self._nodes[node_id] = node
        self._register_device(node)
        self._schedule_save()
        _LOGGER.info("Discovered HomeSync node %s in home %s", node_id, self._home_id)
        self.newest_node = node_id
        self._updates.async_notify(HUB, KEY_NODE_ADDED)
        return node

    def _report_cap(self, node_id: str) -> None:
        self._warn.warning(
            "max_nodes",
            "Home %s already has %d nodes (the configured maximum); ignoring node %s",
            self._home_id,
            self._max_nodes,
            node_id,
        )
        if self._cap_reported:
            return
        self._cap_reported = True
        self._create_cap_issue(
            ISSUE_MAX_NODES, {"home_id": self._home_id, "max_nodes": str(self._max_nodes)}
        )

    def _report_metric_cap(self, node_id: str, key: str) -> None:
        self._warn.warning(
            "max_metrics",
            "HomeSync node %s/%s already has %d metrics (the configured maximum per node); "
            "ignoring its metric %s",
            self._home_id,
            node_id,
            self._max_metrics,
            key,
        )
        if self._metric_cap_reported:
            return
        self._metric_cap_reported = True
        self._create_cap_issue(
            ISSUE_MAX_METRICS,
            {
                "home_id": self._home_id,
                "node_id": node_id,
                "max_metrics": str(self._max_metrics),
            },
        )

    def _create_cap_issue(self, issue: str, placeholders: dict[str, str]) -> None:
        """One repair issue (a warning, not fixable) per cap and entry."""
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"{issue}_{self._entry_id}",
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=issue,
            translation_placeholders=placeholders,
        )

    @callback
    def async_forget(self, node_id: str) -> bool:
        """Drop a node; False when it was not known. Clears the cap issue once below the cap."""
        if self._nodes.pop(node_id, None) is None:
            return False
        if self._cap_reported and len(self._nodes) < self._max_nodes:
            self._cap_reported = False
            ir.async_delete_issue(self.hass, DOMAIN, f"{ISSUE_MAX_NODES}_{self._entry_id}")
        return True

    # --- what the node reports ------------------------------------------------------------

    def reading(
        self, node_id: str, key: str, data: Mapping[str, Any], node: NodeData | None
    ) -> Reading | None:
        """A validated reading in its metric's unit, without storing it (None: low quality).

        `node` is `find(node_id)` (the hub has it already). Raises ProtocolError for a unit the
        metric cannot take or a value that overflows when converted; the hub asks before
        discovery, so such a message creates no device.
        """
        spec = node.metrics.get(key) if node is not None else None
        reading = reading_of(spec or metric_spec(key, data.get("unit")), data)
        if reading is None:
            log_dropped(node_id, key, data)
        return reading

    @callback
    def async_record_metric(self, node: NodeData, key: str, reading: Reading) -> None:
        """A reading from `reading()`: store it, announce it (a new metric under the cap)."""
        if key in node.metrics:
            self.async_record_known(node, key, reading)
            return
        if len(node.metrics) >= self._max_metrics:
            self._report_metric_cap(node.node_id, key)
            return
        spec, value, unmeasured = reading
        node.values[key] = value
        if unmeasured is not None:
            node.unmeasured[key] = unmeasured
        node.metrics[key] = spec
        self._schedule_save()
        self.newest_metric = (node.node_id, key)
        self._updates.async_notify(HUB, KEY_METRIC_ADDED)

    @callback
    def async_record_known(self, node: NodeData, key: str, reading: Reading) -> None:
        """`async_record_metric` for a metric the node has: store and announce a change."""
        _, value, unmeasured = reading
        values = node.values
        old = values.get(key, _MISSING)
        # A reason is kept exactly while the value is None (`unmeasured`), so a reading whose
        # old value is a number has no reason to drop: its dict is not even looked at.
        if unmeasured is not None:
            changed = node.unmeasured.get(key) != unmeasured
            node.unmeasured[key] = unmeasured
        elif old is None:
            changed = node.unmeasured.pop(key, None) is not None
        else:
            changed = False
        if changed or old != value:
            values[key] = value
            self._updates.async_notify(node.node_id, key)
        # else: the same reading again (the common case): nothing to tell anyone

    @callback
    def async_set_firmware(self, node: NodeData, version: str) -> None:
        """The node reported its firmware version (also shown on its device)."""
        if node.firmware == version:
            return
        node.firmware = version
        self._schedule_save()
        if node.device_id is not None:
            dr.async_get(self.hass).async_update_device(node.device_id, sw_version=version)
        self._updates.async_notify(node.node_id, KEY_FIRMWARE)

    # --- persistence ----------------------------------------------------------------------

    def restore(self, stored: Mapping[Any, Any]) -> list[str]:
        """Known nodes from storage (garbage skipped); returns the ids restored."""
        restored: list[str] = []
        for node_id, raw in stored.items():
            if not isinstance(node_id, str) or not isinstance(raw, dict):
                continue
            node = NodeData(node_id, firmware=raw.get("firmware"))
            metrics = raw.get("metrics")
            if isinstance(metrics, dict):
                for key, unit in metrics.items():
                    node.metrics[key] = metric_spec(key, unit)
            self._nodes[node_id] = node
            restored.append(node_id)
        return restored

    def export(self) -> dict[str, Any]:
        """JSON-able node metadata: firmware and metric units (values come back live)."""
        return {
            node.node_id: {
                "firmware": node.firmware,
                "metrics": {key: spec.unit for key, spec in node.metrics.items()},
            }
            for node in self._nodes.values()
        }
