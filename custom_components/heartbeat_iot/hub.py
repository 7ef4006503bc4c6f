"""One hub per home: the wildcard subscription, routing, node discovery and persistence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import logging
from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.storage import Store
from homeassistant.util.signal_type import SignalType

from .const import (
    CONF_HOME_ID,
    CONF_MAX_NODES,
    DEFAULT_MAX_NODES,
    DOMAIN,
    ISSUE_MAX_NODES,
    MANUFACTURER,
    STORAGE_SAVE_DELAY,
    STORAGE_VERSION,
)
from .logutil import RateLimitedLogger
from .protocol import (
    MIN_QUALITY,
    STATUS_SCHEMAS,
    TELEMETRY_SCHEMA,
    Category,
    MetricSpec,
    ProtocolError,
    Topic,
    decode_payload,
    metric_spec,
    normalize_value,
    parse_topic,
    subscription_topic,
    truncate,
    validate,
)

_LOGGER = logging.getLogger(__package__)

# Entity keys a node always has, besides one per metric.
KEY_FIRMWARE = "firmware"


@dataclass(slots=True)
class NodeData:
    """What the hub knows about one node."""

    node_id: str
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    firmware: str | None = None
    device_id: str | None = None


def node_identifier(home_id: str, node_id: str) -> tuple[str, str]:
    """Device registry identifier of a node."""
    return (DOMAIN, f"{home_id}/{node_id}")


def hub_identifier(home_id: str) -> tuple[str, str]:
    """Device registry identifier of a home's hub device."""
    return (DOMAIN, home_id)


def signal_new_metric(entry_id: str) -> SignalType[str, str]:
    """Dispatcher signal: (node_id, metric key) got its first reading."""
    return SignalType(f"{DOMAIN}_new_metric_{entry_id}")


type UpdateListener = Callable[[], None]


class HomeSyncHub:
    """Receives everything a home's nodes publish and keeps the node model."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any]) -> None:
        """Set up the hub for one config entry (one home)."""
        self.hass = hass
        self.entry = entry
        self.home_id: str = entry.data[CONF_HOME_ID]
        self.nodes: dict[str, NodeData] = {}
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}"
        )
        self._listeners: dict[tuple[str, str], list[UpdateListener]] = {}
        self._unsubscribe: CALLBACK_TYPE | None = None
        self._warn = RateLimitedLogger(_LOGGER)
        self._cap_reported = False

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def max_nodes(self) -> int:
        """The node cap from the options."""
        return int(self.entry.options.get(CONF_MAX_NODES, DEFAULT_MAX_NODES))

    @property
    def hub_device_info(self) -> DeviceInfo:
        """Device info of the home's hub device."""
        return DeviceInfo(
            identifiers={hub_identifier(self.home_id)},
            name=f"HomeSync {self.home_id}",
            manufacturer=MANUFACTURER,
            model="Home",
            entry_type=DeviceEntryType.SERVICE,
        )

    def node_device_info(self, node_id: str) -> DeviceInfo:
        """Device info of a node."""
        return DeviceInfo(
            identifiers={node_identifier(self.home_id, node_id)},
            name=node_id,
            manufacturer=MANUFACTURER,
            model="HomeSync node",
            via_device=hub_identifier(self.home_id),
        )

    async def async_start(self) -> None:
        """Restore known nodes, then subscribe (so entities exist before any message)."""
        stored = await self._store.async_load() or {}
        self._restore(stored)
        dev_reg = dr.async_get(self.hass)
        dev_reg.async_get_or_create(config_entry_id=self.entry.entry_id, **self.hub_device_info)
        for node in self.nodes.values():
            self._register_device(node)
        self._unsubscribe = await mqtt.async_subscribe(
            self.hass,
            subscription_topic(self.home_id),
            self._async_on_message,
            qos=1,
            encoding=None,
        )

    async def async_stop(self) -> None:
        """Unsubscribe and write what is pending."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._store.async_save(self._data_to_save())

    async def async_remove_store(self) -> None:
        """Forget everything persisted (entry removed)."""
        await self._store.async_remove()

    # --- listeners (entities) -------------------------------------------------------------

    @callback
    def async_add_listener(self, node_id: str, key: str, listener: UpdateListener) -> CALLBACK_TYPE:
        """Call `listener` when (node, key) changes; returns the remover."""
        listeners = self._listeners.setdefault((node_id, key), [])
        listeners.append(listener)

        @callback
        def remove() -> None:
            listeners.remove(listener)
            if not listeners:
                self._listeners.pop((node_id, key), None)

        return remove

    @callback
    def _notify(self, node_id: str, key: str) -> None:
        for listener in self._listeners.get((node_id, key), ()):
            listener()

    # --- message routing (hot path: keep it O(1)) -----------------------------------------

    @callback
    def _async_on_message(self, msg: mqtt.ReceiveMessage) -> None:
        try:
            topic = parse_topic(msg.topic)
        except ProtocolError as err:
            self._warn.warning(err.kind, "Ignoring message on %s: %s", msg.topic, err)
            return
        if topic.home_id != self.home_id or topic.category is Category.COMMAND:
            # Commands are what we (or another controller) send; they come back to us
            # through the wildcard subscription and are not the node speaking.
            return
        try:
            payload = decode_payload(msg.payload)
            self._route(topic, payload, retained=msg.retain)
        except ProtocolError as err:
            self._warn.warning(
                err.kind,
                "Ignoring message on %s: %s; payload: %s",
                msg.topic,
                err,
                truncate(msg.payload),
            )

    def _route(self, topic: Topic, payload: dict[str, Any], *, retained: bool) -> None:
        if topic.category is Category.TELEMETRY:
            data = validate(TELEMETRY_SCHEMA, payload)
            if (node := self._node(topic.node_id)) is not None:
                self._handle_metric(node, topic.name, data)
            return
        if topic.category is Category.STATUS:
            schema = STATUS_SCHEMAS.get(topic.name)
            data = validate(schema, payload) if schema is not None else payload
            if (node := self._node(topic.node_id)) is not None:
                self._handle_status(node, topic.name, data)
            return
        # Responses are matched to commands elsewhere; here they only discover the node.
        self._node(topic.node_id)

    def _handle_metric(self, node: NodeData, key: str, data: dict[str, Any]) -> None:
        quality = data.get("quality")
        if quality is not None and quality < MIN_QUALITY:
            _LOGGER.debug("Dropping %s/%s: quality %s", node.node_id, key, quality)
            return
        spec = node.metrics.get(key) or metric_spec(key, data.get("unit"))
        value = normalize_value(spec, data["value"], data.get("unit"))
        is_new = key not in node.metrics
        node.values[key] = value
        if is_new:
            node.metrics[key] = spec
            self._schedule_save()
            async_dispatcher_send(
                self.hass, signal_new_metric(self.entry.entry_id), node.node_id, key
            )
        else:
            self._notify(node.node_id, key)

    def _handle_status(self, node: NodeData, name: str, data: dict[str, Any]) -> None:
        if name == "rssi":
            self._handle_metric(node, "rssi", data)
        elif name == "firmware":
            self._set_firmware(node, data["version"])
        elif name == "online" and (firmware := data.get("firmware")):
            self._set_firmware(node, firmware)

    def _set_firmware(self, node: NodeData, version: str) -> None:
        if node.firmware == version:
            return
        node.firmware = version
        self._schedule_save()
        if node.device_id is not None:
            dr.async_get(self.hass).async_update_device(node.device_id, sw_version=version)
        self._notify(node.node_id, KEY_FIRMWARE)

    # --- discovery ------------------------------------------------------------------------

    def _node(self, node_id: str) -> NodeData | None:
        """The node, discovering it on its first message (None when over the cap)."""
        if (node := self.nodes.get(node_id)) is not None:
            return node
        if len(self.nodes) >= self.max_nodes:
            self._report_cap(node_id)
            return None
        node = NodeData(node_id)
        self.nodes[node_id] = node
        self._register_device(node)
        self._schedule_save()
        _LOGGER.info("Discovered HomeSync node %s in home %s", node_id, self.home_id)
        return node

    def _register_device(self, node: NodeData) -> None:
        info = self.node_device_info(node.node_id)
        if node.firmware is not None:
            info["sw_version"] = node.firmware
        device = dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self.entry.entry_id, **info
        )
        node.device_id = device.id

    def _report_cap(self, node_id: str) -> None:
        self._warn.warning(
            "max_nodes",
            "Home %s already has %d nodes (the configured maximum); ignoring node %s",
            self.home_id,
            self.max_nodes,
            node_id,
        )
        if self._cap_reported:
            return
        self._cap_reported = True
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"{ISSUE_MAX_NODES}_{self.entry.entry_id}",
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_MAX_NODES,
            translation_placeholders={"home_id": self.home_id, "max_nodes": str(self.max_nodes)},
        )

    @callback
    def async_forget_node(self, node_id: str) -> None:
        """Drop a node (its device was removed in the UI); it returns on its next message."""
        if self.nodes.pop(node_id, None) is None:
            return
        self._schedule_save()
        if self._cap_reported and len(self.nodes) < self.max_nodes:
            self._cap_reported = False
            ir.async_delete_issue(self.hass, DOMAIN, f"{ISSUE_MAX_NODES}_{self.entry.entry_id}")

    def node_id_for_device(self, device: dr.DeviceEntry) -> str | None:
        """The node id behind a device of this home, if it is a node device."""
        prefix = f"{self.home_id}/"
        for domain, ident in device.identifiers:
            if domain == DOMAIN and ident.startswith(prefix):
                return ident.removeprefix(prefix)
        return None

    # --- persistence ----------------------------------------------------------------------

    def _restore(self, stored: dict[str, Any]) -> None:
        nodes = stored.get("nodes")
        if not isinstance(nodes, dict):
            return
        for node_id, raw in nodes.items():
            if not isinstance(node_id, str) or not isinstance(raw, dict):
                continue
            node = NodeData(node_id, firmware=raw.get("firmware"))
            metrics = raw.get("metrics")
            if isinstance(metrics, dict):
                for key, unit in metrics.items():
                    node.metrics[key] = metric_spec(key, unit)
            self.nodes[node_id] = node

    def _data_to_save(self) -> dict[str, Any]:
        return {
            "nodes": {
                node.node_id: {
                    "firmware": node.firmware,
                    "metrics": {key: spec.unit for key, spec in node.metrics.items()},
                }
                for node in self.nodes.values()
            }
        }

    @callback
    def _schedule_save(self) -> None:
        self._store.async_delay_save(self._data_to_save, STORAGE_SAVE_DELAY)
