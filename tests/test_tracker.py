"""Tests of the pure availability tracker (docs/architecture.md §5), with a fake wall clock."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st
import pytest

from custom_components.heartbeat_iot.homesync.tracker import (
    Availability,
    EventType,
    HeartbeatTracker,
    NodeStatus,
    Outcome,
    TrackerEvent,
    TrackerSettings,
)

from .fakes import FakeClock

T0 = 1_700_000_000.0
ON = Availability.ONLINE
OFF = Availability.OFFLINE
UNK = Availability.UNKNOWN


# The state machine tests below take a will at once; the 1 s hold that absorbs a broker's
# shutdown wills has its own tests (tests/test_will_hold.py) and the property tests keep it.
NO_HOLD = TrackerSettings(will_hold=0.0)


def make(settings: TrackerSettings | None = None) -> tuple[HeartbeatTracker, FakeClock]:
    clock = FakeClock(T0)
    return HeartbeatTracker(settings or NO_HOLD, clock), clock


def st_(tracker: HeartbeatTracker, node_id: str = "n1") -> NodeStatus:
    status = tracker.status(node_id)
    assert status is not None
    return status


def hb(
    tracker: HeartbeatTracker,
    node_id: str = "n1",
    seq: int = 0,
    uptime: int = 100,
    interval: float | None = None,
    *,
    retained: bool = False,
) -> Outcome:
    return tracker.on_heartbeat(
        node_id, seq=seq, uptime=uptime, interval=interval, retained=retained
    )


def lwt(tracker: HeartbeatTracker, node_id: str = "n1", *, retained: bool = False) -> Outcome:
    return tracker.on_online_status(
        node_id, False, reason="unexpected_disconnect", uptime=None, retained=retained
    )


def kinds(outcome: Outcome) -> list[tuple[EventType, str]]:
    return [(event.type, event.reason) for event in outcome.events]


def run_until(tracker: HeartbeatTracker, clock: FakeClock, until: float) -> Outcome:
    """Drive the tracker the way the glue does: a timer at next_deadline() calls tick()."""
    total = Outcome()
    while (due := tracker.next_deadline()) is not None and due <= until:
        clock.now = max(clock.now, due)
        out = tracker.tick()
        total.changed |= out.changed
        total.events += out.events
    clock.now = max(clock.now, until)
    out = tracker.tick()
    total.changed |= out.changed
    total.events += out.events
    return total


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_interval": 0},
        {"multiplier": -1.0},
        {"min_timeout": math.nan},
        {"flap_window": math.inf},
        {"flap_transitions": 0},
        {"link_window": 2.5},
        {"link_window": True},
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        TrackerSettings(**kwargs)


# ---------------------------------------------------------------- proof of life (rules 1-3)


def test_live_message_creates_an_online_node_without_event() -> None:
    tracker, clock = make()
    out = tracker.on_message("n1", retained=False)
    assert out.changed == {"n1"}
    assert out.events == []  # creation is not a transition
    status = st_(tracker)
    assert (status.state, status.reason, status.last_seen) == (ON, "message", T0)
    assert status.deadline == T0 + 90
    assert tracker.node_ids() == ["n1"]
    # More proof of life changes nothing a user sees: no state write.
    clock.advance(5)
    out = tracker.on_message("n1", retained=False)
    assert out == Outcome()
    assert st_(tracker).last_seen == T0 + 5


def test_proof_of_life_brings_an_offline_node_online() -> None:
    tracker, clock = make()
    hb(tracker)
    lwt(tracker)
    clock.advance(3)
    out = tracker.on_message("n1", retained=False)
    assert out.changed == {"n1"}
    assert out.events == [TrackerEvent(EventType.ONLINE, "n1", "message", T0 + 3)]
    assert st_(tracker).state is ON


def test_retained_message_is_not_proof_of_life() -> None:
    tracker, clock = make()
    out = tracker.on_message("n1", retained=True)
    assert out.changed == {"n1"}
    assert out.events == []
    status = st_(tracker)
    # Neither online nor offline until heard live, or until its timeout passes (issue 10 #1).
    assert (status.state, status.reason, status.last_seen, status.deadline) == (
        UNK,
        "not_seen",
        None,
        T0 + 90,
    )
    assert tracker.counts() == (0, 0)
    # A retained message for a known node does nothing at all.
    assert tracker.on_message("n1", retained=True) == Outcome()
    hb(tracker)
    clock.advance(10)
    assert tracker.on_message("n1", retained=True) == Outcome()
    assert st_(tracker).last_seen == T0


def test_retained_heartbeat_only_makes_the_node_known() -> None:
    tracker, _ = make()
    out = hb(tracker, seq=7, interval=5, retained=True)
    assert out.changed == {"n1"}
    status = st_(tracker)
    assert (status.state, status.interval, status.link_quality) == (UNK, 30.0, None)
    assert hb(tracker, retained=True) == Outcome()


def test_retained_birth_does_not_mark_a_node_online() -> None:
    tracker, _ = make()
    out = tracker.on_online_status("n1", True, reason="boot", uptime=5, retained=True)
    assert out.changed == {"n1"}
    assert st_(tracker).state is UNK
    assert st_(tracker).reason == "not_seen"
    # Nor does it for a node already known offline.
    lwt(tracker)
    assert tracker.on_online_status("n1", True, reason="boot", uptime=5, retained=True) == Outcome()
    assert st_(tracker).state is OFF


def test_retained_graceful_offline_marks_the_node_offline_at_once() -> None:
    """The node's own retained goodbye is its word; a retained *will* of an online node is
    not (tests/test_will_hold.py)."""
    tracker, clock = make()
    hb(tracker)
    clock.advance(1)
    out = tracker.on_online_status("n1", False, reason="shutdown", uptime=None, retained=True)
    assert out.changed == {"n1"}
    assert out.events == [TrackerEvent(EventType.OFFLINE, "n1", "shutdown", T0 + 1)]
    status = st_(tracker)
    assert (status.state, status.reason, status.last_seen, status.deadline) == (
        OFF,
        "shutdown",
        T0,
        None,
    )


def test_lwt_fast_path_and_it_is_not_proof_of_life() -> None:
    tracker, clock = make()
    hb(tracker)
    clock.advance(20)
    out = tracker.on_online_status("n1", False, reason="shutdown", uptime=None, retained=False)
    assert kinds(out) == [(EventType.OFFLINE, "shutdown")]
    assert st_(tracker).last_seen == T0  # the will is the broker's message, not the node's
    assert tracker.counts() == (0, 1)


def test_offline_status_for_an_offline_node_only_refines_the_reason() -> None:
    tracker, clock = make()
    hb(tracker)
    run_until(tracker, clock, T0 + 91)
    assert st_(tracker).reason == "timeout"
    out = lwt(tracker)
    assert out.changed == {"n1"}
    assert out.events == []  # no second offline event
    assert st_(tracker).reason == "unexpected_disconnect"
    assert lwt(tracker) == Outcome()


def test_offline_status_for_an_unknown_node_creates_it_offline() -> None:
    tracker, _ = make()
    out = tracker.on_online_status("n1", False, reason="", uptime=None, retained=True)
    assert out.changed == {"n1"}
    assert out.events == []
    assert (st_(tracker).state, st_(tracker).reason) == (OFF, "offline")


def test_live_birth_is_proof_of_life_with_its_reason() -> None:
    tracker, clock = make()
    tracker.on_message("n1", retained=True)
    clock.advance(2)
    out = tracker.on_online_status("n1", True, reason="reconnect", uptime=50, retained=False)
    assert out.events == []  # the first verdict on a known node is not a transition
    status = st_(tracker)
    assert (status.state, status.reason, status.last_boot) == (ON, "reconnect", T0 + 2 - 50)
    # An empty reason falls back to "message".
    tracker.on_online_status("n2", True, reason="", uptime=None, retained=False)
    assert st_(tracker, "n2").reason == "message"


# ---------------------------------------------------------------- silence (rule 4)


def test_silence_goes_offline_strictly_after_the_timeout() -> None:
    tracker, clock = make()
    hb(tracker)
    due = tracker.next_deadline()
    assert due is not None
    assert T0 + 90 < due < T0 + 90 + 1e-3  # the first instant at which now > deadline

    clock.now = T0 + 90  # exactly at the timeout: still online
    assert tracker.tick() == Outcome()
    assert st_(tracker).state is ON
    assert tracker.next_deadline() == due  # nothing popped, no busy loop for the glue

    clock.now = T0 + 90.001
    out = tracker.tick()
    assert out.changed == {"n1"}
    assert out.events == [TrackerEvent(EventType.OFFLINE, "n1", "timeout", T0 + 90.001)]
    assert (st_(tracker).state, st_(tracker).deadline) == (OFF, None)
    assert tracker.next_deadline() is None


def test_tick_before_the_deadline_does_nothing() -> None:
    tracker, clock = make()
    hb(tracker)
    clock.advance(89)
    assert tracker.tick() == Outcome()
    assert st_(tracker).state is ON


def test_heartbeats_move_the_deadline_without_rescheduling() -> None:
    tracker, clock = make()
    hb(tracker)
    first = tracker.next_deadline()
    clock.advance(60)
    hb(tracker, seq=1)
    assert tracker.next_deadline() == first  # lazy: the heap entry stays where it was
    assert st_(tracker).deadline == T0 + 150
    out = run_until(tracker, clock, T0 + 150)
    assert out == Outcome()
    due = tracker.next_deadline()
    assert due is not None
    assert due > T0 + 150
    out = run_until(tracker, clock, T0 + 151)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]


def test_per_node_timeout_override() -> None:
    tracker, clock = make()
    hb(tracker, "n1")
    hb(tracker, "n2")
    out = tracker.set_timeout_override("n1", 10)
    assert out.changed == {"n1"}
    assert tracker.set_timeout_override("n1", 10.0) == Outcome()
    assert (st_(tracker).timeout, st_(tracker).timeout_override) == (10.0, 10.0)
    assert tracker.next_deadline() == math.nextafter(T0 + 10, math.inf)  # moved earlier
    out = run_until(tracker, clock, T0 + 10.5)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]
    assert st_(tracker, "n2").state is ON
    assert tracker.set_timeout_override("n1", None).changed == {"n1"}
    assert st_(tracker).timeout == 90.0

    with pytest.raises(ValueError, match="positive"):
        tracker.set_timeout_override("n1", 0)
    with pytest.raises(ValueError, match="positive"):
        tracker.set_timeout_override("n1", math.inf)


def test_override_for_an_unknown_node_applies_when_it_appears() -> None:
    tracker, _ = make()
    assert tracker.set_timeout_override("later", 15) == Outcome()
    assert tracker.status("later") is None
    tracker.set_timeout_override("cleared", 15)
    tracker.set_timeout_override("cleared", None)
    hb(tracker, "later")
    hb(tracker, "cleared")
    assert st_(tracker, "later").timeout == 15.0
    assert st_(tracker, "cleared").timeout == 90.0


def test_interval_announcement_changes_the_timeout() -> None:
    tracker, clock = make()
    hb(tracker, interval=None)
    assert (st_(tracker).interval, st_(tracker).timeout) == (30.0, 90.0)
    out = hb(tracker, seq=1, interval=60)
    assert out.changed == {"n1"}
    assert (st_(tracker).interval, st_(tracker).timeout) == (60.0, 180.0)
    assert hb(tracker, seq=2, interval=60) == Outcome()  # same announcement: nothing to write
    assert hb(tracker, seq=3, interval=None) == Outcome()  # no announcement keeps the last one
    for bogus in (0, -5, math.nan):
        assert hb(tracker, seq=4, interval=bogus) == Outcome()
    assert st_(tracker).timeout == 180.0
    out = run_until(tracker, clock, T0 + 179)
    assert out == Outcome()
    # A shorter interval brings the deadline forward.
    hb(tracker, seq=5, interval=10)
    assert st_(tracker).timeout == 30.0
    out = run_until(tracker, clock, T0 + 179 + 30.5)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]


def test_min_timeout_bounds_short_intervals() -> None:
    tracker, _ = make(TrackerSettings(min_timeout=45, multiplier=3))
    hb(tracker, interval=5)
    assert st_(tracker).timeout == 45.0  # max(45, 3 * 5)
    hb(tracker, seq=1, interval=20)
    assert st_(tracker).timeout == 60.0  # max(45, 3 * 20)


# ---------------------------------------------------------------- broker outage (rule 5)


def test_broker_outage_suspends_silence_and_gives_grace() -> None:
    tracker, clock = make()
    hb(tracker, "quiet")
    hb(tracker, "chatty")
    clock.advance(10)
    out = tracker.set_broker_connected(False)
    assert out.changed == {"quiet", "chatty"}  # entities become unavailable
    assert out.events == []
    assert tracker.set_broker_connected(False) == Outcome()
    assert not tracker.broker_connected
    assert tracker.next_deadline() is None
    assert st_(tracker, "quiet").deadline is None

    # Five minutes down: nothing is declared offline, whatever the glue does.
    clock.advance(300)
    assert tracker.tick() == Outcome()
    assert tracker.counts() == (2, 0)

    reconnect = clock.now
    out = tracker.set_broker_connected(True)
    assert out.changed == {"quiet", "chatty"}
    assert out.events == []
    assert st_(tracker, "quiet").deadline == reconnect + 90
    clock.advance(10)
    hb(tracker, "chatty", seq=1)

    # Silence counts again only after the grace.
    assert run_until(tracker, clock, reconnect + 90) == Outcome()
    out = run_until(tracker, clock, reconnect + 90.5)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]
    assert [event.node_id for event in out.events] == ["quiet"]
    assert st_(tracker, "chatty").state is ON
    out = run_until(tracker, clock, reconnect + 100.5)
    assert [event.node_id for event in out.events] == ["chatty"]


def test_offline_node_is_not_revived_by_a_reconnect() -> None:
    tracker, clock = make()
    hb(tracker)
    lwt(tracker)
    tracker.set_broker_connected(False)
    clock.advance(30)
    tracker.set_broker_connected(True)
    assert (st_(tracker).state, st_(tracker).deadline) == (OFF, None)


# ---------------------------------------------------------------- HA restart (rule 6)


def _persisted(state: str = "online", last_seen: float = T0, **extra: Any) -> dict[str, Any]:
    return {"state": state, "reason": "heartbeat", "last_seen": last_seen, **extra}


def test_restore_recent_node_is_online_with_the_remaining_deadline() -> None:
    tracker, clock = make()
    clock.advance(60)
    out = tracker.restore({"n1": _persisted()})
    assert out.changed == {"n1"}
    assert out.events == []
    status = st_(tracker)
    assert (status.state, status.reason, status.deadline) == (ON, "heartbeat", T0 + 90)
    assert tracker.counts() == (1, 0)
    out = run_until(tracker, clock, T0 + 90.5)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]


def test_restore_stale_node_is_offline() -> None:
    tracker, clock = make()
    clock.advance(90)  # last_seen + timeout == now: not recent any more
    out = tracker.restore(
        {
            "stale": _persisted(),
            "gone": _persisted("offline", reason="shutdown"),
            "never": {"state": "offline", "last_seen": None},
        }
    )
    assert out.changed == {"stale", "gone", "never"}
    assert out.events == []
    # Not heard since the start: unknown, in no fleet count, for one timeout from now.
    assert (st_(tracker, "stale").state, st_(tracker, "stale").reason) == (UNK, "restarted")
    assert st_(tracker, "stale").deadline == T0 + 90 + 90
    assert (st_(tracker, "gone").state, st_(tracker, "gone").reason) == (OFF, "shutdown")
    assert (st_(tracker, "never").state, st_(tracker, "never").reason) == (UNK, "not_seen")
    assert tracker.counts() == (0, 1)
    # The stale node speaks: it was online before the restart, so nothing happened.
    out = hb(tracker, "stale")
    assert out.events == []
    assert st_(tracker, "stale").state is ON


def test_restore_skips_garbage_entries() -> None:
    tracker, _ = make()
    data: dict[Any, Any] = {
        "not_a_mapping": "online",
        "empty": {},
        "bad_state": {"state": "maybe"},
        "online_never_seen": {"state": "online", "last_seen": None},
        "bad_last_seen": {"state": "online", "last_seen": "yesterday"},
        "nan_last_seen": {"state": "online", "last_seen": math.nan},
        "bool_last_seen": {"state": "online", "last_seen": True},
        "negative_reboots": {"state": "offline", "reboots": -1},
        "float_seq": {"state": "offline", "seq": 1.5},
        "zero_interval": {"state": "offline", "interval": 0},
        "bad_override": {"state": "offline", "override": "x"},
        "bad_reason": {"state": "offline", "reason": 5},
        "": {"state": "offline"},
        7: {"state": "offline"},
        "ok": {"state": "offline"},
    }
    out = tracker.restore(data)
    assert out.changed == {"ok"}
    assert tracker.node_ids() == ["ok"]
    assert (st_(tracker, "ok").reason, st_(tracker, "ok").reboots) == ("not_seen", 0)


def test_restore_defaults_reason_and_does_not_override_live_nodes() -> None:
    tracker, clock = make()
    hb(tracker, "live")
    clock.advance(1)
    quiet = {"state": "online", "last_seen": T0}
    out = tracker.restore({"live": _persisted("offline", reason="shutdown"), "quiet": quiet})
    assert out.changed == {"quiet"}
    assert st_(tracker, "live").state is ON  # the live message came first and wins
    assert st_(tracker, "quiet").reason == "message"


def test_restore_clamps_a_future_last_seen_and_applies_a_pending_override() -> None:
    tracker, clock = make()
    tracker.set_timeout_override("n1", 20)
    tracker.restore({"n1": _persisted(last_seen=T0 + 3600, override=500)})
    status = st_(tracker)
    assert (status.last_seen, status.timeout, status.deadline) == (T0, 20.0, T0 + 20)
    assert clock.now == T0


def test_export_restore_round_trip() -> None:
    tracker, clock = make()
    hb(tracker, "a", seq=10, uptime=500, interval=20)
    hb(tracker, "a", seq=0, uptime=3)  # a reboot
    tracker.set_timeout_override("a", 120)
    tracker.on_message("b", retained=True)
    hb(tracker, "c")
    tracker.on_online_status("c", False, reason="shutdown", uptime=None, retained=False)
    data = json.loads(json.dumps(tracker.export()))  # what the Store writes and reads back
    assert data["a"] == {
        "state": "online",
        "reason": "heartbeat",
        "last_seen": T0,
        "interval": 20.0,
        "override": 120.0,
        "reboots": 1,
        "last_boot": T0 - 3,
        "seq": 0,
        "uptime": 3,
        "last_event": "online",
    }

    clock.advance(30)
    restored = HeartbeatTracker(TrackerSettings(), clock)
    out = restored.restore(data)
    assert out.changed == {"a", "b", "c"}
    for node_id in ("a", "c"):
        before, after = st_(tracker, node_id), st_(restored, node_id)
        assert after == before, node_id
    # b was never heard: unknown again, its timeout counted from the start.
    assert (st_(restored, "b").state, st_(restored, "b").deadline) == (UNK, T0 + 30 + 90)
    assert restored.export() == data
    assert restored.counts() == tracker.counts() == (1, 1)
    # Reboot detection continues across the restart.
    out = hb(restored, "a", seq=0, uptime=1)
    assert kinds(out) == [(EventType.REBOOTED, "uptime_reset")]


# ---------------------------------------------------------------- flapping (rule 7)


def _toggle(tracker: HeartbeatTracker, clock: FakeClock, steps: int) -> list[TrackerEvent]:
    """From an online node at T0: every 20 s alternately the LWT and a heartbeat."""
    events: list[TrackerEvent] = []
    for k in range(1, steps + 1):
        clock.now = T0 + 20 * k
        events += run_until(tracker, clock, clock.now).events
        out = lwt(tracker) if k % 2 else hb(tracker, seq=k, uptime=100 + 20 * k)
        assert out.changed == {"n1"}  # the state always changes, events or not
        events += out.events
    return events


def test_flapping_is_flagged_once_suppresses_events_and_recovers() -> None:
    tracker, clock = make()
    hb(tracker)
    events = _toggle(tracker, clock, 14)  # ends online at T0 + 280
    assert [(e.type, e.at - T0) for e in events] == [
        (EventType.OFFLINE, 20),
        (EventType.ONLINE, 40),
        (EventType.OFFLINE, 60),
        (EventType.ONLINE, 80),
        (EventType.FLAPPING, 100),  # the 5th transition within 10 min; its offline is suppressed
    ]
    assert events[-1].reason == "flapping"
    status = st_(tracker)
    assert (status.state, status.flapping) == (ON, True)

    # It stays up, heartbeating: stable again 2 x timeout after the last transition.
    clear_at = T0 + 280 + 2 * 90
    seq = 100
    while clock.now + 30 < clear_at:
        clock.advance(30)
        seq += 1
        assert run_until(tracker, clock, clock.now).events == []
        hb(tracker, seq=seq, uptime=seq)
    assert st_(tracker).flapping
    assert st_(tracker).deadline == clear_at
    out = run_until(tracker, clock, clear_at)
    assert out.changed == {"n1"}
    assert out.events == []  # it is online, and "online" was the last event automations saw
    assert not st_(tracker).flapping

    # History was cleared: a single new transition is reported normally.
    out = lwt(tracker)
    assert kinds(out) == [(EventType.OFFLINE, "unexpected_disconnect")]


def test_flapping_ending_in_another_state_emits_a_catch_up_event() -> None:
    tracker, clock = make()
    hb(tracker)
    events = _toggle(tracker, clock, 5)  # the 5th transition (offline at +100) flags flapping
    assert events[-1].type is EventType.FLAPPING
    status = st_(tracker)
    assert (status.state, status.flapping, status.deadline) == (OFF, True, T0 + 100 + 180)
    out = run_until(tracker, clock, T0 + 279)
    assert out == Outcome()
    out = run_until(tracker, clock, T0 + 280)
    assert out.events == [TrackerEvent(EventType.OFFLINE, "n1", "flapping_ended", T0 + 280)]
    assert (st_(tracker).flapping, st_(tracker).deadline) == (False, None)
    assert tracker.next_deadline() is None


def test_flapping_ending_online_after_an_offline_event_catches_up() -> None:
    tracker, clock = make()
    # Known offline (a retained will): the toggling starts online.
    tracker.on_online_status("n1", False, reason="shutdown", uptime=None, retained=True)
    events: list[TrackerEvent] = []
    for k in range(1, 6):
        clock.now = T0 + 20 * k
        out = hb(tracker, seq=k, uptime=20 * k) if k % 2 else lwt(tracker)
        events += out.events
    assert [e.type for e in events] == [EventType.ONLINE, EventType.OFFLINE] * 2 + [
        EventType.FLAPPING
    ]
    for k in range(6, 14):  # steady heartbeats until T0 + 260
        clock.now = T0 + 20 * k
        events = run_until(tracker, clock, clock.now).events
        assert events == []
        hb(tracker, seq=k, uptime=20 * k)
    out = run_until(tracker, clock, T0 + 100 + 180)
    assert out.events == [TrackerEvent(EventType.ONLINE, "n1", "flapping_ended", T0 + 280)]


def test_slow_transitions_do_not_flap() -> None:
    tracker, clock = make()
    hb(tracker)
    events: list[TrackerEvent] = []
    for k in range(1, 12):
        clock.now = T0 + 200 * k  # 5 transitions span 800 s > flap_window
        out = lwt(tracker) if k % 2 else hb(tracker, seq=k, uptime=200 * k)
        events += out.events
    assert EventType.FLAPPING not in {e.type for e in events}
    assert len(events) == 11


def test_flap_clear_waits_out_a_broker_outage() -> None:
    tracker, clock = make()
    hb(tracker)
    _toggle(tracker, clock, 5)
    tracker.set_broker_connected(False)
    clock.now = T0 + 400  # past the flap-clear time, but we could not hear the node
    assert tracker.tick() == Outcome()
    tracker.set_broker_connected(True)
    assert st_(tracker).deadline == T0 + 400 + 180
    out = run_until(tracker, clock, T0 + 580)
    assert kinds(out) == [(EventType.OFFLINE, "flapping_ended")]


def test_reboot_events_are_not_suppressed_while_flapping() -> None:
    tracker, clock = make()
    hb(tracker, seq=50)
    _toggle(tracker, clock, 6)
    assert st_(tracker).flapping
    out = hb(tracker, seq=0, uptime=1)
    assert kinds(out) == [(EventType.REBOOTED, "seq_reset")]


# ---------------------------------------------------------------- reboots (rule 8)


def test_reboot_via_seq_reset() -> None:
    tracker, clock = make()
    hb(tracker, seq=41, uptime=5000)
    assert st_(tracker).last_boot == T0 - 5000  # first estimate, no reboot
    clock.advance(30)
    out = hb(tracker, seq=0, uptime=6000)  # seq restarts even if the uptime looks fine
    assert out.changed == {"n1"}
    assert out.events == [TrackerEvent(EventType.REBOOTED, "n1", "seq_reset", T0 + 30)]
    status = st_(tracker)
    assert (status.reboots, status.last_boot) == (1, T0 + 30 - 6000)
    assert hb(tracker, seq=1, uptime=6030).events == []


def test_reboot_via_uptime_going_backwards() -> None:
    tracker, clock = make()
    hb(tracker, seq=5, uptime=5000)
    clock.advance(30)
    out = hb(tracker, seq=6, uptime=12)
    assert kinds(out) == [(EventType.REBOOTED, "uptime_reset")]
    assert (st_(tracker).reboots, st_(tracker).last_boot) == (1, T0 + 30 - 12)


def test_reboot_of_an_offline_node_brings_it_online_and_counts() -> None:
    tracker, clock = make()
    hb(tracker, seq=5, uptime=5000)
    lwt(tracker)
    clock.advance(30)
    out = hb(tracker, seq=0, uptime=3)
    assert kinds(out) == [(EventType.ONLINE, "heartbeat"), (EventType.REBOOTED, "seq_reset")]


def test_reboot_via_birth_is_not_counted_twice_by_the_next_heartbeat() -> None:
    tracker, clock = make()
    hb(tracker, seq=99, uptime=5000)
    clock.advance(60)
    out = tracker.on_online_status("n1", True, reason="boot", uptime=2, retained=False)
    assert kinds(out) == [(EventType.REBOOTED, "uptime_reset")]
    clock.advance(5)
    assert hb(tracker, seq=0, uptime=7).events == []
    assert hb(tracker, seq=1, uptime=37).events == []
    assert st_(tracker).reboots == 1
    # And the other order: a heartbeat first, then the birth of the same boot.
    clock.advance(60)
    assert kinds(hb(tracker, seq=0, uptime=1)) == [(EventType.REBOOTED, "seq_reset")]
    out = tracker.on_online_status("n1", True, reason="boot", uptime=2, retained=False)
    assert out.events == []
    assert st_(tracker).reboots == 2


def test_reboot_via_boot_reason_without_uptime() -> None:
    tracker, clock = make()
    # Unknown previous uptime: a boot is not a *re*boot.
    out = tracker.on_online_status("n1", True, reason="boot", uptime=None, retained=False)
    assert out.events == []
    hb(tracker, seq=3, uptime=300)
    clock.advance(10)
    out = tracker.on_online_status("n1", True, reason="boot", uptime=None, retained=False)
    assert kinds(out) == [(EventType.REBOOTED, "boot")]
    assert (st_(tracker).reboots, st_(tracker).last_boot) == (1, T0 + 10)
    assert hb(tracker, seq=0, uptime=5).events == []  # same boot
    # A reconnect without uptime is not a reboot.
    out = tracker.on_online_status("n1", True, reason="reconnect", uptime=None, retained=False)
    assert out.events == []


# ---------------------------------------------------------------- link quality (rule 9)


def test_link_quality_from_seq_gaps() -> None:
    tracker, _ = make(TrackerSettings(link_window=10))
    out = hb(tracker, seq=0)
    assert st_(tracker).link_quality is None  # one heartbeat says nothing
    out = hb(tracker, seq=1)
    assert out.changed == {"n1"}  # None -> 100.0 is visible
    assert st_(tracker).link_quality == 100.0
    assert hb(tracker, seq=2).changed == set()  # still 100 %: nothing to write
    out = hb(tracker, seq=5)  # 3 and 4 lost: 4 received of 6 expected
    assert out.changed == {"n1"}
    assert st_(tracker).link_quality == 66.7
    assert hb(tracker, seq=5).changed == set()  # a duplicate is neither received nor missed
    for seq in range(6, 12):
        hb(tracker, seq=seq)
    assert st_(tracker).link_quality == 80.0  # window 2..11: 8 received of 10
    for seq in range(12, 16):
        hb(tracker, seq=seq)
    assert st_(tracker).link_quality == 100.0  # the gap left the window


def test_link_quality_resets_on_reboot_and_reconnect() -> None:
    tracker, _ = make()
    hb(tracker, seq=0)
    hb(tracker, seq=4)
    assert st_(tracker).link_quality == 40.0
    hb(tracker, seq=0, uptime=1)  # reboot
    assert st_(tracker).link_quality is None
    hb(tracker, seq=1, uptime=2)
    assert st_(tracker).link_quality == 100.0
    tracker.set_broker_connected(False)
    tracker.set_broker_connected(True)  # heartbeats we missed are not the node's fault
    assert st_(tracker).link_quality is None
    hb(tracker, seq=9, uptime=3)
    hb(tracker, seq=10, uptime=4)
    assert st_(tracker).link_quality == 100.0


# ---------------------------------------------------------------- bookkeeping


def test_counts_and_forget() -> None:
    tracker, clock = make()
    for node_id in ("a", "b", "c"):
        hb(tracker, node_id)
    tracker.on_message("d", retained=True)
    lwt(tracker, "b")
    assert (tracker.counts(), tracker.unknown_count) == ((2, 1), 1)
    tracker.forget("a")
    tracker.forget("b")
    tracker.forget("missing")
    assert (tracker.counts(), tracker.unknown_count) == ((1, 0), 1)
    assert tracker.status("a") is None
    assert tracker.node_ids() == ["c", "d"]
    # The forgotten node's heap entry is stale: it neither fires nor wakes the glue early.
    hb(tracker, "c", seq=1)
    clock.advance(50)
    hb(tracker, "c", seq=2)
    assert tracker.next_deadline() == math.nextafter(T0 + 90, math.inf)  # c's lazy entry
    out = run_until(tracker, clock, T0 + 200)
    assert [e.node_id for e in out.events] == ["c"]  # d settles offline without an event
    assert (tracker.counts(), tracker.unknown_count) == ((0, 2), 0)
    # Forgetting also drops a pending override; a re-appearing node starts afresh.
    tracker.set_timeout_override("a", 5)
    tracker.forget("a")
    hb(tracker, "a")
    assert st_(tracker, "a").timeout == 90.0


def test_tick_drops_stale_entries() -> None:
    tracker, clock = make()
    hb(tracker, "gone")
    hb(tracker, "shrunk")
    tracker.set_timeout_override("shrunk", 10)  # its T0 + 90 entry is now stale
    tracker.forget("gone")
    assert tracker.heap_size == 3
    clock.now = T0 + 100  # the glue may tick late: every due entry is handled in one call
    out = tracker.tick()
    assert [e.node_id for e in out.events] == ["shrunk"]
    assert tracker.heap_size == 0


def test_a_clock_stepping_back_keeps_deadlines_honest() -> None:
    tracker, clock = make()
    hb(tracker)
    clock.now = T0 - 3600  # NTP stepped the wall clock back an hour
    hb(tracker, seq=1)
    assert st_(tracker).deadline == T0 - 3600 + 90
    out = run_until(tracker, clock, T0 - 3600 + 91)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]


def test_heap_stays_bounded_under_many_heartbeats() -> None:
    tracker, clock = make()
    nodes = [f"node{i}" for i in range(100)]
    for seq in range(1, 101):  # 10k heartbeats, 100 per second of fake time
        for node_id in nodes:
            hb(tracker, node_id, seq=seq, uptime=seq)
            assert tracker.heap_size <= len(nodes)  # heartbeats never push
        clock.advance(1)
        run_until(tracker, clock, clock.now)
    assert tracker.heap_size <= len(nodes)
    assert tracker.counts() == (100, 0)
    # Long silence: everyone expires; each node is popped, pushed back once, then expires.
    out = run_until(tracker, clock, clock.now + 200)
    assert len(out.events) == 100
    assert tracker.heap_size == 0


def test_stale_heap_entries_are_compacted() -> None:
    tracker, _ = make()
    hb(tracker, "keep")
    for i in range(500):
        tracker.set_timeout_override("keep", 80 - i / 10)  # each shorter override pushes once
        hb(tracker, f"tmp{i}")
        tracker.forget(f"tmp{i}")
    assert tracker.heap_size <= 2 * len(tracker.node_ids()) + 64 + 1
    assert tracker.next_deadline() == math.nextafter(T0 + (80 - 499 / 10), math.inf)


# ---------------------------------------------------------------- property


NODES = ("a", "b", "c")
node_st = st.sampled_from(NODES)
op_st = st.one_of(
    st.tuples(st.just("msg"), node_st, st.booleans()),
    st.tuples(
        st.just("status"),
        node_st,
        st.booleans(),
        st.sampled_from(["boot", "reconnect", "shutdown", "unexpected_disconnect", ""]),
        st.none() | st.integers(0, 500),
        st.booleans(),
    ),
    st.tuples(
        st.just("hb"),
        node_st,
        st.integers(0, 30),
        st.integers(0, 500),
        st.sampled_from([None, 1, 5, 10, 30]),
        st.booleans(),
    ),
    st.tuples(st.just("advance"), st.floats(0, 40, allow_nan=False)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("broker"), st.booleans()),
    st.tuples(st.just("override"), node_st, st.none() | st.floats(1, 100, allow_nan=False)),
    st.tuples(st.just("forget"), node_st),
    st.tuples(st.just("restart")),
)


def _run_ops(
    tracker: HeartbeatTracker, clock: FakeClock, ops: list[tuple[Any, ...]], *, strict: bool
) -> None:
    """Apply ops, checking after each one that no exception escapes and the state is consistent.

    ``strict``: the correlated-silence rule cannot trigger (mass_min above the node count), so an
    online node is never past ``max(last_seen, last_reconnect) + timeout``.
    """
    last_reconnect = -math.inf
    last_event: dict[str, EventType] = {}

    def record(out: Outcome) -> None:
        for event in out.events:
            if event.type in (EventType.ONLINE, EventType.OFFLINE):
                last_event[event.node_id] = event.type
            if not tracker.broker_connected:
                assert event.type is not EventType.OFFLINE or event.reason != "timeout"
            if strict:
                assert event.reason != "mass_silence"

    for op in ops:
        match op:
            case ("msg", node_id, retained):
                record(tracker.on_message(node_id, retained=retained))
            case ("status", node_id, online, reason, uptime, retained):
                out = tracker.on_online_status(
                    node_id, online, reason=reason, uptime=uptime, retained=retained
                )
                record(out)
            case ("hb", node_id, seq, uptime, interval, retained):
                out = tracker.on_heartbeat(
                    node_id, seq=seq, uptime=uptime, interval=interval, retained=retained
                )
                record(out)
            case ("advance", seconds):
                clock.advance(seconds)
            case ("tick",):
                record(tracker.tick())
            case ("broker", connected):
                if connected and not tracker.broker_connected:
                    last_reconnect = clock.now
                record(tracker.set_broker_connected(connected))
            case ("override", node_id, seconds):
                record(tracker.set_timeout_override(node_id, seconds))
            case ("forget", node_id):
                tracker.forget(node_id)
                last_event.pop(node_id, None)
            case ("restart",):  # HA restart: persist, new tracker, restore (no events)
                data = json.loads(json.dumps(tracker.export()))
                connected = tracker.broker_connected
                tracker = HeartbeatTracker(tracker.settings, clock)
                assert tracker.restore(data).events == []
                if not connected:
                    tracker.set_broker_connected(False)
                last_reconnect = clock.now  # unknown nodes count from the start
                last_event.clear()

        if tracker.broker_connected:
            record(tracker.tick(limit=2))  # sliced like the glue: the rest on the next calls
            while (due := tracker.next_deadline()) is not None and due <= clock.now:
                record(tracker.tick(limit=2))
        counts = {ON: 0, OFF: 0, UNK: 0}
        for node_id in tracker.node_ids():
            status = st_(tracker, node_id)
            counts[status.state] += 1
            assert tracker.state(node_id) is status.state
            if status.state is ON:
                assert status.last_seen is not None
            if status.state is not OFF and tracker.broker_connected:
                assert status.deadline is not None
                assert clock.now <= status.deadline
                if strict and status.state is ON:
                    assert clock.now <= max(status.last_seen, last_reconnect) + status.timeout
            if not status.flapping and node_id in last_event and status.state is not UNK:
                # Once stable, automations have seen the state the node is in.
                assert last_event[node_id].value == status.state.value
        assert tracker.counts() == (counts[ON], counts[OFF])
        assert tracker.unknown_count == counts[UNK]
        assert tracker.heap_size <= 2 * len(NODES) + 64 + 2


_HYP = hyp_settings(
    max_examples=300,
    deadline=None,
    # HA's pytest plugin adds autouse function-scoped fixtures; these tests do not use them.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
_BASE = TrackerSettings(
    default_interval=10, multiplier=2, min_timeout=5, flap_window=300, flap_transitions=3
)


@_HYP
@given(ops=st.lists(op_st, min_size=30, max_size=120))
def test_property_no_stale_online_node_and_exact_counts(ops: list[tuple[Any, ...]]) -> None:
    tracker, clock = make(TrackerSettings(**{**_fields(_BASE), "mass_min": len(NODES) + 1}))
    _run_ops(tracker, clock, ops, strict=True)


@_HYP
@given(ops=st.lists(op_st, min_size=30, max_size=120))
def test_property_with_correlated_silence_state_stays_consistent(
    ops: list[tuple[Any, ...]],
) -> None:
    tracker, clock = make(TrackerSettings(**{**_fields(_BASE), "mass_min": 2}))
    _run_ops(tracker, clock, ops, strict=False)


def _fields(settings: TrackerSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in TrackerSettings.__dataclass_fields__}
