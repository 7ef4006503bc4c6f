"""Tracker behaviour at the edges (issue 10 #1, issue 16 #8/#9, issue 14): pure, fake clock.

- A node known only from retained messages is neither online nor offline (first setup, and
  after a Home Assistant start that outlived its deadline).
- A will contradicted by a live message within 2 s is a race or a forgery, not flapping.
- The whole fleet going quiet at once is evidence about us or the broker: expiry is held; a real
  mass outage is still reported, with its own reason.
- Many simultaneous expiries are handed out in slices (``tick(limit=...)``).
"""

from __future__ import annotations

from custom_components.heartbeat_iot.homesync.tracker import (
    Availability,
    EventType,
    HeartbeatTracker,
    Outcome,
    TrackerEvent,
    TrackerSettings,
)

from .fakes import FakeClock
from .test_tracker import T0, hb, kinds, lwt, make, run_until, st_

ON, OFF, UNK = Availability.ONLINE, Availability.OFFLINE, Availability.UNKNOWN


def _merge(total: Outcome, out: Outcome) -> Outcome:
    total.changed |= out.changed
    total.events += out.events
    return total


def _fleet_beats(
    tracker: HeartbeatTracker,
    clock: FakeClock,
    ids: list[str],
    start: float,
    end: float,
    *,
    silent: frozenset[str] = frozenset(),
    interval: float = 30.0,
) -> Outcome:
    """Every node not in ``silent`` heartbeats every ``interval`` (phase by index) until end."""
    total = Outcome()
    beats = sorted(
        (start + (i * interval / len(ids)) + k * interval, node_id)
        for i, node_id in enumerate(ids)
        for k in range(int((end - start) / interval) + 1)
    )
    for at, node_id in beats:
        if at > end:
            break
        _merge(total, run_until(tracker, clock, at))
        if node_id not in silent:
            seq = int(at - T0)  # one boot all along: seq and uptime only grow
            _merge(total, hb(tracker, node_id, seq=seq, uptime=seq))
    _merge(total, run_until(tracker, clock, end))
    return total


# ---------------------------------------------------------------- unknown: first setup


def test_first_setup_nodes_known_from_retained_messages_raise_no_alarm() -> None:
    """Issue 10 #1: nodes_offline went 0 -> 6 -> 0 at first setup; now it stays 0."""
    tracker, clock = make()
    ids = [f"plug-{i}" for i in range(6)]
    out = Outcome()
    for node_id in ids:  # the broker hands over the retained births at subscribe time
        _merge(out, tracker.on_online_status(node_id, True, reason="boot", uptime=9, retained=True))
    assert out.events == []
    assert tracker.counts() == (0, 0)  # in no fleet number: the offline ratio stays 0
    assert tracker.unknown_count == 6
    assert {st_(tracker, n).state for n in ids} == {UNK}

    # Within one heartbeat interval five of them speak: online, still no event.
    for k, node_id in enumerate(ids[:5]):
        clock.now = T0 + 4 * (k + 1)
        _merge(out, hb(tracker, node_id))
    assert out.events == []
    assert tracker.counts() == (5, 0)
    assert tracker.unknown_count == 1

    # The sixth never does: offline once its timeout passed since it became known, and only then.
    assert run_until(tracker, clock, T0 + 90).changed == set()
    assert st_(tracker, "plug-5").state is UNK
    out = run_until(tracker, clock, T0 + 90.5)
    assert "plug-5" in out.changed
    assert (st_(tracker, "plug-5").state, st_(tracker, "plug-5").reason) == (OFF, "not_seen")
    assert out.events == []  # the first verdict on a node is its baseline, like a retained will
    assert tracker.counts() == (5, 1)
    assert tracker.unknown_count == 0


def test_unknown_node_then_heard_live_after_offline_reports_back_online() -> None:
    tracker, clock = make()
    tracker.on_message("n1", retained=True)
    run_until(tracker, clock, T0 + 91)
    assert st_(tracker).state is OFF
    clock.advance(5)
    out = hb(tracker)
    assert kinds(out) == [(EventType.ONLINE, "heartbeat")]  # it was offline: a real comeback


def test_retained_will_at_setup_is_offline_at_once() -> None:
    tracker, _ = make()
    out = lwt(tracker, retained=True)
    assert out.events == []
    assert (st_(tracker).state, tracker.counts()) == (OFF, (0, 1))


def test_unknown_node_does_not_expire_while_the_broker_is_down() -> None:
    tracker, clock = make()
    tracker.on_message("n1", retained=True)
    tracker.set_broker_connected(False)
    clock.advance(200)
    assert tracker.tick() == Outcome()
    tracker.set_broker_connected(True)
    assert st_(tracker).deadline == T0 + 200 + 90


# ---------------------------------------------------------------- unknown: after an HA start


def _restart(tracker: HeartbeatTracker, clock: FakeClock, down: float) -> HeartbeatTracker:
    data = tracker.export()
    clock.advance(down)
    restored = HeartbeatTracker(tracker.settings, clock)
    assert restored.restore(data).events == []
    return restored


def test_start_after_a_long_stop_raises_no_alarm_for_nodes_that_are_fine() -> None:
    """HA down for 10 min: its nodes are not offline at start (they were 0 -> 6 -> 0 too)."""
    tracker, clock = make()
    for i in range(6):
        hb(tracker, f"n{i}")
    tracker = _restart(tracker, clock, 600)
    start = clock.now
    assert tracker.counts() == (0, 0)
    assert tracker.unknown_count == 6
    assert {st_(tracker, f"n{i}").reason for i in range(6)} == {"restarted"}
    out = Outcome()
    for i in range(5):
        clock.now = start + 3 * (i + 1)
        _merge(out, hb(tracker, f"n{i}", seq=1))
    assert out.events == []  # online before, online now: nothing happened
    assert tracker.counts() == (5, 0)
    # n5 stays silent for its timeout counted from the start: now it is a real offline, and
    # automations (which last heard "online") are told.
    out = run_until(tracker, clock, start + 90.5)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]
    assert [e.node_id for e in out.events] == ["n5"]


def test_start_keeps_known_offline_and_known_online_nodes() -> None:
    tracker, clock = make()
    hb(tracker, "recent")
    hb(tracker, "gone")
    lwt(tracker, "gone")
    tracker = _restart(tracker, clock, 30)
    assert (st_(tracker, "recent").state, st_(tracker, "recent").deadline) == (ON, T0 + 90)
    assert st_(tracker, "gone").state is OFF
    assert tracker.counts() == (1, 1)


def test_unknown_survives_a_second_restart_with_what_automations_last_saw() -> None:
    tracker, clock = make()
    hb(tracker)
    tracker = _restart(tracker, clock, 600)
    tracker = _restart(tracker, clock, 10)  # restarted again before the node spoke
    assert (st_(tracker).state, st_(tracker).reason) == (UNK, "restarted")
    out = run_until(tracker, clock, clock.now + 91)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]  # they last heard "online"


def test_state_stored_by_the_previous_version_as_not_seen_is_unknown() -> None:
    tracker, clock = make()
    out = tracker.restore({"old": {"state": "offline", "reason": "not_seen", "last_seen": None}})
    assert out.changed == {"old"}
    assert (st_(tracker, "old").state, tracker.counts()) == (UNK, (0, 0))


# ---------------------------------------------------------------- contradicted wills


def test_will_contradicted_within_two_seconds_is_recorded_as_such() -> None:
    tracker, clock = make()
    hb(tracker)
    clock.advance(10)
    out = lwt(tracker)  # fast path: offline at once
    assert kinds(out) == [(EventType.OFFLINE, "unexpected_disconnect")]
    clock.advance(0.8)
    out = hb(tracker, seq=1)
    assert out.events == [TrackerEvent(EventType.ONLINE, "n1", "will_contradicted", T0 + 10.8)]
    status = st_(tracker)
    assert (status.state, status.reason, status.contradicted_wills) == (
        ON,
        "will_contradicted",
        1,
    )


def test_forged_wills_do_not_make_a_node_flap_or_mute_its_real_alerts() -> None:
    """Issue 16 #8: one forgery a minute used to flag flapping and mute events for >= 60 s."""
    tracker, clock = make()
    hb(tracker)
    events: list[TrackerEvent] = []
    for minute in range(1, 11):  # ten forged wills, each contradicted by the next heartbeat
        clock.now = T0 + 60 * minute
        events += lwt(tracker).events
        clock.advance(1.5)
        events += hb(tracker, seq=minute).events
    assert EventType.FLAPPING not in {e.type for e in events}
    assert not st_(tracker).flapping
    assert st_(tracker).contradicted_wills == 10
    # A real outage afterwards is reported, not muted.
    out = run_until(tracker, clock, clock.now + 91)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")]


def test_a_will_followed_by_a_message_later_than_the_window_is_a_real_transition() -> None:
    tracker, clock = make()
    hb(tracker)
    lwt(tracker)
    clock.advance(2.5)
    out = hb(tracker, seq=1)
    assert kinds(out) == [(EventType.ONLINE, "heartbeat")]
    assert st_(tracker).contradicted_wills == 0


def test_a_will_that_started_flapping_and_is_contradicted_undoes_the_flapping() -> None:
    tracker, clock = make(TrackerSettings(flap_transitions=3, will_hold=0.0))
    hb(tracker)
    clock.advance(20)
    lwt(tracker)
    clock.advance(20)
    hb(tracker, seq=1)
    clock.advance(20)
    out = lwt(tracker)  # the third transition within the window
    assert kinds(out) == [(EventType.FLAPPING, "flapping")]
    clock.advance(1)
    out = hb(tracker, seq=2)
    assert out.events == []  # online was the last thing automations heard
    assert (st_(tracker).state, st_(tracker).flapping) == (ON, False)


# ---------------------------------------------------------------- correlated silence


def test_the_whole_fleet_going_quiet_at_once_is_held_not_reported() -> None:
    """Issue 16 #9: a flood stalled delivery for ~34 s and all 20 nodes went offline."""
    tracker, clock = make()
    ids = [f"n{i:02d}" for i in range(20)]
    out = _fleet_beats(tracker, clock, ids, T0, T0 + 300)
    assert out.events == []
    # Nothing reaches us for 100 s (a stalled event loop, a broker dropping our messages):
    # every deadline passes, but the fleet is quiet as a whole.
    quiet_from = clock.now
    out = run_until(tracker, clock, quiet_from + 100)
    assert out.events == []
    assert tracker.counts() == (20, 0)
    silence = tracker.fleet_silence
    assert silence is not None
    assert silence.late >= 10
    # Delivery resumes: everyone is heard within one interval; nobody was ever offline.
    out = _fleet_beats(tracker, clock, ids, clock.now, clock.now + 60)
    assert out.events == []
    assert tracker.fleet_silence is None
    assert tracker.counts() == (20, 0)


def test_a_real_mass_outage_is_still_reported_with_its_own_reason() -> None:
    tracker, clock = make()
    ids = [f"n{i:02d}" for i in range(20)]
    _fleet_beats(tracker, clock, ids, T0, T0 + 300)
    last = clock.now
    # Power cut: nobody speaks again (no wills either: the broker is on the same circuit...).
    out = run_until(tracker, clock, last + 90 + 30)
    assert out.events == []  # held: one more timeout
    out = run_until(tracker, clock, last + 90 + 30 + 90 + 1)
    assert {(e.type, e.reason) for e in out.events} == {(EventType.OFFLINE, "mass_silence")}
    assert len(out.events) == 20
    assert tracker.counts() == (0, 20)


def test_a_single_dead_node_in_a_healthy_fleet_expires_on_time() -> None:
    tracker, clock = make()
    ids = [f"n{i:02d}" for i in range(20)]
    _fleet_beats(tracker, clock, ids, T0, T0 + 120)
    out = _fleet_beats(tracker, clock, ids, T0 + 120, T0 + 400, silent=frozenset({"n07"}))
    assert [(e.node_id, e.type, e.reason) for e in out.events] == [
        ("n07", EventType.OFFLINE, "timeout")
    ]
    assert out.events[0].at - st_(tracker, "n07").last_seen <= 90.5  # type: ignore[operator]
    assert tracker.fleet_silence is None


def test_most_of_the_fleet_dying_is_reported_after_the_hold_and_the_rest_stays_online() -> None:
    tracker, clock = make()
    ids = [f"n{i:02d}" for i in range(20)]
    _fleet_beats(tracker, clock, ids, T0, T0 + 120)
    dead = frozenset(ids[:15])
    out = _fleet_beats(tracker, clock, ids, T0 + 120, T0 + 600, silent=dead)
    assert {e.node_id for e in out.events} == dead
    assert {e.reason for e in out.events} == {"mass_silence"}
    assert tracker.counts() == (5, 15)


def test_few_nodes_never_count_as_a_mass() -> None:
    tracker, clock = make()
    hb(tracker, "a")
    hb(tracker, "b")
    out = run_until(tracker, clock, T0 + 91)
    assert kinds(out) == [(EventType.OFFLINE, "timeout")] * 2


def test_a_broker_reconnect_ends_a_suspected_silence() -> None:
    tracker, clock = make()
    ids = [f"n{i}" for i in range(5)]
    _fleet_beats(tracker, clock, ids, T0, T0 + 100)
    run_until(tracker, clock, clock.now + 95)
    assert tracker.fleet_silence is not None
    tracker.set_broker_connected(False)
    tracker.set_broker_connected(True)
    assert tracker.fleet_silence is None
    assert st_(tracker, "n0").deadline == clock.now + 90


# ---------------------------------------------------------------- mass expiry in slices


def test_many_simultaneous_expiries_come_out_in_slices() -> None:
    tracker, clock = make(TrackerSettings(mass_min=10**9))  # the correlated rule is tested above
    for i in range(1000):
        hb(tracker, f"n{i:04d}")
    clock.now = T0 + 91
    offline: list[str] = []
    calls = 0
    while True:
        out = tracker.tick(limit=100)
        calls += 1
        assert len(out.changed) <= 100
        offline += [e.node_id for e in out.events]
        due = tracker.next_deadline()
        if due is None or due > clock.now:
            break
    assert calls == 10
    assert len(offline) == len(set(offline)) == 1000
    assert tracker.counts() == (0, 1000)


def test_link_quality_survives_huge_seq_jumps() -> None:
    tracker, _ = make(TrackerSettings(link_window=10))
    hb(tracker, seq=1)
    hb(tracker, seq=2)
    hb(tracker, seq=10**15)  # the window is a bit set: a jump must not allocate 10**15 bits
    assert st_(tracker).link_quality == 10.0  # 1 of the last 10 seqs
