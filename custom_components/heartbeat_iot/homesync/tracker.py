"""Heartbeat-based availability of HomeSync nodes (docs/architecture.md §5), free of Home Assistant.

The tracker owns, per node, ``last_seen``, ``state`` and ``reason`` and decides availability from
application messages: every non-retained message is proof of life, the LWT / ``online: false`` is a
fast path to offline, and silence longer than the node's timeout makes it offline. Time comes from
an injected wall clock so tests (and HA restarts, via :meth:`HeartbeatTracker.export` /
:meth:`HeartbeatTracker.restore`) are deterministic.

Every public call returns an :class:`Outcome`: the nodes whose user-visible status changed and the
bus events to fire. ``last_seen`` alone is deliberately not a user-visible change: it moves with
every message, and writing entity states per heartbeat is what docs/architecture.md §5 forbids.

Scheduling invariant (the reason this scales to many nodes at O(1) per message):
there is ONE min-heap of ``(due_time, node_id)`` entries, and for every node with work pending
(a silence deadline or a flap-clear time) ``node.scheduled`` is the time of one heap entry that is
*not later* than the node's real due time. A heartbeat only moves the due time later, so it pushes
nothing; :meth:`HeartbeatTracker.tick` pops due entries and, when the node's real due time moved
later, pushes it back once. Entries whose time differs from ``node.scheduled`` (or whose node was
forgotten) are stale and dropped when popped. A push happens only when a due time moves *earlier*
(new node, offline -> online, shorter timeout, clock stepped back, flapping started).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
import heapq
import math
from typing import Any, TypeIs

from .clock import Clock

REASON_HEARTBEAT = "heartbeat"
REASON_MESSAGE = "message"
REASON_TIMEOUT = "timeout"
REASON_NOT_SEEN = "not_seen"
REASON_BOOT = "boot"
REASON_SEQ_RESET = "seq_reset"
REASON_UPTIME_RESET = "uptime_reset"
REASON_FLAPPING = "flapping"
REASON_FLAPPING_ENDED = "flapping_ended"

# The heap is rebuilt from the nodes when stale entries outnumber live ones by this much, so a
# pathological sequence (e.g. many forgets or shrinking overrides) cannot grow it without bound.
_HEAP_SLACK = 64


class Availability(StrEnum):
    """What the connectivity binary sensor shows."""

    ONLINE = "online"
    OFFLINE = "offline"


class EventType(StrEnum):
    """Bus / event-entity event types."""

    ONLINE = "online"
    OFFLINE = "offline"
    REBOOTED = "rebooted"
    FLAPPING = "flapping"


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Tunables (options flow). Validated on construction: a bad value raises ValueError."""

    default_interval: float = 30.0  # used until the node announces one in a heartbeat
    multiplier: float = 3.0
    min_timeout: float = 30.0  # timeout = override or max(min_timeout, multiplier * interval)
    flap_transitions: int = 5  # >= this many transitions ...
    flap_window: float = 600.0  # ... within this many seconds => flapping
    link_window: int = 20  # heartbeats considered for link quality

    def __post_init__(self) -> None:
        for name in ("default_interval", "multiplier", "min_timeout", "flap_window"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("flap_transitions", "link_window"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class TrackerEvent:
    """An event for the bus (``heartbeat_iot_node_<type>``) and the node's event entity."""

    type: EventType
    node_id: str
    reason: str
    at: float


@dataclass(slots=True)
class Outcome:
    """Result of one tracker call."""

    # Nodes whose user-visible status changed: the glue writes entity states only for these.
    changed: set[str] = field(default_factory=set)
    # Bus events to fire, already filtered by flap damping.
    events: list[TrackerEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Read-only snapshot of one node for entities and diagnostics."""

    node_id: str
    state: Availability
    reason: str
    last_seen: float | None
    # Next time something can happen to the node on its own: the silence deadline (offline once
    # now > deadline) while online, else the flap-clear time while flapping; None while the
    # broker is down (nothing expires then) or when there is nothing to expire.
    deadline: float | None
    timeout: float
    interval: float  # announced heartbeat interval, or the default until one is announced
    timeout_override: float | None
    flapping: bool
    reboots: int
    last_boot: float | None
    link_quality: float | None  # percent 0..100, None until 2 heartbeats (see _Node.link_quality)


@dataclass(slots=True, eq=False)
class _Node:
    node_id: str
    state: Availability
    reason: str
    last_event: Availability  # last availability event emitted (or the baseline at creation)
    flaps: deque[float]  # times of the most recent transitions, maxlen = flap_transitions
    last_seen: float | None = None
    interval: float | None = None  # announced; None = settings.default_interval
    override: float | None = None
    flapping: bool = False
    last_transition: float | None = None
    reboots: int = 0
    last_boot: float | None = None
    seq: int | None = None
    uptime: int | None = None
    scheduled: float | None = None  # time of this node's live heap entry (see module docstring)
    link: deque[int] = field(default_factory=deque)  # seqs received within the link window
    link_base: int | None = None  # first seq received since the window was reset

    def link_quality(self, window: int) -> float | None:
        """Percentage of the heartbeats the node sent that we received, over the last seqs.

        With ``latest`` the highest seq received and ``base`` the first seq received since the
        last reset (boot, HA start, broker reconnect), the window is the ``window`` seqs ending at
        ``latest``; ``expected = min(window, latest - base + 1)``; ``received`` = distinct seqs of
        the window that arrived. Quality = ``100 * received / expected``, rounded to 0.1, and None
        until two distinct seqs arrived (one heartbeat says nothing about a link).
        """
        if self.link_base is None or not self.link or self.link[-1] == self.link_base:
            return None
        expected = min(window, self.link[-1] - self.link_base + 1)
        return round(100.0 * len(self.link) / expected, 1)

    def add_seq(self, seq: int, window: int) -> None:
        """Record a received seq (strictly above the previous one) in the sliding window."""
        if self.link_base is None:
            self.link_base = seq
        self.link.append(seq)
        while self.link[0] <= seq - window:
            self.link.popleft()

    def reset_link(self) -> None:
        self.link.clear()
        self.link_base = None


class HeartbeatTracker:
    """Availability state machine for the nodes of one home (see the module docstring)."""

    def __init__(self, settings: TrackerSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._heap: list[tuple[float, str]] = []
        self._online = 0
        self._offline = 0
        self._broker_connected = True
        # Silence (and flap-clear) counts from max(event time, _grace_from): set on broker
        # reconnect, so every deadline restarts at reconnect time + timeout in O(1).
        self._grace_from = -math.inf
        # Overrides set before the node is known (e.g. from options at start-up).
        self._pending_overrides: dict[str, float] = {}

    # ---------------------------------------------------------------- read-only views

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    @property
    def broker_connected(self) -> bool:
        return self._broker_connected

    @property
    def heap_size(self) -> int:
        """Entries in the deadline heap, live and stale (diagnostics; bounded, see docstring)."""
        return len(self._heap)

    def state(self, node_id: str) -> Availability | None:
        """The node's availability alone: O(1), no snapshot (entities ask on every write)."""
        node = self._nodes.get(node_id)
        return None if node is None else node.state

    def status(self, node_id: str) -> NodeStatus | None:
        node = self._nodes.get(node_id)
        if node is None:
            return None
        return NodeStatus(
            node_id=node_id,
            state=node.state,
            reason=node.reason,
            last_seen=node.last_seen,
            deadline=self._deadline(node) if self._broker_connected else None,
            timeout=self._timeout(node),
            interval=self._interval(node),
            timeout_override=node.override,
            flapping=node.flapping,
            reboots=node.reboots,
            last_boot=node.last_boot,
            link_quality=node.link_quality(self._settings.link_window),
        )

    def node_ids(self) -> list[str]:
        return list(self._nodes)

    def counts(self) -> tuple[int, int]:
        """(online, offline), maintained incrementally."""
        return self._online, self._offline

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`tick` may have work; None if nothing is scheduled.

        May be earlier than needed (a heartbeat moved the node's deadline later): the tick then
        finds nothing to do and re-arms for the real time. Never later than needed.
        """
        if not self._broker_connected:
            return None
        heap = self._heap
        # Drop stale tops so the glue does not wake up for nodes that were forgotten etc.
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # ---------------------------------------------------------------- inputs

    def on_message(self, node_id: str, *, retained: bool) -> Outcome:
        """Any message from the node: live = proof of life; retained = only makes the node known."""
        out = Outcome()
        if retained:
            self._ensure_known(node_id, out)
        else:
            self._proof_of_life(node_id, REASON_MESSAGE, self._clock(), out)
        return out

    def on_online_status(
        self, node_id: str, online: bool, *, reason: str, uptime: int | None, retained: bool
    ) -> Outcome:
        """``status/online``: false (live or retained) = offline now; live true = proof of life.

        A retained ``online: true`` is not proof of life: it may be the birth of a long-dead node
        whose LWT never reached the broker. A live ``online: true`` detects a reboot when the
        uptime went backwards, or when the reason is ``boot`` without an uptime after a known
        one (``boot`` with an uptime not below the last one is the boot we already counted).
        """
        out = Outcome()
        now = self._clock()
        if not online:
            # The LWT is published by the broker, not by the node: not proof of life.
            self._go_offline(node_id, reason or Availability.OFFLINE.value, now, out)
            return out
        if retained:
            self._ensure_known(node_id, out)
            return out
        node = self._proof_of_life(node_id, reason or REASON_MESSAGE, now, out)
        if node.uptime is not None:
            if uptime is not None and uptime < node.uptime:
                self._reboot(node, REASON_UPTIME_RESET, uptime, now, out)
            elif uptime is None and reason == REASON_BOOT:
                self._reboot(node, REASON_BOOT, uptime, now, out)
        self._track_uptime(node, uptime, now, out)
        return out

    def on_heartbeat(
        self, node_id: str, *, seq: int, uptime: int, interval: float | None, retained: bool
    ) -> Outcome:
        """``status/heartbeat``: proof of life, interval announcement, reboot and link quality.

        Heartbeats are never retained by the protocol; a retained one is treated like any
        retained message (the node becomes known, nothing else).
        """
        out = Outcome()
        if retained:
            self._ensure_known(node_id, out)
            return out
        now = self._clock()
        node = self._proof_of_life(node_id, REASON_HEARTBEAT, now, out)
        window = self._settings.link_window
        quality = node.link_quality(window)
        if _is_number(interval) and interval > 0 and interval != node.interval:
            node.interval = float(interval)  # the timeout follows (see _timeout)
            out.changed.add(node_id)
        if node.seq is not None and seq < node.seq:
            self._reboot(node, REASON_SEQ_RESET, uptime, now, out)
        elif node.uptime is not None and uptime < node.uptime:
            self._reboot(node, REASON_UPTIME_RESET, uptime, now, out)
        if node.seq is None or seq > node.seq:
            node.add_seq(seq, window)  # a duplicate seq is neither received nor missed
        node.seq = seq
        self._track_uptime(node, uptime, now, out)
        if node.link_quality(window) != quality:
            out.changed.add(node_id)
        self._schedule(node)
        return out

    def tick(self) -> Outcome:
        """Process every entry due at ``clock()``: silence timeouts and flap clearing."""
        out = Outcome()
        if not self._broker_connected:
            return out  # no node is declared offline by silence while we cannot hear it
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._is_live(entry):
                continue
            node = self._nodes[entry[1]]
            node.scheduled = None
            self._expire(node, now, out)
            self._schedule(node)  # pushes back once if the real due time moved later
        return out

    def set_broker_connected(self, connected: bool) -> Outcome:
        """HA's own MQTT link went down / came back (docs/architecture.md, availability rule 5).

        Down: silence is suspended (tick does nothing). Up: every deadline restarts at
        ``now + timeout`` (grace), and link windows restart (heartbeats lost while we were
        disconnected say nothing about the node's link). Every node is in ``changed`` because
        node entities become unavailable / available again.
        """
        out = Outcome()
        if connected == self._broker_connected:
            return out
        self._broker_connected = connected
        if connected:
            # Deadlines only move later, so the heap invariant holds without any push.
            self._grace_from = self._clock()
            for node in self._nodes.values():
                node.reset_link()
        out.changed.update(self._nodes)
        return out

    def set_timeout_override(self, node_id: str, seconds: float | None) -> Outcome:
        """Per-node timeout (None = computed). For an unknown node it applies once it appears."""
        if seconds is not None and (not _is_number(seconds) or not seconds > 0):
            raise ValueError(f"timeout override must be a positive number, got {seconds!r}")
        value = None if seconds is None else float(seconds)
        out = Outcome()
        node = self._nodes.get(node_id)
        if node is None:
            if value is None:
                self._pending_overrides.pop(node_id, None)
            else:
                self._pending_overrides[node_id] = value
            return out
        if value != node.override:
            node.override = value
            out.changed.add(node_id)
            self._schedule(node)
        return out

    def forget(self, node_id: str) -> None:
        """Drop a node (device removed in the UI). Its heap entry turns stale."""
        self._pending_overrides.pop(node_id, None)
        node = self._nodes.pop(node_id, None)
        if node is None:
            return
        self._count(node.state, -1)
        self._maybe_compact()

    # ---------------------------------------------------------------- persistence

    def export(self) -> dict[str, dict[str, Any]]:
        """JSON-serialisable state for ``helpers.storage.Store`` (flap history is not kept)."""
        return {
            node_id: {
                "state": node.state.value,
                "reason": node.reason,
                "last_seen": node.last_seen,
                "interval": node.interval,
                "override": node.override,
                "reboots": node.reboots,
                "last_boot": node.last_boot,
                "seq": node.seq,
                "uptime": node.uptime,
            }
            for node_id, node in self._nodes.items()
        }

    def restore(self, data: Mapping[str, Mapping[str, Any]]) -> Outcome:
        """Load :meth:`export` output after an HA restart. Fires no events.

        See docs/architecture.md, availability rule 6.

        A node persisted online is online again, with its remaining deadline, if
        ``last_seen + timeout > now``; otherwise offline with reason ``timeout``. A node persisted
        offline stays offline with its reason. Malformed entries are skipped, nodes already known
        (a live message came first) keep their live state, and a ``last_seen`` in the future
        (the wall clock stepped back) is clamped to now.
        """
        out = Outcome()
        now = self._clock()
        for node_id, entry in data.items():
            if not isinstance(node_id, str) or not node_id or node_id in self._nodes:
                continue
            try:
                node = self._parse_entry(node_id, entry, now)
            except (TypeError, ValueError, KeyError):
                continue
            pending = self._pending_overrides.pop(node_id, None)
            if pending is not None:
                node.override = pending
            if node.state is Availability.ONLINE:
                assert node.last_seen is not None  # guaranteed by _parse_entry
                if not node.last_seen + self._timeout(node) > now:
                    node.state = node.last_event = Availability.OFFLINE
                    node.reason = REASON_TIMEOUT
            self._add(node)
            out.changed.add(node_id)
        return out

    def _parse_entry(self, node_id: str, entry: Mapping[str, Any], now: float) -> _Node:
        if not isinstance(entry, Mapping):
            raise TypeError("entry is not a mapping")
        state = Availability(entry["state"])
        reason = entry.get("reason") or (
            REASON_NOT_SEEN if state is Availability.OFFLINE else REASON_MESSAGE
        )
        if not isinstance(reason, str):
            raise TypeError("reason")
        last_seen = _opt_number(entry.get("last_seen"))
        if last_seen is not None:
            last_seen = min(last_seen, now)
        elif state is Availability.ONLINE:
            raise ValueError("online without last_seen")
        interval = _opt_number(entry.get("interval"), positive=True)
        override = _opt_number(entry.get("override"), positive=True)
        reboots = _opt_int(entry.get("reboots")) or 0
        last_boot = _opt_number(entry.get("last_boot"))
        seq = _opt_int(entry.get("seq"))
        uptime = _opt_int(entry.get("uptime"))
        return _Node(
            node_id=node_id,
            state=state,
            reason=reason,
            last_event=state,
            flaps=deque(maxlen=self._settings.flap_transitions),
            last_seen=last_seen,
            interval=interval,
            override=override,
            reboots=reboots,
            last_boot=last_boot,
            seq=seq,
            uptime=uptime,
        )

    # ---------------------------------------------------------------- state changes

    def _new_node(self, node_id: str, state: Availability, reason: str) -> _Node:
        return _Node(
            node_id=node_id,
            state=state,
            reason=reason,
            last_event=state,  # creation is not a transition: no event, this is the baseline
            flaps=deque(maxlen=self._settings.flap_transitions),
            override=self._pending_overrides.pop(node_id, None),
        )

    def _add(self, node: _Node) -> None:
        self._nodes[node.node_id] = node
        self._count(node.state, +1)
        self._schedule(node)

    def _ensure_known(self, node_id: str, out: Outcome) -> _Node:
        """A retained message: the node exists (offline until heard live), nothing else."""
        node = self._nodes.get(node_id)
        if node is None:
            node = self._new_node(node_id, Availability.OFFLINE, REASON_NOT_SEEN)
            self._add(node)
            out.changed.add(node_id)
        return node

    def _proof_of_life(self, node_id: str, reason: str, now: float, out: Outcome) -> _Node:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._new_node(node_id, Availability.ONLINE, reason)
            node.last_seen = now
            self._add(node)
            out.changed.add(node_id)
            return node
        node.last_seen = now
        if node.state is Availability.OFFLINE:
            self._transition(node, Availability.ONLINE, reason, now, out)
        else:
            self._schedule(node)  # a no-op unless the clock stepped back
        return node

    def _go_offline(self, node_id: str, reason: str, now: float, out: Outcome) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            self._add(self._new_node(node_id, Availability.OFFLINE, reason))
            out.changed.add(node_id)
        elif node.state is Availability.ONLINE:
            self._transition(node, Availability.OFFLINE, reason, now, out)
        elif node.reason != reason:
            # Already offline (e.g. timed out before the LWT arrived): keep the better reason.
            node.reason = reason
            out.changed.add(node_id)

    def _transition(
        self, node: _Node, state: Availability, reason: str, now: float, out: Outcome
    ) -> None:
        """Online <-> offline, with flap damping (docs/architecture.md, availability rule 7)."""
        self._count(node.state, -1)
        node.state = state
        node.reason = reason
        self._count(state, +1)
        out.changed.add(node.node_id)
        node.last_transition = now
        node.flaps.append(now)
        settings = self._settings
        if (
            not node.flapping
            and len(node.flaps) >= settings.flap_transitions
            and now - node.flaps[0] <= settings.flap_window
        ):
            node.flapping = True
            out.events.append(TrackerEvent(EventType.FLAPPING, node.node_id, REASON_FLAPPING, now))
        if not node.flapping:
            self._emit_state(node, reason, now, out)
        self._schedule(node)

    def _emit_state(self, node: _Node, reason: str, now: float, out: Outcome) -> None:
        out.events.append(TrackerEvent(EventType(node.state.value), node.node_id, reason, now))
        node.last_event = node.state

    def _expire(self, node: _Node, now: float, out: Outcome) -> None:
        """Whatever is due for the node at ``now``: silence first (it is a transition)."""
        if node.state is Availability.ONLINE:
            deadline = self._silence_deadline(node)
            if deadline is not None and now > deadline:
                self._transition(node, Availability.OFFLINE, REASON_TIMEOUT, now, out)
        clear_at = self._flap_clear_at(node)
        if clear_at is not None and now >= clear_at:
            node.flapping = False
            node.flaps.clear()
            out.changed.add(node.node_id)
            if node.last_event is not node.state:
                # Events were suppressed while flapping: let automations catch up.
                self._emit_state(node, REASON_FLAPPING_ENDED, now, out)

    def _reboot(
        self, node: _Node, reason: str, uptime: int | None, now: float, out: Outcome
    ) -> None:
        """Count a reboot and fire its event (never suppressed by flap damping)."""
        node.reboots += 1
        node.last_boot = now - (uptime or 0)
        node.uptime = uptime
        # The new boot restarts seq and the link window: the next heartbeat must not count
        # the same reboot again, nor the old boot's seqs as missed.
        node.seq = None
        node.reset_link()
        out.changed.add(node.node_id)
        out.events.append(TrackerEvent(EventType.REBOOTED, node.node_id, reason, now))

    def _track_uptime(self, node: _Node, uptime: int | None, now: float, out: Outcome) -> None:
        if uptime is None:
            return
        node.uptime = uptime
        if node.last_boot is None:
            node.last_boot = now - uptime  # first estimate of the boot time, not a reboot
            out.changed.add(node.node_id)

    def _count(self, state: Availability, delta: int) -> None:
        if state is Availability.ONLINE:
            self._online += delta
        else:
            self._offline += delta

    # ---------------------------------------------------------------- timing

    def _interval(self, node: _Node) -> float:
        return self._settings.default_interval if node.interval is None else node.interval

    def _timeout(self, node: _Node) -> float:
        if node.override is not None:
            return node.override
        settings = self._settings
        return max(settings.min_timeout, settings.multiplier * self._interval(node))

    def _silence_deadline(self, node: _Node) -> float | None:
        """Online until ``now > deadline``, grace after a reconnect (availability rule 4)."""
        if node.state is not Availability.ONLINE or node.last_seen is None:
            return None
        return max(node.last_seen, self._grace_from) + self._timeout(node)

    def _flap_clear_at(self, node: _Node) -> float | None:
        if not node.flapping or node.last_transition is None:
            return None
        return max(node.last_transition, self._grace_from) + 2 * self._timeout(node)

    def _deadline(self, node: _Node) -> float | None:
        times = [
            t for t in (self._silence_deadline(node), self._flap_clear_at(node)) if t is not None
        ]
        return min(times) if times else None

    def _due(self, node: _Node) -> float | None:
        """Earliest time tick() has work for the node (silence needs now > deadline)."""
        silence = self._silence_deadline(node)
        if silence is not None:
            silence = math.nextafter(silence, math.inf)
        clear_at = self._flap_clear_at(node)
        if silence is None or (clear_at is not None and clear_at < silence):
            return clear_at
        return silence

    def _schedule(self, node: _Node) -> None:
        """Restore the heap invariant after the node's due time may have moved."""
        due = self._due(node)
        if due is not None and (node.scheduled is None or due < node.scheduled):
            node.scheduled = due
            heapq.heappush(self._heap, (due, node.node_id))
            self._maybe_compact()

    def _is_live(self, entry: tuple[float, str]) -> bool:
        node = self._nodes.get(entry[1])
        return node is not None and node.scheduled == entry[0]

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._nodes) + _HEAP_SLACK:
            self._heap = [
                (node.scheduled, node_id)
                for node_id, node in self._nodes.items()
                if node.scheduled is not None
            ]
            heapq.heapify(self._heap)


def _is_number(value: object) -> TypeIs[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt_number(value: object, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or (positive and not value > 0):
        raise ValueError(value)
    return float(value)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise ValueError(value)
    return int(value)
