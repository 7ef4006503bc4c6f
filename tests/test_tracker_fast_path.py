"""The tracker's quiet fast paths equal its full paths (issue 14: O(1) per message).

`try_quiet_message` / `try_quiet_heartbeat` may only take a message the full path would turn
into an empty Outcome without a heap push. Two trackers get the same generated sequence of
messages, clock moves, ticks and broker outages: one as the glue feeds it (quiet path first,
full path when it declines), one always on the full path. After every step they must agree on
every node's status, the export, the fleet counts and the next deadline; and whenever the
quiet path took a message, the full path's Outcome for it was empty and pushed nothing.
The glue keeps each node's record (`handle`) like the hub's routes do, across forgets: a
forgotten node's record must be declined, never updated.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from custom_components.heartbeat_iot.homesync.tracker import (
    Availability,
    HeartbeatTracker,
    Outcome,
    Tracked,
    TrackerSettings,
)

from .fakes import FakeClock

NODES = ("a", "b", "c")
SETTINGS = TrackerSettings(link_window=4, flap_transitions=3, mass_min=2)

node = st.sampled_from(NODES)
heartbeat = st.tuples(
    st.just("heartbeat"),
    node,
    # Mostly the next seq of the same boot; sometimes a gap, a duplicate or a reboot.
    st.sampled_from([1, 1, 1, 1, 1, 1, 2, 3, 5, 0, -3]),
    st.sampled_from([30, 30, 30, 30, 0, -100]),  # uptime delta
    st.sampled_from([None, None, None, 30.0, 30.0, 10.0, 60]),  # announced interval
    st.sampled_from([False] * 9 + [True]),  # retained (not on the wire, but possible)
)
message = st.tuples(st.just("message"), node, st.sampled_from([False] * 5 + [True]))
# Heartbeats and live messages dominate, as on the wire: runs of them fill the link window.
step = st.one_of(
    heartbeat,
    heartbeat,
    heartbeat,
    heartbeat,
    message,
    st.tuples(st.just("online"), node, st.booleans(), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.4, 5.0, 30.0, 95.0, 400.0, -2.0])),
    st.tuples(st.just("tick")),
    st.tuples(st.just("broker"), st.booleans()),
    st.tuples(st.just("override"), node, st.sampled_from([None, 15.0, 200.0])),
    st.tuples(st.just("forget"), node),
)


class _Pair:
    """The same inputs to a tracker fed like the glue and to one on the full path only."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.glue = HeartbeatTracker(SETTINGS, self.clock)
        self.full = HeartbeatTracker(SETTINGS, self.clock)
        self.seq = dict.fromkeys(NODES, 0)
        self.uptime = dict.fromkeys(NODES, 0)
        self.quiet_taken = 0
        # What the hub keeps per topic: the record from handle(), refreshed after a full path
        # only (so it may belong to a forgotten node).
        self.handles: dict[str, Tracked | None] = {}

    def both(self, call: str, *args: Any, **kwargs: Any) -> None:
        assert getattr(self.glue, call)(*args, **kwargs) == getattr(self.full, call)(
            *args, **kwargs
        )

    def live(self, quiet: bool, full: Outcome, heap_before: int) -> None:
        if quiet:
            self.quiet_taken += 1
            assert full == Outcome(), "the quiet path took a message that changes something"
            assert self.full.heap_size == heap_before, "the quiet path skipped a heap push"

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "heartbeat":
            _, node_id, dseq, dup, interval, retained = op
            self.seq[node_id] = max(0, self.seq[node_id] + dseq)
            self.uptime[node_id] = max(0, self.uptime[node_id] + dup)
            kwargs: dict[str, Any] = {
                "seq": self.seq[node_id],
                "uptime": self.uptime[node_id],
                "interval": interval,
            }
            if retained:
                self.both("on_heartbeat", node_id, retained=True, **kwargs)
                return
            handle = self.handles.get(node_id)
            if handle is None:
                quiet = self.glue.try_quiet_heartbeat(node_id, **kwargs)
            else:
                quiet = self.glue.quiet_heartbeat(handle, *kwargs.values())
            if not quiet:
                self.glue.on_heartbeat(node_id, retained=False, **kwargs)
                self.handles[node_id] = self.glue.handle(node_id)
            heap_before = self.full.heap_size
            self.live(quiet, self.full.on_heartbeat(node_id, retained=False, **kwargs), heap_before)
        elif kind == "message":
            _, node_id, retained = op
            if retained:
                self.both("on_message", node_id, retained=True)
                return
            handle = self.handles.get(node_id)
            if handle is None:
                quiet = self.glue.try_quiet_message(node_id)
            else:
                quiet = self.glue.quiet_message(handle)
            if not quiet:
                self.glue.on_message(node_id, retained=False)
                self.handles[node_id] = self.glue.handle(node_id)
            heap_before = self.full.heap_size
            self.live(quiet, self.full.on_message(node_id, retained=False), heap_before)
        elif kind == "online":
            _, node_id, online, retained = op
            self.both(
                "on_online_status", node_id, online, reason="", uptime=None, retained=retained
            )
        elif kind == "advance":
            self.clock.advance(op[1])
        elif kind == "tick":
            self.both("tick")
        elif kind == "broker":
            self.both("set_broker_connected", op[1])
        elif kind == "forget":
            self.both("forget", op[1])  # the glue's handle of it goes stale, on purpose
        else:
            _, node_id, seconds = op
            self.both("set_timeout_override", node_id, seconds)

    def check(self) -> None:
        glue, full = self.glue, self.full
        for node_id in NODES:
            assert glue.status(node_id) == full.status(node_id), node_id
        assert glue.export() == full.export()
        assert glue.counts() == full.counts()
        assert glue.next_deadline() == full.next_deadline()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=120))
def test_quiet_paths_equal_the_full_paths(ops: list[tuple[Any, ...]]) -> None:
    pair = _Pair()
    for op in ops:
        pair.run(op)
        pair.check()


def test_a_steady_stream_takes_the_quiet_paths() -> None:
    """The common case really is fast: after the link window filled, heartbeats are quiet."""
    pair = _Pair()
    for _ in range(SETTINGS.link_window + 2):
        pair.run(("heartbeat", "a", 1, 30, 30.0, False))
        pair.run(("message", "a", False))
        pair.run(("advance", 30.0))
        pair.run(("tick",))
        pair.check()
    taken = pair.quiet_taken
    pair.run(("heartbeat", "a", 1, 30, None, False))
    pair.run(("heartbeat", "a", 1, 30, 30.0, False))
    pair.run(("message", "a", False))
    assert pair.quiet_taken == taken + 3
    assert pair.glue.state("a") is Availability.ONLINE


def test_what_the_quiet_paths_decline() -> None:
    """Unknown node, first heartbeat, new interval, reboot, duplicate: the full path decides."""
    clock = FakeClock()
    tracker = HeartbeatTracker(SETTINGS, clock)
    assert not tracker.try_quiet_message("a")  # unknown
    assert not tracker.try_quiet_heartbeat("a", seq=1, uptime=1, interval=None)
    tracker.on_heartbeat("a", seq=1, uptime=1, interval=30.0, retained=False)
    assert not tracker.try_quiet_heartbeat("a", seq=2, uptime=31, interval=60.0)  # interval
    assert not tracker.try_quiet_heartbeat("a", seq=1, uptime=31, interval=None)  # duplicate
    assert not tracker.try_quiet_heartbeat("a", seq=3, uptime=0, interval=None)  # reboot
    clock.advance(-5.0)
    assert not tracker.try_quiet_message("a")  # the clock stepped back


def test_a_forgotten_nodes_record_is_declined() -> None:
    """The hub keeps records across messages: once the node is forgotten, they do nothing."""
    clock = FakeClock()
    tracker = HeartbeatTracker(SETTINGS, clock)
    for seq in range(1, SETTINGS.link_window + 3):
        tracker.on_heartbeat("a", seq=seq, uptime=seq, interval=None, retained=False)
    handle = tracker.handle("a")
    assert handle is not None
    seq = SETTINGS.link_window + 3
    assert tracker.quiet_heartbeat(handle, seq, seq, None)
    tracker.forget("a")
    assert not tracker.quiet_heartbeat(handle, seq + 1, seq + 1, None)
    assert not tracker.quiet_message(handle)
    assert tracker.state("a") is None


def test_a_link_quality_change_is_declined_even_with_the_same_count() -> None:
    """2 of 2 heartbeats (100 %), then a gap that keeps 2 received of 4 expected (50 %)."""
    tracker = HeartbeatTracker(SETTINGS, FakeClock())
    tracker.on_heartbeat("a", seq=1, uptime=1, interval=None, retained=False)
    tracker.on_heartbeat("a", seq=2, uptime=2, interval=None, retained=False)
    assert not tracker.try_quiet_heartbeat("a", seq=5, uptime=5, interval=None)
    out = tracker.on_heartbeat("a", seq=5, uptime=5, interval=None, retained=False)
    assert out.changed == {"a"}


def test_many_distinct_intervals_are_all_kept() -> None:
    """Intervals are shared objects up to a bound; beyond it each is kept as it came."""
    tracker = HeartbeatTracker(SETTINGS, FakeClock())
    for seq in range(1, 101):
        tracker.on_heartbeat("a", seq=seq, uptime=seq, interval=float(seq), retained=False)
        status = tracker.status("a")
        assert status is not None
        assert status.interval == float(seq)
