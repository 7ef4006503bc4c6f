"""One hub per home: the wildcard subscription and the routing of one message.

Parse the topic, decode and validate the payload (bad input: one rate-limited line, message
skipped), discover the node, then hand the message to its owners in a fixed order: availability
first (so what is written next already sees the node online), then the node's values, outputs or
command answers. Nothing else lives here. See docs/architecture.md (data flow of one message).
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import sys
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback

from .availability import AvailabilityMonitor
from .const import KEY_LAST_SEEN
from .control import NodeControl
from .homesync.protocol import (
    Category,
    MetricSpec,
    ProtocolError,
    Topic,
    check_payload,
    decode_heartbeat,
    decode_payload,
    decode_telemetry,
    parse_topic,
    subscription_topic,
    truncate,
)
from .homesync.ratelimit import RateLimitedLogger
from .homesync.stats import MessageStats
from .homesync.tracker import Tracked
from .nodes import NodeData, NodeRegistry
from .outputs import NodeOutputs
from .updates import Updates

_LOGGER = logging.getLogger(__package__)

# Parsed topics kept per known topic string (a home's nodes publish on a handful of topics each,
# and parsing one costs ~1.3 µs against ~0.1 µs for a dict hit): at most this many per node the
# home may have (bad topics are never kept); when full, the cache starts over.
TOPICS_PER_NODE = 16
# Module constants: a global lookup per comparison instead of an Enum class attribute.
_TELEMETRY = Category.TELEMETRY
_STATUS = Category.STATUS
_RESPONSE = Category.RESPONSE
# A route's kind: which quiet path its messages may take (anything else: the full path).
_HEARTBEAT = "heartbeat"
_READING = "telemetry"
_OTHER = "other"


class _Route:
    """One topic string: parsed once, then, once its node is known, the records it touches.

    The parsed-topic cache holds these (issue 14): a live message of a known node reaches
    the tracker's record of the node, the registry's record and the metric's spec through
    this one object, instead of a parsed topic and a lookup by node id in each owner. Routes
    are dropped when a node is forgotten (HomeSyncHub.async_forget), so they never point at
    a removed node's records.
    """

    __slots__ = ("kind", "name", "node", "node_id", "spec", "topic", "tracked")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.node_id = topic.node_id
        # Interned: every node's "power" is one string object, warm in the cache.
        self.name = sys.intern(topic.name)
        if topic.category is _TELEMETRY:
            self.kind = _READING
        elif topic.category is _STATUS and topic.name == "heartbeat":
            self.kind = _HEARTBEAT
        else:
            self.kind = _OTHER
        self.node: NodeData | None = None
        self.tracked: Tracked | None = None
        self.spec: MetricSpec | None = None  # a telemetry topic's metric, once the node has it


class HomeSyncHub:
    """Receives everything a home's nodes publish and routes it to its owner."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        home_id: str,
        updates: Updates,
        nodes: NodeRegistry,
        availability: AvailabilityMonitor,
        outputs: NodeOutputs,
        control: NodeControl,
        schedule_save: Callable[[], None],
        messages: MessageStats | None = None,
        on_ota_response: Callable[[str, dict[str, Any]], None],
    ) -> None:
        """Route the messages of `home_id` to the parts of the home."""
        self.hass = hass
        self.home_id = home_id
        self._updates = updates
        self._nodes = nodes
        self._availability = availability
        self._outputs = outputs
        self._control = control
        self._schedule_save = schedule_save
        # Two counters per message, nothing else (the home's statistics sample them).
        self._messages = MessageStats() if messages is None else messages
        self._on_ota_response = on_ota_response
        self._unsubscribe: list[CALLBACK_TYPE] = []
        self._warn = RateLimitedLogger(_LOGGER)
        self._routes: dict[str, _Route] = {}
        # Bound once: one attribute load per message instead of two.
        self._notify = updates.async_notify
        self._listened = updates.listened
        self._quiet_heartbeat = availability.quiet_heartbeat
        self._quiet_message = availability.quiet_message
        self._topics_max = TOPICS_PER_NODE * nodes.max_nodes + TOPICS_PER_NODE

    async def async_start(self) -> None:
        """Subscribe to everything below homesync/{home_id}/nodes/ (announce.py then announces)."""
        self._unsubscribe.append(
            await mqtt.async_subscribe(
                self.hass,
                subscription_topic(self.home_id),
                self._async_on_message,
                qos=1,
                encoding=None,
            )
        )

    @callback
    def async_stop(self) -> None:
        """Unsubscribe."""
        while self._unsubscribe:
            self._unsubscribe.pop()()

    # --- message routing (hot path: keep it O(1)) -----------------------------------------

    @callback
    def async_forget(self, node_id: str) -> None:
        """The node was removed: no kept route may point at its old records any more."""
        # Cheaper than finding the node's routes (removing many nodes stays linear): every
        # later topic is parsed once more.
        self._routes.clear()

    @callback
    def _async_on_message(self, msg: mqtt.ReceiveMessage) -> None:
        """One message. A live one of a known node that changes nothing takes one short path.

        The quiet path (docs/architecture.md, data flow of one message): the topic's route
        record, one call that decodes and checks the payload, the tracker's quiet path on the
        node's record, and for a reading the unchanged-value check; whatever is unusual (first
        message, retained, invalid, a transition, a new metric) declines before it changed
        anything and takes the full path below, which decides.
        """
        route = self._routes.get(msg.topic)
        if route is not None and (tracked := route.tracked) is not None and not msg.retain:
            kind = route.kind
            if kind is _HEARTBEAT:
                if (data := decode_heartbeat(msg.payload)) is not None and self._quiet_heartbeat(
                    tracked, data["seq"], data["uptime"], data.get("interval")
                ):
                    self._messages.received += 1
                    if KEY_LAST_SEEN in self._listened:
                        self._notify(route.node_id, KEY_LAST_SEEN)
                    self._schedule_save()
                    if (relay := data.get("relay")) is not None:
                        self._outputs.async_set_relay(route.node_id, relay)
                    if (led := data.get("led")) is not None:
                        self._outputs.async_set_led(route.node_id, led, reported=True)
                    return
            elif (
                kind is _READING
                and (spec := route.spec) is not None
                and (node := route.node) is not None
                and (data := decode_telemetry(msg.payload)) is not None
                # In the metric's unit (or none given): nothing to convert, so nothing the
                # full path could refuse (nodes.reading_of); a unit to convert goes there.
                and ((unit := data.get("unit")) is None or unit == spec.unit)
                and self._quiet_message(tracked)
            ):
                self._messages.received += 1
                if KEY_LAST_SEEN in self._listened:
                    self._notify(route.node_id, KEY_LAST_SEEN)
                self._schedule_save()
                self._nodes.async_record_plain(node, route.name, data)
                return
        self._receive(msg, route)

    def _receive(self, msg: mqtt.ReceiveMessage, route: _Route | None) -> None:
        """The full path: every check, discovery, every owner (and the route's records)."""
        messages = self._messages
        name = msg.topic
        if route is None:
            try:
                topic = parse_topic(name)
            except ProtocolError as err:
                messages.received += 1
                messages.rejected += 1
                self._warn.warning(err.kind, "Ignoring message on %s: %s", name, err)
                return
            if topic.home_id != self.home_id or topic.category is Category.COMMAND:
                # Commands are what we (or another controller) send; they come back to us
                # through the wildcard subscription and are not the node speaking.
                return
            # Only topics routed below are kept, so a hit needs none of the checks above.
            routes = self._routes
            if len(routes) >= self._topics_max:
                routes.clear()  # O(1) amortised: it took this many new topics to fill it
            route = routes[name] = _Route(topic)
        topic = route.topic
        messages.received += 1
        payload: dict[str, Any] | None = None
        try:
            payload = decode_payload(msg.payload)
            self._route(route, payload, retained=msg.retain)
        except ProtocolError as err:
            messages.rejected += 1
            if (
                payload is not None
                and topic.category is Category.RESPONSE
                and topic.name == "command"
                and not msg.retain
                and self._control.handle_invalid_response(topic.node_id, payload, str(err))
            ):
                return  # a command was waiting for it: it failed at once and said why
            self._warn.warning(
                err.kind,
                "Ignoring message on %s: %s; payload: %s",
                name,
                err,
                truncate(msg.payload),
            )

    def _route(self, route: _Route, payload: dict[str, Any], *, retained: bool) -> None:
        # Validate before discovery: garbage must not create a device, and a status or
        # response name nobody defined is neither a device nor proof of life.
        topic = route.topic
        if (data := check_payload(topic, payload)) is None:
            return
        _, node_id, category, name = topic
        nodes = self._nodes
        node = nodes.find(node_id)
        reading = None
        if category is _TELEMETRY or (category is _STATUS and name == "rssi"):
            # Units and conversion overflow are checked before discovery too.
            reading = nodes.reading(node_id, name, data, node)
        if node is None and (node := nodes.async_discover(node_id)) is None:
            return
        # Availability first, so entities written below already see the node online.
        self._availability.async_on_message(topic, data, retained=retained)
        if not retained:
            self._updates.async_notify(node_id, KEY_LAST_SEEN)
            self._schedule_save()
        if reading is not None:  # telemetry/* and status/rssi
            nodes.async_record_metric(node, name, reading)
        elif category is _STATUS:
            self._handle_status(node, name, data)
        elif category is _RESPONSE and name == "command" and not retained:
            self._control.handle_response(node_id, data)
        elif category is _RESPONSE and name == "ota" and not retained:
            self._on_ota_response(node_id, data)  # firmware updates (firmware.py)
        # What the quiet path needs next time: the node's records (a node over the cap never
        # gets here, so its messages keep taking the full path).
        route.node = node
        route.tracked = self._availability.tracked(node_id)
        if category is _TELEMETRY:
            route.spec = node.metrics.get(name)

    def _handle_status(self, node: NodeData, name: str, data: dict[str, Any]) -> None:
        if name == "heartbeat":  # first: nearly every status message is one
            if (relay := data.get("relay")) is not None:
                self._outputs.async_set_relay(node.node_id, relay)
            if (led := data.get("led")) is not None:
                self._outputs.async_set_led(node.node_id, led, reported=True)
        elif name == "relay":
            self._outputs.async_set_relay(node.node_id, data["state"])
        elif name == "led":
            self._outputs.async_set_led(node.node_id, data["state"], reported=True)
        elif name == "firmware":
            self._nodes.async_set_firmware(node, data["version"])
        elif name == "online" and (firmware := data.get("firmware")):
            self._nodes.async_set_firmware(node, firmware)
