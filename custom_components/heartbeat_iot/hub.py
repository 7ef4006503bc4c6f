"""One hub per home: the wildcard subscription, routing, node discovery and persistence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
import logging
import math
from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HassJob, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_send
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util
from homeassistant.util.signal_type import SignalType

from .const import (
    CONF_FLAP_TRANSITIONS,
    CONF_FLAP_WINDOW,
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MAX_NODES,
    CONF_MIN_TIMEOUT,
    CONF_OFFLINE_RATIO,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
    DOMAIN,
    ISSUE_MAX_NODES,
    KEY_FIRMWARE,
    KEY_LAST_SEEN,
    KEY_RELAY,
    KEY_STATUS,
    MANUFACTURER,
    STORAGE_SAVE_DELAY,
    STORAGE_VERSION,
)
from .control import NodeControl
from .homesync.protocol import (
    MIN_QUALITY,
    Category,
    MetricSpec,
    ProtocolError,
    Topic,
    decode_payload,
    metric_spec,
    normalize_value,
    parse_topic,
    schema_for,
    subscription_topic,
    truncate,
    validate,
)
from .homesync.ratelimit import RateLimitedLogger
from .homesync.tracker import (
    Availability,
    HeartbeatTracker,
    NodeStatus,
    Outcome,
    TrackerEvent,
    TrackerSettings,
)

_LOGGER = logging.getLogger(__package__)

# Seconds between the points the deadline timer may fire at (see _schedule_timer).
TIMER_GRID = 0.5
# Listener "node id" of the home's own (fleet) entities; node ids are never empty.
HUB = ""


@dataclass(slots=True)
class NodeData:
    """What the hub knows about one node."""

    node_id: str
    metrics: dict[str, MetricSpec] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    firmware: str | None = None
    device_id: str | None = None
    logged_state: Availability | None = None
    relay: str | None = None  # "on" / "off" as last reported by status/relay


def node_identifier(home_id: str, node_id: str) -> tuple[str, str]:
    """Device registry identifier of a node."""
    return (DOMAIN, f"{home_id}/{node_id}")


def hub_identifier(home_id: str) -> tuple[str, str]:
    """Device registry identifier of a home's hub device."""
    return (DOMAIN, home_id)


def node_store(hass: HomeAssistant, entry_id: str) -> Store[dict[str, Any]]:
    """Where a home's nodes, availability and offline queue are persisted."""
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}")


def signal_new_metric(entry_id: str) -> SignalType[str, str]:
    """Dispatcher signal: (node_id, metric key) got its first reading."""
    return SignalType(f"{DOMAIN}_new_metric_{entry_id}")


def signal_new_node(entry_id: str) -> SignalType[str]:
    """Dispatcher signal: a node was discovered (its per-node entities can be added)."""
    return SignalType(f"{DOMAIN}_new_node_{entry_id}")


def tracker_settings(options: dict[str, Any]) -> TrackerSettings:
    """Tracker settings from the entry options (defaults for anything missing)."""
    merged = {**DEFAULT_OPTIONS, **options}
    return TrackerSettings(
        default_interval=float(merged[CONF_HEARTBEAT_INTERVAL]),
        multiplier=float(merged[CONF_TIMEOUT_MULTIPLIER]),
        min_timeout=float(merged[CONF_MIN_TIMEOUT]),
        flap_transitions=int(merged[CONF_FLAP_TRANSITIONS]),
        flap_window=float(merged[CONF_FLAP_WINDOW]),
    )


def event_type(kind: str) -> str:
    """Bus event type for a node event kind (online, offline, rebooted, flapping)."""
    return f"{DOMAIN}_node_{kind}"


type UpdateListener = Callable[[], None]
type EventListener = Callable[[TrackerEvent], None]


class HomeSyncHub:
    """Receives everything a home's nodes publish and keeps the node model."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry[Any]) -> None:
        """Set up the hub for one config entry (one home)."""
        self.hass = hass
        self.entry = entry
        self.home_id: str = entry.data[CONF_HOME_ID]
        self.nodes: dict[str, NodeData] = {}
        self._store = node_store(hass, entry.entry_id)
        self._listeners: dict[tuple[str, str], list[UpdateListener]] = {}
        self._event_listeners: dict[str, list[EventListener]] = {}
        self._unsubscribe: list[CALLBACK_TYPE] = []
        self._warn = RateLimitedLogger(_LOGGER)
        self._cap_reported = False
        self._save_pending = False
        self.tracker = HeartbeatTracker(tracker_settings(dict(entry.options)), self._now)
        self._timer: CALLBACK_TYPE | None = None
        self._timer_due: float | None = None
        self._timer_job = HassJob(self._async_on_timer, f"{DOMAIN} deadlines {self.home_id}")
        # Commands, confirmations and the offline queue (DESIGN §4).
        self.control = NodeControl(hass, self)

    @staticmethod
    def _now() -> float:
        return dt_util.utcnow().timestamp()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def max_nodes(self) -> int:
        """The node cap from the options."""
        return int(self.entry.options.get(CONF_MAX_NODES, DEFAULT_OPTIONS[CONF_MAX_NODES]))

    @property
    def offline_ratio_threshold(self) -> float:
        """Percentage of offline nodes above which the fleet is degraded."""
        return float(
            self.entry.options.get(CONF_OFFLINE_RATIO, DEFAULT_OPTIONS[CONF_OFFLINE_RATIO])
        )

    @property
    def broker_connected(self) -> bool:
        """Whether Home Assistant's own MQTT link is up (else we cannot know anything)."""
        return self.tracker.broker_connected

    def node_status(self, node_id: str) -> NodeStatus | None:
        """The tracker's view of a node."""
        return self.tracker.status(node_id)

    def node_online(self, node_id: str) -> bool:
        """True when the broker is up and the node is online: telemetry/relay are trustworthy."""
        status = self.tracker.status(node_id)
        return self.broker_connected and status is not None and status.state is Availability.ONLINE

    def fleet_counts(self) -> tuple[int, int]:
        """(online, offline) nodes of this home."""
        return self.tracker.counts()

    def offline_ratio(self) -> float:
        """Offline nodes as a percentage of all nodes (0 for an empty home)."""
        online, offline = self.tracker.counts()
        total = online + offline
        return 100.0 * offline / total if total else 0.0

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
        # Broker state first: a restart while the broker is unreachable must not expire anyone.
        self.tracker.set_broker_connected(mqtt.is_connected(self.hass))
        self._unsubscribe.append(
            mqtt.async_subscribe_connection_status(self.hass, self._async_on_connection)
        )
        self._unsubscribe.append(
            await mqtt.async_subscribe(
                self.hass,
                subscription_topic(self.home_id),
                self._async_on_message,
                qos=1,
                encoding=None,
            )
        )
        self._schedule_timer()

    async def async_stop(self) -> None:
        """Unsubscribe, stop the timer and write what is pending."""
        while self._unsubscribe:
            self._unsubscribe.pop()()
        self._cancel_timer()
        self.control.stop()
        await self._store.async_save(self._data_to_save())

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
    def async_add_event_listener(self, node_id: str, listener: EventListener) -> CALLBACK_TYPE:
        """Call `listener` with each event fired for the node; returns the remover."""
        listeners = self._event_listeners.setdefault(node_id, [])
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    @callback
    def async_notify(self, node_id: str, key: str) -> None:
        """Tell the entities listening on (node, key) that what they show may have changed."""
        for listener in self._listeners.get((node_id, key), ()):
            listener()

    @callback
    def async_set_relay(self, node_id: str, state: str) -> None:
        """The relay is in `state` ("on"/"off"), as reported or confirmed by the node."""
        node = self.nodes.get(node_id)
        if node is not None and node.relay != state:
            node.relay = state
            self.async_notify(node_id, KEY_RELAY)

    # --- availability (tracker) -----------------------------------------------------------

    @callback
    def _async_on_connection(self, connected: bool) -> None:
        """Home Assistant's MQTT link went up or down: every entity's availability changes."""
        if connected == self.tracker.broker_connected:
            return
        _LOGGER.info(
            "MQTT broker %s: HomeSync nodes of %s are %s",
            "connected" if connected else "disconnected",
            self.home_id,
            "tracked again after a grace period" if connected else "unavailable until it returns",
        )
        # The tracker reports every node as changed; the fleet entities are told even when
        # the home has no node yet.
        self._apply(self.tracker.set_broker_connected(connected))
        self.async_notify(HUB, KEY_STATUS)

    @callback
    def _apply(self, outcome: Outcome) -> None:
        """Write what the tracker says changed, fire its events, re-arm the deadline timer."""
        if outcome.changed:
            for node_id in outcome.changed:
                came_online = self._log_transition(node_id)
                self.async_notify(node_id, KEY_STATUS)
                if came_online:
                    self.control.node_online(node_id)
            self.async_notify(HUB, KEY_STATUS)
            self.schedule_save()
        for event in outcome.events:
            self._fire(event)
        self._schedule_timer()

    def _log_transition(self, node_id: str) -> bool:
        """Log once when a node becomes unavailable and once when it is back.

        Returns True when the node just became online (the offline queue is sent then).
        """
        node = self.nodes.get(node_id)
        status = self.tracker.status(node_id)
        if node is None or status is None or node.logged_state is status.state:
            return False
        if status.state is Availability.OFFLINE and node.logged_state is not None:
            _LOGGER.info(
                "HomeSync node %s/%s is offline (%s)", self.home_id, node_id, status.reason
            )
        elif status.state is Availability.ONLINE and node.logged_state is Availability.OFFLINE:
            _LOGGER.info("HomeSync node %s/%s is back online", self.home_id, node_id)
        node.logged_state = status.state
        return status.state is Availability.ONLINE

    def _fire(self, event: TrackerEvent) -> None:
        node = self.nodes.get(event.node_id)
        self.hass.bus.async_fire(
            event_type(event.type),
            {
                "device_id": node.device_id if node else None,
                "home_id": self.home_id,
                "node_id": event.node_id,
                "reason": event.reason,
            },
        )
        for listener in self._event_listeners.get(event.node_id, ()):
            listener(event)

    def _schedule_timer(self) -> None:
        """Keep ONE timer armed at the tracker's earliest deadline (DESIGN §3 cost rule).

        The timer fires on a 0.5 s grid: the lazy heap holds one entry per node that comes
        due about once per timeout, so arming at each exact entry would wake N/timeout times
        per second (85/s for 10 000 nodes, see benchmarks/). On the grid it wakes at most
        twice a second and every entry due by then is handled in one go; detection stays
        within timeout + 0.5 s. The grid point is also strictly after the deadline, which
        silence needs (`now > deadline`) despite datetimes' microsecond resolution.
        """
        due = self.tracker.next_deadline()
        if due is None:
            self._cancel_timer()
            return
        fire_at = (math.floor(due / TIMER_GRID) + 1) * TIMER_GRID
        if self._timer_due is not None and self._timer_due <= fire_at:
            return  # already armed early enough; the tracker re-checks lazily
        self._cancel_timer()
        self._timer_due = fire_at
        self._timer = async_track_point_in_utc_time(
            self.hass, self._timer_job, dt_util.utc_from_timestamp(fire_at)
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer()
        self._timer = None
        self._timer_due = None

    @callback
    def _async_on_timer(self, _now: datetime) -> None:
        self._timer = None
        self._timer_due = None
        self._apply(self.tracker.tick())

    @callback
    def async_set_timeout_override(self, node_id: str, seconds: float | None) -> None:
        """Per-node silence timeout (None: back to the computed one)."""
        self._apply(self.tracker.set_timeout_override(node_id, seconds))

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
        # Validate before discovery: garbage must not create a device.
        schema = schema_for(topic)
        data = validate(schema, payload) if schema is not None else payload
        if (node := self._node(topic.node_id)) is None:
            return
        # Availability first, so entities written below already see the node online.
        self._apply(self._track(topic, data, retained=retained))
        if not retained:
            self.async_notify(node.node_id, KEY_LAST_SEEN)
            self.schedule_save()
        if topic.category is Category.TELEMETRY:
            self._handle_metric(node, topic.name, data)
        elif topic.category is Category.STATUS:
            self._handle_status(node, topic.name, data)
        elif topic.category is Category.RESPONSE and topic.name == "command" and not retained:
            self.control.handle_response(node.node_id, data)

    def _track(self, topic: Topic, data: dict[str, Any], *, retained: bool) -> Outcome:
        node_id = topic.node_id
        if topic.category is Category.STATUS and topic.name == "online":
            return self.tracker.on_online_status(
                node_id,
                data["online"],
                reason=data.get("reason", ""),
                uptime=data.get("uptime"),
                retained=retained,
            )
        if topic.category is Category.STATUS and topic.name == "heartbeat":
            return self.tracker.on_heartbeat(
                node_id,
                seq=data["seq"],
                uptime=data["uptime"],
                interval=data.get("interval"),
                retained=retained,
            )
        return self.tracker.on_message(node_id, retained=retained)

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
            self.schedule_save()
            async_dispatcher_send(
                self.hass, signal_new_metric(self.entry.entry_id), node.node_id, key
            )
        else:
            self.async_notify(node.node_id, key)

    def _handle_status(self, node: NodeData, name: str, data: dict[str, Any]) -> None:
        if name == "rssi":
            self._handle_metric(node, "rssi", data)
        elif name == "relay":
            self.async_set_relay(node.node_id, data["state"])
        elif name == "firmware":
            self._set_firmware(node, data["version"])
        elif name == "online" and (firmware := data.get("firmware")):
            self._set_firmware(node, firmware)

    def _set_firmware(self, node: NodeData, version: str) -> None:
        if node.firmware == version:
            return
        node.firmware = version
        self.schedule_save()
        if node.device_id is not None:
            dr.async_get(self.hass).async_update_device(node.device_id, sw_version=version)
        self.async_notify(node.node_id, KEY_FIRMWARE)

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
        self.schedule_save()
        _LOGGER.info("Discovered HomeSync node %s in home %s", node_id, self.home_id)
        async_dispatcher_send(self.hass, signal_new_node(self.entry.entry_id), node_id)
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
        self.tracker.forget(node_id)
        self.control.forget(node_id)
        self._schedule_timer()
        self.async_notify(HUB, KEY_STATUS)
        self.schedule_save()
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
        tracked = stored.get("tracker")
        if isinstance(tracked, dict):
            # DESIGN §3 rule 6: recent last_seen => online with the remaining deadline.
            self.tracker.restore({k: v for k, v in tracked.items() if k in nodes})
        self.control.restore(stored.get("control"))
        for node_id, raw in nodes.items():
            if not isinstance(node_id, str) or not isinstance(raw, dict):
                continue
            node = NodeData(node_id, firmware=raw.get("firmware"))
            metrics = raw.get("metrics")
            if isinstance(metrics, dict):
                for key, unit in metrics.items():
                    node.metrics[key] = metric_spec(key, unit)
            self.nodes[node_id] = node
            if (status := self.tracker.status(node_id)) is not None:
                node.logged_state = status.state
            else:  # stored before the tracker existed: known, but not seen yet
                self.tracker.on_message(node_id, retained=True)

    def _data_to_save(self) -> dict[str, Any]:
        self._save_pending = False
        return {
            "nodes": {
                node.node_id: {
                    "firmware": node.firmware,
                    "metrics": {key: spec.unit for key, spec in node.metrics.items()},
                }
                for node in self.nodes.values()
            },
            "tracker": self.tracker.export(),
            "control": self.control.export(),
        }

    @callback
    def schedule_save(self) -> None:
        """Persist soon; writes at most once per delay, however many messages arrive.

        Store.async_delay_save re-arms its timer on every call, so calling it per heartbeat
        would postpone the write for as long as traffic flows (and cost a timer per message).
        """
        if not self._save_pending:
            self._save_pending = True
            self._store.async_delay_save(self._data_to_save, STORAGE_SAVE_DELAY)
