"""Heartbeat-based availability of HomeSync nodes (docs/availability.md), free of Home Assistant.

The tracker owns, per node, ``last_seen``, ``state`` and ``reason`` and decides availability from
application messages: every non-retained message is proof of life, the LWT / ``online: false`` is a
fast path to offline (a will after a 1 s hold, see ``TrackerSettings.will_hold``), and silence
longer than the node's timeout makes it offline. A node known only from retained messages
(first setup, or a Home Assistant start that outlived its deadline) is ``unknown``: neither
online nor offline, in no fleet count, until it speaks live or its timeout passes since it
became known. Time comes from an injected wall clock so tests (and HA restarts, via
:meth:`HeartbeatTracker.export` / :meth:`HeartbeatTracker.restore`) are deterministic.

Every public call returns an :class:`Outcome`: the nodes whose user-visible status changed and the
bus events to fire. ``last_seen`` alone is deliberately not a user-visible change: it moves with
every message, and writing entity states per heartbeat is what docs/architecture.md forbids.

Scheduling invariant (the reason this scales to many nodes at O(1) per message):
there is ONE min-heap of ``(due_time, node_id)`` entries, and for every node with work pending
(a silence deadline or a flap-clear time) ``node.scheduled`` is the time of one heap entry that is
*not later* than the node's real due time. A heartbeat only moves the due time later, so it pushes
nothing; :meth:`HeartbeatTracker.tick` pops due entries and, when the node's real due time moved
later, pushes it back once. Entries whose time differs from ``node.scheduled`` (or whose node was
forgotten) are stale and dropped when popped. A push happens only when a due time moves *earlier*
(new node, offline -> online, shorter timeout, clock stepped back, flapping started, a silence
held while the whole fleet is quiet). The empty node id (never a valid node id) is the heap entry
of the fleet-wide silence check (see :meth:`HeartbeatTracker.tick`).
"""

from __future__ import annotations

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
# Known (retained messages, or persisted) but not heard live since it became known; offline with
# this reason once its timeout passed since then.
REASON_NOT_SEEN = "not_seen"
# Unknown after a Home Assistant start: it was online, but its deadline passed while HA was down.
REASON_RESTARTED = "restarted"
REASON_BOOT = "boot"
REASON_SEQ_RESET = "seq_reset"
REASON_UPTIME_RESET = "uptime_reset"
REASON_FLAPPING = "flapping"
REASON_FLAPPING_ENDED = "flapping_ended"
# Back online: a live message contradicted its offline status (will / online: false) within
# TrackerSettings.will_window seconds: a reconnect race or a forged will. Not counted as flapping.
REASON_WILL_CONTRADICTED = "will_contradicted"
# Offline after most of the fleet went silent at once and stayed silent for one more timeout.
REASON_MASS_SILENCE = "mass_silence"
# The reason of the Last Will every node registers (docs/protocol.md): published by the broker,
# not by the node, so it is held before it counts (TrackerSettings.will_hold).
REASON_WILL = "unexpected_disconnect"

# The heap is rebuilt from the nodes when stale entries outnumber live ones by this much, so a
# pathological sequence (e.g. many forgets or shrinking overrides) cannot grow it without bound.
_HEAP_SLACK = 64
# Heap entry of the fleet-wide silence check (node ids are never empty).
_FLEET = ""
# A node is "late" once it has not been heard for this many heartbeat intervals (it missed one).
_LATE_INTERVALS = 1.5
# How often the fleet is re-checked while silence is suspected, and how long a scan is reused.
_FLEET_RECHECK = 1.0
# Distinct announced intervals kept as shared objects (any more are stored as they come).
_SHARED_INTERVALS = 64


class Availability(StrEnum):
    """What the connectivity binary sensor shows (unknown: not heard live yet)."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


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
    # An offline status contradicted by a live message within this many seconds is a race or a
    # forgery (REASON_WILL_CONTRADICTED), and neither transition counts towards flapping.
    will_window: float = 2.0
    # A live will counts this many seconds after it arrives, unless Home Assistant's own MQTT
    # link drops first (a broker shutting down publishes every connected client's will just
    # before it closes our link, docs/brokers.md) or the node speaks (a reconnect race). 0 = at
    # once. A retained will of a node automations know as online never counts: it may be what
    # a broker restart left behind, so that node's silence timeout decides.
    will_hold: float = 1.0
    # Correlated silence: when an online node's timeout passes while more than mass_ratio of the
    # online nodes (and at least mass_min of them) are late too, it is evidence about us or the
    # broker: expiry is held (docs/availability.md, "Correlated silence").
    mass_ratio: float = 0.5
    mass_min: int = 3

    def __post_init__(self) -> None:
        for name in (
            "default_interval",
            "multiplier",
            "min_timeout",
            "flap_window",
            "will_window",
            "mass_ratio",
        ):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("flap_transitions", "link_window", "mass_min"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_number(self.will_hold) or self.will_hold < 0:
            raise ValueError(f"will_hold must be a number >= 0, got {self.will_hold!r}")
        if self.link_window > 1024:
            raise ValueError(f"link_window must be at most 1024, got {self.link_window!r}")
        if self.mass_ratio >= 1:
            raise ValueError(f"mass_ratio must be below 1, got {self.mass_ratio!r}")


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
    # now > deadline) while online or unknown, else the flap-clear time while flapping; None
    # while the broker is down (nothing expires then) or when there is nothing to expire.
    deadline: float | None
    timeout: float
    interval: float  # announced heartbeat interval, or the default until one is announced
    timeout_override: float | None
    flapping: bool
    reboots: int
    last_boot: float | None
    link_quality: float | None  # percent 0..100, None until 2 heartbeats (see _Node.link_quality)
    # Offline statuses contradicted by a live message (races or forged wills) since HA started.
    contradicted_wills: int = 0


@dataclass(frozen=True, slots=True)
class FleetSilence:
    """Most of the fleet went quiet at once (see TrackerSettings.mass_ratio)."""

    since: float
    late: int  # online nodes not heard for 1.5 intervals at the last check
    online: int


@dataclass(slots=True, eq=False)
class _Node:
    """One node. Plain slots and ints, no containers per node (memory: benchmarks/README.md).

    The fields a quiet heartbeat reads and writes come first, next to each other: with 100 000
    nodes every node is a cache miss, and adjacent slots share cache lines.
    """

    node_id: str
    state: Availability
    reason: str
    last_event: Availability  # last availability event emitted (or the baseline at creation)
    scheduled: float | None = None  # time of this node's live heap entry (see module docstring)
    will_due: float | None = None  # a live will held until then (TrackerSettings.will_hold)
    last_seen: float | None = None
    interval: float | None = None  # announced; None = settings.default_interval
    seq: int | None = None
    uptime: int | None = None
    last_boot: float | None = None
    # Link window as a bit set: bit i set = seq (link_latest - i) was received.
    link_bits: int = 0
    link_latest: int | None = None
    # Seqs the window spans since the last reset (boot, HA start, broker reconnect): latest -
    # first + 1, counted up to window + 1 (a small int, shared by every node; 0 = no seq yet).
    link_fill: int = 0
    since: float | None = None  # when it became unknown (its silence counts from there)
    override: float | None = None
    flapping: bool = False
    # Times of the most recent transitions (at most flap_transitions), None when there are none.
    flaps: list[float] | None = None
    last_transition: float | None = None
    reboots: int = 0
    # The last offline status (will) that turned the node offline, for the contradiction rule:
    # its time and the node's last_transition before it.
    will_at: float | None = None
    will_prev_transition: float | None = None
    flap_started: bool = False  # the last transition started flapping
    contradicted: int = 0

    def link_quality(self, window: int) -> float | None:
        """Percentage of the heartbeats the node sent that we received, over the last seqs.

        With ``latest`` the highest seq received and ``first`` the first seq received since the
        last reset (boot, HA start, broker reconnect), the window is the ``window`` seqs ending at
        ``latest``; ``expected = min(window, latest - first + 1)``; ``received`` = distinct seqs
        of the window that arrived. Quality = ``100 * received / expected``, rounded to 0.1, and
        None until two distinct seqs arrived (one heartbeat says nothing about a link).
        """
        fill = self.link_fill
        if self.link_latest is None or fill < 2:
            return None
        expected = min(window, fill)
        received = (self.link_bits & ((1 << window) - 1)).bit_count()
        return round(100.0 * received / expected, 1)

    def add_seq(self, seq: int, window: int, full: int) -> None:
        """Record a received seq (strictly above the previous one) in the sliding window.

        ``full`` is the tracker's all-ones mask of the window: stored instead of an equal new
        int, so that nodes with a perfect link share one object.
        """
        latest = self.link_latest
        if latest is None or self.link_fill == 0:
            self.link_fill = 1
            self.link_bits = 1
        else:
            step = seq - latest
            self.link_fill = min(window + 1, self.link_fill + step)
            if step >= window:
                self.link_bits = 1  # everything before fell out of the window
            else:
                bits = ((self.link_bits << step) | 1) & full
                self.link_bits = full if bits == full else bits
        self.link_latest = seq

    def reset_link(self) -> None:
        self.link_bits = 0
        self.link_latest = None
        self.link_fill = 0


def _earliest(*times: float | None) -> float | None:
    """The earliest of the times that are set (None: none is)."""
    present = [t for t in times if t is not None]
    return min(present) if present else None


# What handle() returns: a node's record, opaque to callers (they pass it back, nothing else).
type Tracked = _Node
# Module constant: a global load per check instead of an Enum class attribute.
_ONLINE = Availability.ONLINE


class HeartbeatTracker:
    """Availability state machine for the nodes of one home (see the module docstring)."""

    def __init__(self, settings: TrackerSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._nodes: dict[str, _Node] = {}
        self._heap: list[tuple[float, str]] = []
        self._online = 0
        self._offline = 0
        self._unknown = 0
        self._broker_connected = True
        # Silence (and flap-clear) counts from max(event time, _grace_from): set on broker
        # reconnect and when a suspected fleet-wide silence ends, so every deadline restarts at
        # that time + timeout in O(1).
        self._grace_from = -math.inf
        # Overrides set before the node is known (e.g. from options at start-up).
        self._pending_overrides: dict[str, float] = {}
        # Correlated silence: set while most of the fleet is quiet (expiry held).
        self._silence: FleetSilence | None = None
        self._fleet_check_at: float | None = None  # time of the live _FLEET heap entry
        self._scan_at = -math.inf
        self._scan: tuple[int, int] = (0, 0)
        # The all-ones link window: one object shared by every node whose link is perfect.
        self._link_full = (1 << settings.link_window) - 1
        self._window = settings.link_window  # read per quiet heartbeat: one load, not two
        # Announced intervals, one float object per value (bounded): a fleet announces a few
        # values, and a quiet heartbeat compares against it without a cache miss per node.
        self._intervals: dict[float, float] = {}
        # Live wills dropped because our own link went down within the hold (broker shutdown).
        self.wills_ignored = 0

    # ---------------------------------------------------------------- read-only views

    @property
    def settings(self) -> TrackerSettings:
        return self._settings

    @property
    def broker_connected(self) -> bool:
        return self._broker_connected

    @property
    def fleet_silence(self) -> FleetSilence | None:
        """Set while most online nodes are silent at once and their expiry is held."""
        return self._silence

    @property
    def heap_size(self) -> int:
        """Entries in the deadline heap, live and stale (diagnostics; bounded, see docstring)."""
        return len(self._heap)

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
            contradicted_wills=node.contradicted,
        )

    def state(self, node_id: str) -> Availability | None:
        """The node's availability alone (cheap: entities ask on every state write)."""
        node = self._nodes.get(node_id)
        return None if node is None else node.state

    def node_ids(self) -> list[str]:
        return list(self._nodes)

    def counts(self) -> tuple[int, int]:
        """(online, offline), maintained incrementally; unknown nodes are in neither."""
        return self._online, self._offline

    @property
    def unknown_count(self) -> int:
        """Nodes known but not heard live yet (in no fleet number)."""
        return self._unknown

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`tick` may have work; None if nothing is scheduled.

        May be earlier than needed (a heartbeat moved the node's deadline later): the tick then
        finds nothing to do and re-arms for the real time. Never later than needed. A time at or
        before ``clock()`` after a tick means the tick stopped at its ``limit``: call again soon.
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
            node = self._nodes.get(node_id)
            if reason == REASON_WILL and node is not None and self._told_online(node):
                if retained:
                    return out  # maybe left by a broker restart: the silence timeout decides
                if self._settings.will_hold > 0 and self._broker_connected:
                    # (Not connected: nothing can drop it, and nothing would ever apply it.)
                    self._hold_will(node, now)
                    return out
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
            node.interval = self._share(float(interval))  # the timeout follows (_timeout)
            out.changed.add(node_id)
        if node.seq is not None and seq < node.seq:
            self._reboot(node, REASON_SEQ_RESET, uptime, now, out)
        elif node.uptime is not None and uptime < node.uptime:
            self._reboot(node, REASON_UPTIME_RESET, uptime, now, out)
        if node.seq is None or seq > node.seq:
            node.add_seq(seq, window, self._link_full)  # a duplicate is neither received nor missed
        node.seq = seq
        self._track_uptime(node, uptime, now, out)
        if node.link_quality(window) != quality:
            out.changed.add(node_id)
        self._schedule(node)
        return out

    # ---------------------------------------------------------------- the quiet fast paths
    #
    # Nearly every message is a live one from an online node and changes nothing anybody sees:
    # it only moves ``last_seen`` (and, for a heartbeat, seq, uptime and the link window). These
    # two calls do exactly that, in O(1) and without building an Outcome, when they can prove
    # that on_message / on_heartbeat would return an empty Outcome and push no heap entry;
    # otherwise they change nothing and return False, and the caller takes the full path.
    # tests/test_tracker_fast_path.py runs both on the same generated message sequences.

    def handle(self, node_id: str) -> Tracked | None:
        """The node's record, for the quiet paths below (None: not tracked).

        A caller may keep it for as long as it likes: once the node is forgotten the record
        is detached and the quiet paths decline it (the caller then takes the full path by
        id, and asks for the new handle).
        """
        return self._nodes.get(node_id)

    def try_quiet_message(self, node_id: str) -> bool:
        """``on_message(node_id, retained=False)`` if it changes nothing visible; else False.

        True: ``last_seen`` moved to now and nothing else happened (no event, no state change,
        no heap push, so the glue's timer needs no re-arming).
        """
        node = self._nodes.get(node_id)
        return node is not None and self.quiet_message(node)

    def quiet_message(self, node: Tracked) -> bool:
        """:meth:`try_quiet_message` on a record from :meth:`handle` (no lookup by id)."""
        if (
            node.state is not _ONLINE
            or node.scheduled is None  # also a forgotten node's (see forget)
            or node.will_due is not None  # speaking drops its held will: the full path
        ):
            return False
        now = self._clock()
        last_seen = node.last_seen
        # A later last_seen only moves the node's due time later: the heap invariant holds
        # without a push (module docstring). A clock stepped back needs the full path.
        if last_seen is None or now < last_seen:
            return False
        node.last_seen = now
        return True

    def try_quiet_heartbeat(
        self, node_id: str, *, seq: int, uptime: int, interval: float | None
    ) -> bool:
        """``on_heartbeat(..., retained=False)`` if it changes nothing visible; else False.

        The full path's checks, in its order, on a node already online: the same interval (or
        none announced), the next seq of the same boot (no reboot, no duplicate), a known boot
        time, and a link quality that stays the same.
        """
        node = self._nodes.get(node_id)
        return node is not None and self.quiet_heartbeat(node, seq, uptime, interval)

    def quiet_heartbeat(self, node: Tracked, seq: int, uptime: int, interval: float | None) -> bool:
        """:meth:`try_quiet_heartbeat` on a record from :meth:`handle` (no lookup by id)."""
        if (
            node.state is not _ONLINE
            or node.scheduled is None  # also a forgotten node's (see forget)
            or node.will_due is not None  # speaking drops its held will: the full path
            or (interval is not None and interval != node.interval)  # moves the timeout
            or node.last_boot is None  # the first uptime estimates the boot time (shown)
        ):
            return False
        old_seq = node.seq
        old_uptime = node.uptime
        latest = node.link_latest
        if (
            old_seq is None
            or seq <= old_seq
            or old_uptime is None
            or uptime < old_uptime
            or latest is None
            or seq <= latest
        ):
            return False  # first heartbeat, a duplicate, a reboot, or not a new seq
        fill = node.link_fill
        full = self._link_full
        bits = node.link_bits
        if bits is full and seq - latest == 1 and fill > self._window:
            # Stays perfect (every seq of a full window received, the next one now): only
            # the seq moves. The common case, checked first.
            now = self._clock()
            last_seen = node.last_seen
            if last_seen is None or now < last_seen:
                return False  # a clock stepped back needs the full path
        else:
            if fill < 2:
                return False  # no link quality yet (shown once there is)
            window = self._window
            step = seq - latest
            new_fill = min(window + 1, fill + step)
            new_bits = 1 if step >= window else ((bits << step) | 1) & full
            # Link quality = round(100 * received / expected, 1) (_Node.link_quality): the same
            # received and expected counts give the same quality; anything else takes the full
            # path, which compares the rounded values.
            if min(window, fill) != min(window, new_fill):
                return False
            if (bits & full).bit_count() != new_bits.bit_count():
                return False
            now = self._clock()
            last_seen = node.last_seen
            if last_seen is None or now < last_seen:
                return False
            node.link_bits = full if new_bits == full else new_bits
            node.link_fill = new_fill
        node.last_seen = now
        node.link_latest = seq
        node.seq = seq
        node.uptime = uptime
        return True

    def tick(self, limit: int | None = None) -> Outcome:
        """Process entries due at ``clock()``: silence timeouts, flap clearing, fleet checks.

        ``limit`` bounds the nodes whose state changes in this call, so that many simultaneous
        expiries are spread over several calls (the glue calls again at once when
        :meth:`next_deadline` is not in the future): Home Assistant writes entity states for
        each changed node, and thousands at once would block its event loop.
        """
        out = Outcome()
        if not self._broker_connected:
            return out  # no node is declared offline by silence while we cannot hear it
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            if limit is not None and len(out.changed) >= limit:
                break
            entry = heapq.heappop(heap)
            if entry[1] == _FLEET:
                if entry[0] == self._fleet_check_at:
                    self._fleet_check_at = None
                    self._check_fleet(now)
                continue
            if not self._is_live(entry):
                continue
            node = self._nodes[entry[1]]
            node.scheduled = None
            self._expire(node, now, out)
            self._schedule(node)  # pushes back once if the real due time moved later
        return out

    def set_broker_connected(self, connected: bool) -> Outcome:
        """HA's own MQTT link went down / came back (docs/availability.md, broker outage).

        Down: silence is suspended (tick does nothing). Up: every deadline restarts at
        ``now + timeout`` (grace), and link windows restart (heartbeats lost while we were
        disconnected say nothing about the node's link). Every node is in ``changed`` because
        node entities become unavailable / available again.
        """
        out = Outcome()
        if connected == self._broker_connected:
            return out
        self._broker_connected = connected
        if not connected:
            # Wills still held now came with the loss of our own link: a broker shutting down.
            for node in self._nodes.values():
                if node.will_due is not None:
                    node.will_due = None
                    self.wills_ignored += 1
        if connected:
            # Deadlines only move later, so the heap invariant holds without any push.
            self._grace_from = self._clock()
            self._silence = None  # the outage explained the silence
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
        # Detached: a handle kept by the glue (handle()) is declined by the quiet paths.
        node.scheduled = None
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
                "last_event": node.last_event.value,
            }
            for node_id, node in self._nodes.items()
        }

    def restore(self, data: Mapping[str, Mapping[str, Any]]) -> Outcome:
        """Load :meth:`export` output after an HA restart (docs/availability.md). Fires no events.

        A node persisted online is online again, with its remaining deadline, if
        ``last_seen + timeout > now``; otherwise it is unknown (``restarted``): it was online as
        far as automations know, and it goes offline (with an event) only if it stays silent
        for its timeout counted from now. A node persisted offline stays offline with its
        reason; one persisted unknown (or offline ``not_seen`` by an older version) is unknown
        again, counted from now. Malformed entries are skipped, nodes already known (a live
        message came first) keep their live state, and a ``last_seen`` in the future (the wall
        clock stepped back) is clamped to now.
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
                    node.state = Availability.UNKNOWN
                    node.reason = REASON_RESTARTED
                    node.last_event = Availability.ONLINE
            elif node.state is Availability.OFFLINE and node.reason == REASON_NOT_SEEN:
                node.state = node.last_event = Availability.UNKNOWN
            if node.state is Availability.UNKNOWN:
                node.since = now
            self._add(node)
            out.changed.add(node_id)
        return out

    def _parse_entry(self, node_id: str, entry: Mapping[str, Any], now: float) -> _Node:
        if not isinstance(entry, Mapping):
            raise TypeError("entry is not a mapping")
        state = Availability(entry["state"])
        default_reason = {
            Availability.ONLINE: REASON_MESSAGE,
            Availability.OFFLINE: REASON_NOT_SEEN,
            Availability.UNKNOWN: REASON_NOT_SEEN,
        }[state]
        reason = entry.get("reason") or default_reason
        if not isinstance(reason, str):
            raise TypeError("reason")
        last_event = Availability(entry.get("last_event") or state)
        last_seen = _opt_number(entry.get("last_seen"))
        if last_seen is not None:
            last_seen = min(last_seen, now)
        elif state is Availability.ONLINE:
            raise ValueError("online without last_seen")
        if state is not Availability.UNKNOWN:
            last_event = state  # only an unknown node may differ from its last event
        interval = _opt_number(entry.get("interval"), positive=True)
        if interval is not None:
            interval = self._share(interval)
        override = _opt_number(entry.get("override"), positive=True)
        reboots = _opt_int(entry.get("reboots")) or 0
        last_boot = _opt_number(entry.get("last_boot"))
        seq = _opt_int(entry.get("seq"))
        uptime = _opt_int(entry.get("uptime"))
        return _Node(
            node_id=node_id,
            state=state,
            reason=reason,
            last_event=last_event,
            last_seen=last_seen,
            interval=interval,
            override=override,
            reboots=reboots,
            last_boot=last_boot,
            seq=seq,
            uptime=uptime,
        )

    # ---------------------------------------------------------------- state changes

    def _share(self, interval: float) -> float:
        """The one float object for this interval value (past _SHARED_INTERVALS: itself)."""
        shared = self._intervals.get(interval)
        if shared is None:
            shared = interval
            if len(self._intervals) < _SHARED_INTERVALS:
                self._intervals[interval] = interval
        return shared

    def _new_node(self, node_id: str, state: Availability, reason: str) -> _Node:
        return _Node(
            node_id=node_id,
            state=state,
            reason=reason,
            last_event=state,  # creation is not a transition: no event, this is the baseline
            override=self._pending_overrides.pop(node_id, None),
        )

    def _add(self, node: _Node) -> None:
        self._nodes[node.node_id] = node
        self._count(node.state, +1)
        self._schedule(node)

    def _ensure_known(self, node_id: str, out: Outcome) -> _Node:
        """A retained message: the node exists (unknown until heard live), nothing else."""
        node = self._nodes.get(node_id)
        if node is None:
            node = self._new_node(node_id, Availability.UNKNOWN, REASON_NOT_SEEN)
            node.since = self._clock()
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
        if node.will_due is not None:
            # The node speaks while its will is held: a reconnect race, the will never counts.
            node.will_due = None
            node.contradicted += 1
        state = node.state
        if state is Availability.ONLINE:
            self._schedule(node)  # a no-op unless the clock stepped back
        elif state is Availability.UNKNOWN:
            self._settle(node, Availability.ONLINE, reason, now, out)
        elif node.will_at is not None and 0 <= now - node.will_at <= self._settings.will_window:
            self._contradict_will(node, now, out)
        else:
            self._transition(node, Availability.ONLINE, reason, now, out)
        return node

    def _go_offline(self, node_id: str, reason: str, now: float, out: Outcome) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._new_node(node_id, Availability.OFFLINE, reason)
            self._add(node)
            out.changed.add(node_id)
        elif node.state is Availability.ONLINE:
            node.will_at = now
            node.will_prev_transition = node.last_transition
            node.flap_started = False
            self._transition(node, Availability.OFFLINE, reason, now, out)
        elif node.state is Availability.UNKNOWN:
            self._settle(node, Availability.OFFLINE, reason, now, out)
        elif node.reason != reason:
            # Already offline (e.g. timed out before the LWT arrived): keep the better reason.
            node.reason = reason
            out.changed.add(node_id)

    def _told_online(self, node: _Node) -> bool:
        """Automations were last told the node is online (online, or unknown after a restart)."""
        return node.state is Availability.ONLINE or (
            node.state is Availability.UNKNOWN and node.last_event is Availability.ONLINE
        )

    def _hold_will(self, node: _Node, now: float) -> None:
        if node.will_due is None:
            node.will_due = now + self._settings.will_hold
            self._schedule(node)

    def _contradict_will(self, node: _Node, now: float, out: Outcome) -> None:
        """A live message right after the will: the will was a race or forged.

        The node is online again with REASON_WILL_CONTRADICTED, and the will's transition is
        taken out of the flap history (so a forged will a minute cannot make it flap and mute
        its real events; if the will was the transition that started flapping, the node is not
        flapping any more); the online event (unless muted) says why.
        """
        if node.flaps:
            node.flaps.pop()
        if node.flap_started:
            # The will was the transition that started flapping: without it, it is not.
            node.flapping = node.flap_started = False
        node.last_transition = node.will_prev_transition
        node.will_at = None
        node.contradicted += 1
        self._count(node.state, -1)
        node.state = Availability.ONLINE
        node.reason = REASON_WILL_CONTRADICTED
        self._count(node.state, +1)
        out.changed.add(node.node_id)
        if not node.flapping and node.last_event is not node.state:
            self._emit_state(node, REASON_WILL_CONTRADICTED, now, out)
        self._schedule(node)

    def _settle(
        self, node: _Node, state: Availability, reason: str, now: float, out: Outcome
    ) -> None:
        """Unknown -> online / offline: the first verdict since it became known.

        Not a transition (no flap history). An event fires only when automations were told
        something else before (a node online before an HA restart that then stays silent).
        """
        self._count(node.state, -1)
        node.state = state
        node.reason = reason
        node.since = None
        self._count(state, +1)
        out.changed.add(node.node_id)
        if node.last_event is Availability.UNKNOWN:
            node.last_event = state  # the baseline
        elif node.last_event is not state and not node.flapping:
            self._emit_state(node, reason, now, out)
        self._schedule(node)

    def _transition(
        self,
        node: _Node,
        state: Availability,
        reason: str,
        now: float,
        out: Outcome,
    ) -> None:
        """Online <-> offline, with flap damping (docs/availability.md, flapping)."""
        self._count(node.state, -1)
        node.state = state
        node.reason = reason
        self._count(state, +1)
        out.changed.add(node.node_id)
        node.last_transition = now
        settings = self._settings
        flaps = node.flaps
        if flaps is None:
            flaps = node.flaps = []
        flaps.append(now)
        if len(flaps) > settings.flap_transitions:
            del flaps[0]
        if (
            not node.flapping
            and len(flaps) >= settings.flap_transitions
            and now - flaps[0] <= settings.flap_window
        ):
            node.flapping = node.flap_started = True
            out.events.append(TrackerEvent(EventType.FLAPPING, node.node_id, REASON_FLAPPING, now))
        if not node.flapping:
            self._emit_state(node, reason, now, out)
        self._schedule(node)

    def _emit_state(self, node: _Node, reason: str, now: float, out: Outcome) -> None:
        out.events.append(TrackerEvent(EventType(node.state.value), node.node_id, reason, now))
        node.last_event = node.state

    def _expire(self, node: _Node, now: float, out: Outcome) -> None:
        """Whatever is due for the node at ``now``: a held will, silence, flap clearing."""
        if node.will_due is not None and now >= node.will_due:
            node.will_due = None
            self._go_offline(node.node_id, REASON_WILL, now, out)
        if node.state is Availability.UNKNOWN:
            deadline = self._silence_deadline(node)
            if deadline is not None and now > deadline:
                reason = REASON_TIMEOUT if node.reason == REASON_RESTARTED else REASON_NOT_SEEN
                self._settle(node, Availability.OFFLINE, reason, now, out)
        elif node.state is Availability.ONLINE:
            deadline = self._silence_deadline(node)
            if deadline is not None and now > deadline:
                if self._silence is None:
                    if not self._starts_silence(now):
                        self._transition(node, Availability.OFFLINE, REASON_TIMEOUT, now, out)
                    # else held: the caller's _schedule pushes it to the end of the hold.
                else:
                    self._check_fleet(now, fresh=False)  # heard again meanwhile?
                    if self._silence is not None:
                        self._transition(node, Availability.OFFLINE, REASON_MASS_SILENCE, now, out)
        clear_at = self._flap_clear_at(node)
        if clear_at is not None and now >= clear_at:
            node.flapping = False
            node.flaps = None
            out.changed.add(node.node_id)
            if node.last_event is not node.state and node.state is not Availability.UNKNOWN:
                # Events were suppressed while flapping: let automations catch up.
                self._emit_state(node, REASON_FLAPPING_ENDED, now, out)

    # ---------------------------------------------------------------- correlated silence

    def _starts_silence(self, now: float) -> bool:
        """An online node's timeout passed: is most of the fleet late with it?

        Most of the fleet late at once is evidence about us (a stalled event loop) or the
        broker (dropping our subscription's messages), like a broker outage: expiry is held
        (see _silence_deadline). The hold of each node ends one timeout after the silence
        started; if the fleet is still silent then, the node goes offline with
        REASON_MASS_SILENCE (a real mass outage is reported, later and with its own reason).
        If the fleet is heard again first, every deadline restarts from then (like a broker
        reconnect).
        """
        late, online = self._fleet_scan(now)
        if not self._is_mass(late, online):
            return False
        self._silence = FleetSilence(now, late, online)
        self._arm_fleet_check(now + _FLEET_RECHECK)
        return True

    def _check_fleet(self, now: float, *, fresh: bool = True) -> None:
        """While silence is suspected: end it as soon as most of the fleet is heard again."""
        if self._silence is None:
            return
        late, online = self._fleet_scan(now, fresh=fresh)
        if self._is_mass(late, online):
            self._silence = FleetSilence(self._silence.since, late, online)
            if fresh:
                self._arm_fleet_check(now + _FLEET_RECHECK)
            return
        # Heard again: silence counts from now for everyone (deadlines only move later).
        self._silence = None
        self._grace_from = max(self._grace_from, now)

    def _is_mass(self, late: int, online: int) -> bool:
        settings = self._settings
        return late >= settings.mass_min and late > settings.mass_ratio * online

    def _fleet_scan(self, now: float, *, fresh: bool = False) -> tuple[int, int]:
        """(late, online): online nodes not heard for 1.5 intervals. O(N), at most once a second.

        Runs only when an online node's timeout passes (or while silence is suspected), never
        per message.
        """
        if not fresh and now - self._scan_at < _FLEET_RECHECK and now >= self._scan_at:
            return self._scan
        late = online = 0
        grace = self._grace_from
        for node in self._nodes.values():
            if node.state is not Availability.ONLINE or node.last_seen is None:
                continue
            online += 1
            quiet = now - max(node.last_seen, grace)
            if quiet > min(_LATE_INTERVALS * self._interval(node), self._timeout(node)):
                late += 1
        self._scan_at = now
        self._scan = (late, online)
        return self._scan

    def _arm_fleet_check(self, at: float) -> None:
        if self._fleet_check_at is None or at < self._fleet_check_at:
            self._fleet_check_at = at
            heapq.heappush(self._heap, (at, _FLEET))

    # ---------------------------------------------------------------- reboots, counts

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
        elif state is Availability.OFFLINE:
            self._offline += delta
        else:
            self._unknown += delta

    # ---------------------------------------------------------------- timing

    def _interval(self, node: _Node) -> float:
        return self._settings.default_interval if node.interval is None else node.interval

    def _timeout(self, node: _Node) -> float:
        if node.override is not None:
            return node.override
        settings = self._settings
        return max(settings.min_timeout, settings.multiplier * self._interval(node))

    def _silence_deadline(self, node: _Node) -> float | None:
        """Online (or unknown) until ``now > deadline``, with grace after a reconnect.

        While fleet silence is suspected an online node is held until one timeout after the
        silence started (see _starts_silence).
        """
        if node.state is Availability.ONLINE:
            start = node.last_seen
        elif node.state is Availability.UNKNOWN:
            start = node.since
        else:
            return None
        if start is None:
            return None
        timeout = self._timeout(node)
        deadline = max(start, self._grace_from) + timeout
        silence = self._silence
        if silence is not None and node.state is Availability.ONLINE:
            return max(deadline, silence.since + timeout)
        return deadline

    def _flap_clear_at(self, node: _Node) -> float | None:
        if not node.flapping or node.last_transition is None:
            return None
        return max(node.last_transition, self._grace_from) + 2 * self._timeout(node)

    def _deadline(self, node: _Node) -> float | None:
        return _earliest(self._silence_deadline(node), self._flap_clear_at(node), node.will_due)

    def _due(self, node: _Node) -> float | None:
        """Earliest time tick() has work for the node (silence needs now > deadline)."""
        silence = self._silence_deadline(node)
        if silence is not None:
            silence = math.nextafter(silence, math.inf)
        return _earliest(silence, self._flap_clear_at(node), node.will_due)

    def _schedule(self, node: _Node) -> None:
        """Restore the heap invariant after the node's due time may have moved."""
        due = self._due(node)
        if due is not None and (node.scheduled is None or due < node.scheduled):
            node.scheduled = due
            heapq.heappush(self._heap, (due, node.node_id))
            self._maybe_compact()

    def _is_live(self, entry: tuple[float, str]) -> bool:
        if entry[1] == _FLEET:
            return entry[0] == self._fleet_check_at
        node = self._nodes.get(entry[1])
        return node is not None and node.scheduled == entry[0]

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._nodes) + _HEAP_SLACK:
            self._heap = [
                (node.scheduled, node_id)
                for node_id, node in self._nodes.items()
                if node.scheduled is not None
            ]
            if self._fleet_check_at is not None:
                self._heap.append((self._fleet_check_at, _FLEET))
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
