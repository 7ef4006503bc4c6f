"""Availability glue: the HeartbeatTracker of one home, its single timer, logs and events.

`homesync/tracker.py` decides (pure, clock injected); this module feeds it the messages the hub
routes and HA's MQTT connection state, keeps ONE timer at the tracker's earliest deadline, logs
transitions once, fires the bus events automations use, and notifies entities through
`updates.Updates`. See docs/architecture.md (availability model, lazy-heap invariant).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
import logging
import math
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HassJob, HomeAssistant, callback
from homeassistant.helpers.event import async_call_later, async_track_point_in_utc_time
from homeassistant.util import dt as dt_util

from .const import DOMAIN, HUB, KEY_EVENT, KEY_STATUS
from .homesync.clock import Clock
from .homesync.protocol import Category, Topic
from .homesync.ratelimit import RateLimitedLogger
from .homesync.tracker import (
    REASON_WILL_CONTRADICTED,
    Availability,
    EventType,
    FleetSilence,
    HeartbeatTracker,
    NodeStatus,
    Outcome,
    Tracked,
    TrackerEvent,
    TrackerSettings,
)
from .updates import Updates

_LOGGER = logging.getLogger(__package__)

# Seconds between the points the deadline timer may fire at (see _schedule_timer).
TIMER_GRID = 0.5
# How long entities keep showing their restored state while Home Assistant's MQTT client has
# not connected for the first time since start (it usually takes well under a second).
FIRST_CONNECT_GRACE = 30.0
# Nodes whose state changes per event-loop iteration. Each costs Home Assistant a few state
# writes and maybe an event (~200 µs in all), so 10 000 simultaneous expiries or a broker
# reconnect are handed out in slices of this many, keeping loop lag well under 100 ms
# (benchmarks/README.md, mass expiry).
SLICE = 100
# Transition log lines per slice; the rest of a mass event is summed up in one line.
LOG_LINES_PER_SLICE = 5


def event_type(kind: str) -> str:
    """Bus event type for a node event kind (online, offline, rebooted, flapping)."""
    return f"{DOMAIN}_node_{kind}"


class AvailabilityMonitor:
    """Who is online in one home, and telling everyone when that changes."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        home_id: str,
        settings: TrackerSettings,
        clock: Clock,
        updates: Updates,
        is_known: Callable[[str], bool],
        device_id: Callable[[str], str | None],
        on_online: Callable[[str], None],
        on_rebooted: Callable[[str], None],
        schedule_save: Callable[[], None],
    ) -> None:
        """Bind to a home; `on_online` sends the offline queue, `on_rebooted` resets outputs."""
        self.hass = hass
        self._home_id = home_id
        self._updates = updates
        self._is_known = is_known
        self._device_id = device_id
        self._on_online = on_online
        self._on_rebooted = on_rebooted
        self._schedule_save = schedule_save
        self._clock = clock
        self.tracker = HeartbeatTracker(settings, clock)
        # The tracker's quiet paths, for the hub: `async_on_message` of a live message that
        # changes nothing visible, on the node's record from `tracked()` (no lookup by id);
        # False: nothing happened, take `async_on_message`. They change nothing this glue
        # reacts to (no state, no event, no earlier deadline), so the armed timer stays right;
        # while none is armed (broker down: no deadline; before async_start, which arms it),
        # `async_on_message` would not arm one either.
        self.quiet_heartbeat = self.tracker.quiet_heartbeat
        self.quiet_message = self.tracker.quiet_message
        # The state last logged per node: one line when it goes offline, one when it is back.
        self._logged: dict[str, Availability] = {}
        self._last_event: dict[str, TrackerEvent] = {}
        self._unsubscribe: CALLBACK_TYPE | None = None
        self._timer: CALLBACK_TYPE | None = None
        self._timer_due: float | None = None
        self._timer_job = HassJob(self._async_on_timer, f"{DOMAIN} deadlines {home_id}")
        # Nodes whose entities still have to hear about a change (drained SLICE at a time).
        self._dirty: dict[str, None] = {}
        self._drain: asyncio.Task[None] | None = None
        self._silence: FleetSilence | None = None
        self._lines_left = LOG_LINES_PER_SLICE
        self._lines_held = 0
        self._warn = RateLimitedLogger(_LOGGER)
        # True from start until HA's MQTT link connects for the first time (or the grace ends).
        self._awaiting_first_connect = False
        self._grace_unsub: CALLBACK_TYPE | None = None

    # --- what entities read ---------------------------------------------------------------

    @property
    def broker_connected(self) -> bool:
        """Whether entities can trust what they show: HA's own MQTT link is up.

        Also true right after start, before that link connected for the first time: nothing is
        wrong yet, and the restored state is the best knowledge. Marking everything unavailable
        for that moment would write `unavailable` → `on` for every relay at every restart
        (which fires `to: "on"` automations). The tracker itself stays "disconnected" until the
        link is up, so nobody expires meanwhile.
        """
        return self.tracker.broker_connected or self._awaiting_first_connect

    def status(self, node_id: str) -> NodeStatus | None:
        """The tracker's view of a node."""
        return self.tracker.status(node_id)

    def state(self, node_id: str) -> Availability | None:
        """Online, offline or unknown (known, not heard live yet); None for an unknown id."""
        return self.tracker.state(node_id)

    def node_online(self, node_id: str) -> bool:
        """True when the broker is up and the node is online: telemetry/relay are trustworthy.

        Asked by every entity write (`available`): the tracker's O(1) state, not a snapshot.
        """
        tracker = self.tracker
        return (tracker.broker_connected or self._awaiting_first_connect) and tracker.state(
            node_id
        ) is Availability.ONLINE

    def counts(self) -> tuple[int, int]:
        """(online, offline) nodes of this home; nodes not heard live yet are in neither."""
        return self.tracker.counts()

    @property
    def fleet_silence(self) -> FleetSilence | None:
        """Set while most nodes went quiet at once and their expiry is held."""
        return self.tracker.fleet_silence

    def offline_ratio(self) -> float:
        """Offline nodes as a percentage of all nodes (0 for an empty home)."""
        online, offline = self.tracker.counts()
        total = online + offline
        return 100.0 * offline / total if total else 0.0

    def last_event(self, node_id: str) -> TrackerEvent | None:
        """The node's latest event (what a (node, KEY_EVENT) notification announces)."""
        return self._last_event.get(node_id)

    # --- lifecycle ------------------------------------------------------------------------

    @callback
    def async_start(self) -> None:
        """Take the broker state, follow it, arm the timer."""
        # Broker state first: a restart while the broker is unreachable must not expire anyone.
        connected = mqtt.is_connected(self.hass)
        self.tracker.set_broker_connected(connected)
        if not connected:
            self._awaiting_first_connect = True
            self._grace_unsub = async_call_later(
                self.hass, FIRST_CONNECT_GRACE, self._async_first_connect_overdue
            )
        self._unsubscribe = mqtt.async_subscribe_connection_status(
            self.hass, self._async_on_connection
        )
        self._schedule_timer()

    @callback
    def _end_first_connect_grace(self) -> None:
        self._awaiting_first_connect = False
        if self._grace_unsub is not None:
            self._grace_unsub()
            self._grace_unsub = None

    @callback
    def _async_first_connect_overdue(self, _now: datetime) -> None:
        """The MQTT link never came up: what entities show can no longer be trusted."""
        self._grace_unsub = None
        self._awaiting_first_connect = False
        _LOGGER.info(
            "MQTT broker not connected %.0f s after start: HomeSync nodes of %s are unavailable",
            FIRST_CONNECT_GRACE,
            self._home_id,
        )
        self._apply(Outcome(changed=set(self.tracker.node_ids())))
        self._updates.async_notify(HUB, KEY_STATUS)

    @callback
    def async_stop(self) -> None:
        """Stop following the broker; cancel the timer and any pending slices."""
        self._end_first_connect_grace()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._cancel_timer()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        self._dirty.clear()

    # --- inputs ---------------------------------------------------------------------------

    @callback
    def _async_on_connection(self, connected: bool) -> None:
        """Home Assistant's MQTT link went up or down: every entity's availability changes."""
        if connected:
            self._end_first_connect_grace()
        if connected == self.tracker.broker_connected:
            return
        _LOGGER.info(
            "MQTT broker %s: HomeSync nodes of %s are %s",
            "connected" if connected else "disconnected",
            self._home_id,
            "tracked again after a grace period" if connected else "unavailable until it returns",
        )
        ignored = self.tracker.wills_ignored
        # The tracker reports every node as changed; the fleet entities are told even when
        # the home has no node yet.
        self._apply(self.tracker.set_broker_connected(connected))
        if ignored := self.tracker.wills_ignored - ignored:
            _LOGGER.info(
                "Ignored the last wills of %d HomeSync nodes of %s: they arrived just before "
                "the broker dropped Home Assistant's link (a broker shutting down publishes "
                "every client's will); their heartbeats decide (docs/brokers.md)",
                ignored,
                self._home_id,
            )
        self._updates.async_notify(HUB, KEY_STATUS)

    @callback
    def async_on_message(self, topic: Topic, data: dict[str, Any], *, retained: bool) -> None:
        """A validated message of a known node: online/heartbeat carry more than liveness."""
        node_id = topic.node_id
        tracker = self.tracker
        # The common case first (docs/architecture.md, one message): a live message of an
        # online node that only proves it alive. The tracker's quiet paths push no deadline,
        # so an armed timer (or the slices, which re-arm it) stays right: nothing to apply.
        if not retained and (self._timer is not None or self._drain is not None):
            if topic.category is not Category.STATUS:
                if tracker.try_quiet_message(node_id):
                    return
            elif topic.name == "heartbeat":
                if tracker.try_quiet_heartbeat(
                    node_id, seq=data["seq"], uptime=data["uptime"], interval=data.get("interval")
                ):
                    return
            elif topic.name != "online" and tracker.try_quiet_message(node_id):
                return
        if topic.category is Category.STATUS and topic.name == "online":
            outcome = self.tracker.on_online_status(
                node_id,
                data["online"],
                reason=data.get("reason", ""),
                uptime=data.get("uptime"),
                retained=retained,
            )
        elif topic.category is Category.STATUS and topic.name == "heartbeat":
            outcome = self.tracker.on_heartbeat(
                node_id,
                seq=data["seq"],
                uptime=data["uptime"],
                interval=data.get("interval"),
                retained=retained,
            )
        else:
            outcome = self.tracker.on_message(node_id, retained=retained)
        self._apply(outcome)

    def tracked(self, node_id: str) -> Tracked | None:
        """The tracker's record of a node, for quiet_heartbeat / quiet_message (the hub's)."""
        return self.tracker.handle(node_id)

    @callback
    def async_set_timeout_override(self, node_id: str, seconds: float | None) -> None:
        """Per-node silence timeout (None: back to the computed one)."""
        self._apply(self.tracker.set_timeout_override(node_id, seconds))

    # --- outputs --------------------------------------------------------------------------

    @callback
    def _apply(self, outcome: Outcome) -> None:
        """Write what the tracker says changed, fire its events, re-arm the deadline timer.

        More than SLICE changed nodes (a broker reconnect) are notified SLICE per event-loop
        iteration; events come at most SLICE at a time already (tick's limit).
        """
        if outcome.changed:
            if not self._dirty and len(outcome.changed) <= SLICE:
                self._notify(outcome.changed)
            else:
                self._dirty.update(dict.fromkeys(outcome.changed))
                self._start_drain()
            self._schedule_save()
        for event in outcome.events:
            self._fire(event)
        self._schedule_timer()

    def _notify(self, node_ids: Iterable[str]) -> None:
        self._lines_left = LOG_LINES_PER_SLICE
        self._lines_held = 0
        for node_id in node_ids:
            came_online = self._log_transition(node_id)
            self._updates.async_notify(node_id, KEY_STATUS)
            if came_online:
                self._on_online(node_id)
        if self._lines_held:
            _LOGGER.info(
                "... and %d more HomeSync nodes of %s changed availability (see their "
                "connectivity sensors and the logbook)",
                self._lines_held,
                self._home_id,
            )
        self._updates.async_notify(HUB, KEY_STATUS)

    def _log(self, msg: str, *args: object) -> None:
        """A transition line; beyond LOG_LINES_PER_SLICE per slice, one summary line."""
        if self._lines_left > 0:
            self._lines_left -= 1
            _LOGGER.info(msg, *args)
        else:
            self._lines_held += 1

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = self.hass.async_create_task(
                self._async_drain(), f"{DOMAIN} availability slices {self._home_id}"
            )

    async def _async_drain(self) -> None:
        """Notify dirty nodes and run due expiries, SLICE per loop iteration, until done."""
        try:
            while True:
                if self._dirty:
                    batch = []
                    for node_id in self._dirty:
                        batch.append(node_id)
                        if len(batch) >= SLICE:
                            break
                    for node_id in batch:
                        del self._dirty[node_id]
                    self._notify(batch)
                elif self._expiry_due():
                    self._run_tick()
                else:
                    return
                await asyncio.sleep(0)
        finally:
            self._drain = None
            self._schedule_timer()

    def _log_transition(self, node_id: str) -> bool:
        """Log once when a node becomes unavailable and once when it is back.

        Returns True when the node just became online (the offline queue is sent then).
        """
        status = self.tracker.status(node_id)
        logged = self._logged.get(node_id)
        if not self._is_known(node_id) or status is None or logged is status.state:
            return False
        if status.state is Availability.OFFLINE and logged is not None:
            self._log("HomeSync node %s/%s is offline (%s)", self._home_id, node_id, status.reason)
        elif status.state is Availability.ONLINE and logged is Availability.OFFLINE:
            # "Back" only when it was offline before (not at first discovery, issue 10 #5).
            self._log("HomeSync node %s/%s is back online", self._home_id, node_id)
        self._logged[node_id] = status.state
        return status.state is Availability.ONLINE

    def _fire(self, event: TrackerEvent) -> None:
        """Bus event (automations, device triggers), then the node's event entity, outputs."""
        if event.reason == REASON_WILL_CONTRADICTED:
            self._warn.warning(
                "will_contradicted",
                "HomeSync node %s/%s: its offline message was contradicted by a live message "
                "within 2 s (a reconnect race or a forged will; see the README's security "
                "section); not counted as flapping",
                self._home_id,
                event.node_id,
            )
        data: dict[str, Any] = {
            "device_id": self._device_id(event.node_id),
            "home_id": self._home_id,
            "node_id": event.node_id,
            "reason": event.reason,
        }
        if event.type is EventType.OFFLINE and (status := self.tracker.status(event.node_id)):
            data["timeout"] = status.timeout  # the logbook says "no heartbeat for 90 s"
        self.hass.bus.async_fire(event_type(event.type), data)
        self._last_event[event.node_id] = event
        self._updates.async_notify(event.node_id, KEY_EVENT)
        if event.type is EventType.REBOOTED:
            self._on_rebooted(event.node_id)

    # --- the one timer --------------------------------------------------------------------

    def _schedule_timer(self) -> None:
        """Keep ONE timer armed at the tracker's earliest deadline (docs/architecture.md).

        The timer fires on a 0.5 s grid: the lazy heap holds one entry per node that comes
        due about once per timeout, so arming at each exact entry would wake N/timeout times
        per second (85/s for 10 000 nodes, see benchmarks/). On the grid it wakes at most
        twice a second and every entry due by then is handled in one go; detection stays
        within timeout + 0.5 s. The grid point is also strictly after the deadline, which
        silence needs (`now > deadline`) despite datetimes' microsecond resolution.
        """
        if self._drain is not None:
            return  # the slices re-arm when they are done
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
        self._run_tick()
        if self._expiry_due():
            self._start_drain()  # more than SLICE nodes expire now: one slice per iteration

    def _run_tick(self) -> None:
        self._apply(self.tracker.tick(limit=SLICE))
        self._log_silence()

    def _expiry_due(self) -> bool:
        due = self.tracker.next_deadline()
        return due is not None and due <= self._clock()

    def _log_silence(self) -> None:
        """One line when most of the fleet goes quiet at once, one when it is heard again."""
        silence = self.tracker.fleet_silence
        if (silence is None) == (self._silence is None):
            return
        if silence is not None:
            _LOGGER.warning(
                "Stopped hearing %d of %d HomeSync nodes of %s at once: this points at Home "
                "Assistant or the broker, not the nodes; none is declared offline by silence "
                "for one more timeout (docs/availability.md, correlated silence)",
                silence.late,
                silence.online,
                self._home_id,
            )
        else:
            _LOGGER.info("HomeSync nodes of %s are heard again", self._home_id)
        self._silence = silence

    # --- node removal and persistence -----------------------------------------------------

    @callback
    def async_forget(self, node_id: str) -> None:
        """The node was removed: stop tracking it; the fleet numbers change."""
        self.tracker.forget(node_id)
        self._logged.pop(node_id, None)
        self._last_event.pop(node_id, None)
        self._schedule_timer()
        self._updates.async_notify(HUB, KEY_STATUS)

    def restore(self, tracked: Any, known: Iterable[str], restored: Iterable[str]) -> None:
        """Availability from storage, for the stored nodes only (no events, no logs).

        A recent last_seen restores the node online with its remaining deadline; a node
        stored before the tracker existed is known but not seen yet.
        """
        if isinstance(tracked, dict):
            keep = set(known)
            self.tracker.restore({k: v for k, v in tracked.items() if k in keep})
        for node_id in restored:
            if (status := self.tracker.status(node_id)) is not None:
                self._logged[node_id] = status.state
            else:
                self.tracker.on_message(node_id, retained=True)

    def export(self) -> dict[str, Any]:
        """JSON-able tracker state."""
        return self.tracker.export()
