"""HeartbeatTracker scheduling cost, pure Python (no Home Assistant import).

Run: ``.venv/bin/python benchmarks/bench_tracker.py`` (``BENCH_SMOKE=1`` for a seconds-long
check that the code still runs). Writes ``benchmarks/results/bench_tracker.md``.

What it measures (docs/architecture.md §5 cost rule: O(1) per message, one lazy min-heap, no
per-node timers, no periodic scan of all nodes):

1. A simulated heartbeat stream. N nodes each send a heartbeat every 30 s (random phase); 1 % of
   them die a third of the way into the timed window and must expire. The clock is simulated:
   the harness plays the role of hub.py's single timer (after every message it asks
   ``next_deadline()`` and arms the timer earlier if needed; when the simulated time reaches the
   timer, ``tick()`` runs), so the per-message figure includes the amortised timer work. The
   same stream is fed to two references that live in this file: the "obvious" design (deadline
   dict + full scan every second) and per-node timers (asyncio ``call_at`` / ``cancel`` per
   message, the pattern of HA's MQTT ``expire_after``).
2. ``tick()`` when nothing is due (the cost of a wake-up) vs one full scan of N nodes.
3. One expiry sweep when k nodes expire at once vs a full scan that finds k expired nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
import gc
import importlib.util
import math
import random
from statistics import median
import sys
import time
import tracemalloc
from types import ModuleType
from typing import Any

from _benchlib import ROOT, SMOKE, Target, fmt, fmt_stat, report, reps, table

INTERVAL = 30.0  # every node heartbeats this often (the protocol's default)
TIMEOUT = 90.0  # TrackerSettings() defaults: max(min_timeout 30, 3 x 30)
WARMUP_ROUNDS = 8  # untimed heartbeat rounds first: the heap reaches its steady state
COALESCE = 0.5  # the coalesced-timer variant fires on the next multiple of this (s)

if SMOKE:
    SIZES: tuple[int, ...] = (20, 50)
    MESSAGES = 2_000
    SWEEP_N = 200
    SWEEP_KS: tuple[int, ...] = (1, 10, 200)
    IDLE_CALLS = 2_000
    SCALE_SIZES: tuple[int, ...] = (200, 2_000)
    SCALE_MESSAGES = 4_000
    MEMORY_N = 2_000
    LOSS_NODES, LOSS_HOURS, FREEZES = 10, 2.0, 20
else:
    SIZES = (100, 1_000, 10_000)
    MESSAGES = 100_000
    SWEEP_N = 10_000
    SWEEP_KS = (1, 10, 100, 1_000, 10_000)
    IDLE_CALLS = 200_000
    SCALE_SIZES = (1_000, 10_000, 100_000)
    SCALE_MESSAGES = 200_000
    MEMORY_N = 100_000
    LOSS_NODES, LOSS_HOURS, FREEZES = 100, 24.0, 300
LOSSES = (0.01, 0.05, 0.10)
MULTIPLIERS = (2.0, 3.0, 5.0)


def load_tracker() -> ModuleType:
    """Import homesync/tracker.py without the integration package (its __init__ imports HA).

    The pure library is loaded as a package of its own, so its relative imports work.
    """
    library = ROOT / "custom_components" / "heartbeat_iot" / "homesync"
    spec = importlib.util.spec_from_file_location(
        "homesync_lib", library / "__init__.py", submodule_search_locations=[str(library)]
    )
    assert spec is not None
    assert spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(package)
    return importlib.import_module("homesync_lib.tracker")


T = load_tracker()


class SimClock:
    """The injected clock: simulated UNIX seconds."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------ the stream


@dataclass(slots=True)
class Stream:
    """A heartbeat stream: (time, node_id, seq) sorted by time, split into warm-up and timed."""

    n: int
    warmup: list[tuple[float, str, int]]
    timed: list[tuple[float, str, int]]
    dead_last_seen: dict[str, float]  # nodes that stop in the timed window -> last message time
    end: float  # simulated end of the timed window


def make_stream(n: int, messages: int, start: float) -> Stream:
    rnd = random.Random(n)
    ids = [f"node-{i:05d}" for i in range(n)]
    phases = sorted((rnd.uniform(0.0, INTERVAL), node_id) for node_id in ids)
    rounds = max(1, messages // n)
    stop_round = WARMUP_ROUNDS + rounds // 3
    dead = set(rnd.sample(ids, max(1, n // 100)))
    warmup: list[tuple[float, str, int]] = []
    timed: list[tuple[float, str, int]] = []
    dead_last: dict[str, float] = {}
    for r in range(WARMUP_ROUNDS + rounds):
        target = warmup if r < WARMUP_ROUNDS else timed
        for phase, node_id in phases:
            if node_id in dead and r > stop_round:
                continue
            t = start + r * INTERVAL + phase
            target.append((t, node_id, r + 1))
            if node_id in dead:
                dead_last[node_id] = t
    end = start + (WARMUP_ROUNDS + rounds) * INTERVAL
    if stop_round + TIMEOUT / INTERVAL + 1 >= WARMUP_ROUNDS + rounds:
        raise ValueError("timed window too short for the dead nodes to expire")
    return Stream(n, warmup, timed, dead_last, end)


# ------------------------------------------------------------------------------ pass results


@dataclass(slots=True)
class PassResult:
    cpu: float  # seconds of CPU in the timed window
    messages: int
    wakeups: int  # timer wake-ups / scans in the timed window
    sim_seconds: float
    heap: int | None = None  # tracker heap size at the end
    lateness: list[float] = field(default_factory=list)  # detection time - deadline, dead nodes

    @property
    def us_per_msg(self) -> float:
        return self.cpu / self.messages * 1e6


def _timed(run: Callable[[], None]) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


# ------------------------------------------------------------------------------ variants


def pass_loop_only(stream: Stream) -> PassResult:
    """The harness alone: iterate the stream and set the clock (subtract from the others)."""
    clock = SimClock()
    sink: dict[str, int] = {}

    def run() -> None:
        for t, node_id, seq in stream.timed:
            clock.now = t
            sink[node_id] = seq

    cpu = _timed(run)
    return PassResult(cpu, len(stream.timed), 0, stream.end - stream.timed[0][0])


def _fire_exact(due: float) -> float:
    """hub.py before the fix: the timer fired on the next millisecond after the due time."""
    return math.floor(due * 1000) / 1000 + 0.001


def _fire_coalesced(due: float) -> float:
    """hub.py: fire on the next COALESCE boundary (<= 1 wake-up per COALESCE seconds)."""
    return math.floor(due / COALESCE) * COALESCE + COALESCE


class TrackerDriver:
    """Drives the real HeartbeatTracker the way hub.py does: one timer, re-armed lazily."""

    def __init__(self, *, heartbeat: bool, fire_at: Callable[[float], float]) -> None:
        self.clock = SimClock()
        self.tracker = T.HeartbeatTracker(T.TrackerSettings(), self.clock)
        self.heartbeat = heartbeat
        self.fire_at = fire_at
        self.fire = math.inf  # when the (single) timer fires
        self.wakeups = 0
        self.offline_at: dict[str, float] = {}

    def wake(self) -> None:
        """The timer fires: tick, then re-arm at the tracker's earliest deadline."""
        self.clock.now = self.fire
        out = self.tracker.tick()
        self.wakeups += 1
        for event in out.events:
            if event.type is T.EventType.OFFLINE:
                self.offline_at[event.node_id] = event.at
        due = self.tracker.next_deadline()
        self.fire = math.inf if due is None else self.fire_at(due)

    def feed(self, segment: Sequence[tuple[float, str, int]], until: float | None) -> None:
        clock = self.clock
        fire_at = self.fire_at
        heartbeat = self.heartbeat
        on_heartbeat = self.tracker.on_heartbeat
        on_message = self.tracker.on_message
        next_deadline = self.tracker.next_deadline
        self.wakeups = 0
        for t, node_id, seq in segment:
            while self.fire <= t:  # the timer fires before this message arrives
                self.wake()
            clock.now = t
            if heartbeat:
                on_heartbeat(node_id, seq=seq, uptime=seq * 30, interval=INTERVAL, retained=False)
            else:
                on_message(node_id, retained=False)
            due = next_deadline()  # hub._apply -> _schedule_timer after every message
            if due is None:
                self.fire = math.inf
            elif (at := fire_at(due)) < self.fire:
                self.fire = at
        # Let the simulated time run to the end of the window (dead nodes expire by then).
        while until is not None and self.fire <= until:
            self.wake()


def pass_tracker(
    stream: Stream, *, heartbeat: bool, fire_at: Callable[[float], float]
) -> PassResult:
    driver = TrackerDriver(heartbeat=heartbeat, fire_at=fire_at)
    driver.feed(stream.warmup, None)
    cpu = _timed(lambda: driver.feed(stream.timed, stream.end))
    missing = set(stream.dead_last_seen) - set(driver.offline_at)
    if missing or driver.tracker.counts()[1] != len(stream.dead_last_seen):
        raise AssertionError(f"dead nodes not (only) those offline: {driver.tracker.counts()}")
    lateness = [
        driver.offline_at[node_id] - (last + TIMEOUT)
        for node_id, last in stream.dead_last_seen.items()
    ]
    return PassResult(
        cpu,
        len(stream.timed),
        driver.wakeups,
        stream.end - stream.timed[0][0],
        driver.tracker.heap_size,
        lateness,
    )


class NaiveScan:
    """The design docs/architecture.md §5 rejects: a deadline per node, a full scan every second."""

    def __init__(self) -> None:
        self.deadline: dict[str, float] = {}  # online nodes only
        self.offline: set[str] = set()

    def on_message(self, node_id: str, now: float) -> list[tuple[str, str, float]]:
        self.deadline[node_id] = now + TIMEOUT
        if node_id in self.offline:
            self.offline.discard(node_id)
            return [("online", node_id, now)]
        return []

    def scan(self, now: float) -> list[tuple[str, str, float]]:
        expired = [node_id for node_id, deadline in self.deadline.items() if now > deadline]
        for node_id in expired:
            del self.deadline[node_id]
            self.offline.add(node_id)
        return [("offline", node_id, now) for node_id in expired]


def pass_naive_scan(stream: Stream) -> PassResult:
    ref = NaiveScan()
    state = {"next_scan": math.ceil(stream.warmup[0][0]), "wakeups": 0}
    offline_at: dict[str, float] = {}

    def feed(segment: Sequence[tuple[float, str, int]], until: float | None) -> None:
        next_scan = state["next_scan"]
        wakeups = 0
        on_message = ref.on_message
        for t, node_id, _seq in segment:
            while next_scan <= t:
                for _kind, expired, at in ref.scan(next_scan):
                    offline_at[expired] = at
                next_scan += 1.0
                wakeups += 1
            on_message(node_id, t)
        while until is not None and next_scan <= until:
            for _kind, expired, at in ref.scan(next_scan):
                offline_at[expired] = at
            next_scan += 1.0
            wakeups += 1
        state["next_scan"] = next_scan
        state["wakeups"] = wakeups

    feed(stream.warmup, None)
    cpu = _timed(lambda: feed(stream.timed, stream.end))
    lateness = [
        offline_at[node_id] - (last + TIMEOUT) for node_id, last in stream.dead_last_seen.items()
    ]
    return PassResult(
        cpu, len(stream.timed), state["wakeups"], stream.end - stream.timed[0][0], None, lateness
    )


def pass_naive_timers(stream: Stream) -> PassResult:
    """Per-node timers on a real asyncio loop: cancel + call_at on every message.

    The simulated clock cannot drive asyncio, so timers are armed TIMEOUT seconds ahead in
    loop time and never fire during the pass; what is measured is the per-message
    re-scheduling that this design needs (detection would be exact).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_naive_timers(loop, stream))
    finally:
        loop.close()


async def _naive_timers(loop: asyncio.AbstractEventLoop, stream: Stream) -> PassResult:
    handles: dict[str, asyncio.TimerHandle] = {}
    last_seen: dict[str, float] = {}
    offline: set[str] = set()

    def expire(node_id: str) -> None:  # never runs within the pass
        offline.add(node_id)

    async def feed(segment: Sequence[tuple[float, str, int]]) -> None:
        call_at = loop.call_at
        loop_time = loop.time
        for i, (t, node_id, _seq) in enumerate(segment):
            last_seen[node_id] = t
            if (handle := handles.get(node_id)) is not None:
                handle.cancel()
            handles[node_id] = call_at(loop_time() + TIMEOUT, expire, node_id)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # the loop purges cancelled handles, as in production

    await feed(stream.warmup)
    gc.collect()
    start = time.process_time()
    await feed(stream.timed)
    cpu = time.process_time() - start
    for handle in handles.values():
        handle.cancel()
    return PassResult(cpu, len(stream.timed), 0, stream.end - stream.timed[0][0])


@dataclass(slots=True)
class Variant:
    key: str
    label: str
    run: Callable[[Stream], PassResult]
    results: dict[int, list[PassResult]] = field(default_factory=dict)


def variants() -> list[Variant]:
    return [
        Variant("loop", "harness loop only (subtract from the rows below)", pass_loop_only),
        Variant(
            "hb",
            f"**tracker.on_heartbeat** (the full path; table 4 has the quiet one), one timer on "
            f"{COALESCE:g} s boundaries (as hub.py)",
            lambda s: pass_tracker(s, heartbeat=True, fire_at=_fire_coalesced),
        ),
        Variant(
            "msg",
            f"tracker.on_message (telemetry path), one timer on {COALESCE:g} s boundaries",
            lambda s: pass_tracker(s, heartbeat=False, fire_at=_fire_coalesced),
        ),
        Variant(
            "msg-exact",
            "tracker.on_message, timer at the exact deadline (hub.py before the fix)",
            lambda s: pass_tracker(s, heartbeat=False, fire_at=_fire_exact),
        ),
        Variant("scan", "naive: deadline dict + full scan every 1 s", pass_naive_scan),
        Variant("timers", "naive: per-node asyncio timer (cancel + call_at)", pass_naive_timers),
    ]


def bench_stream(n_reps: int) -> tuple[str, dict[str, dict[int, list[PassResult]]]]:
    streams = {n: make_stream(n, MESSAGES, SimClock().now) for n in SIZES}
    vs = variants()
    for rep in range(n_reps):
        for n in SIZES:
            shift = (rep + n) % len(vs)  # rotate the order: no variant always runs first
            for variant in vs[shift:] + vs[:shift]:
                variant.results.setdefault(n, []).append(variant.run(streams[n]))
        print(f"stream: rep {rep + 1}/{n_reps} done", flush=True)
    rows = []
    for n in SIZES:
        msg = {v.key: summary_us(v.results[n]) for v in vs}
        for v in vs:
            res = v.results[n]
            med, spread = fmt_stat([r.us_per_msg for r in res])
            first = res[0]
            wakeups = f"{first.wakeups / first.sim_seconds:.2f}" if first.wakeups else "–"
            heap = f"{first.heap} ({first.heap / n:.2f} N)" if first.heap is not None else "–"
            late = f"{max(first.lateness) * 1000:.1f} ms" if first.lateness else "–"
            ratio = "–" if v.key in {"loop", "msg"} else f"{msg[v.key] / msg['msg']:.2f}"
            rows.append([f"{n:,}", v.label, med, spread, ratio, wakeups, heap, late])
    body = table(
        [
            "N",
            "variant",
            "µs/msg (median)",
            "spread",
            "÷ on_message row",
            "wake-ups / s",
            "heap at end",
            "max lateness",
        ],
        rows,
    )
    return body, {v.key: v.results for v in vs}


def summary_us(results: Sequence[PassResult]) -> float:
    return median(r.us_per_msg for r in results)


# ------------------------------------------------------------------------------ idle wake-up


def _fresh_tracker(n: int) -> tuple[Any, SimClock, list[str]]:
    clock = SimClock()
    tracker = T.HeartbeatTracker(T.TrackerSettings(), clock)
    ids = [f"node-{i:05d}" for i in range(n)]
    for node_id in ids:
        tracker.on_message(node_id, retained=False)
    return tracker, clock, ids


def bench_idle(n_reps: int) -> str:
    samples: dict[tuple[int, str], list[float]] = {}
    for rep in range(n_reps):
        for n in SIZES:
            tracker, clock, ids = _fresh_tracker(n)
            ref = NaiveScan()
            for node_id in ids:
                ref.on_message(node_id, clock.now)
            clock.now += 1.0  # nothing is due for another 89 s
            scans = max(20, IDLE_CALLS * 10 // n)

            def ticks(tracker: Any = tracker) -> None:
                tick = tracker.tick
                for _ in range(IDLE_CALLS):
                    tick()

            def scan(ref: NaiveScan = ref, now: float = clock.now, scans: int = scans) -> None:
                for _ in range(scans):
                    ref.scan(now)

            jobs = [("tick", ticks, IDLE_CALLS), ("scan", scan, scans)]
            for kind, job, calls in jobs if rep % 2 == 0 else jobs[::-1]:
                samples.setdefault((n, kind), []).append(_timed(job) / calls * 1e6)
            assert tracker.counts() == (n, 0)
            assert not ref.offline
    rows = []
    for n in SIZES:
        tick_med, tick_spread = fmt_stat(samples[(n, "tick")], 3)
        scan_med, scan_spread = fmt_stat(samples[(n, "scan")])
        ratio = summary_med(samples[(n, "scan")]) / summary_med(samples[(n, "tick")])
        rows.append([f"{n:,}", tick_med, tick_spread, scan_med, scan_spread, f"{ratio:,.0f}×"])
    return table(
        [
            "N",
            "tracker.tick(), nothing due: µs",
            "spread",
            "naive full scan, nothing due: µs",
            "spread",
            "scan ÷ tick",
        ],
        rows,
    )


def summary_med(samples: Sequence[float]) -> float:
    return median(samples)


# ------------------------------------------------------------------------------ expiry sweep


SWEEP_GROUPS = 50  # sweeps timed per (k, rep), each on its own group of k nodes


def _sweep_setup(n: int, k: int) -> tuple[Any, SimClock, NaiveScan, list[float]]:
    """Groups of k nodes heard 1 s apart, the other nodes later; returns the sweep times.

    At each returned time exactly one group (k nodes) is past its deadline, so R sweeps of k
    expiries can be timed in one block on one tracker of n nodes (nothing else is due).
    """
    groups = max(1, min(SWEEP_GROUPS, n // k))
    clock = SimClock()
    t0 = clock.now
    # Nobody heartbeats here, so every node is late: the correlated-silence rule would hold
    # the expiries (docs/availability.md). This table measures the scheduling alone.
    tracker = T.HeartbeatTracker(T.TrackerSettings(mass_min=10**9), clock)
    ref = NaiveScan()
    for i in range(n):
        group = i // k
        clock.now = t0 + group if group < groups else t0 + groups + 10.0
        node_id = f"node-{i:05d}"
        tracker.on_message(node_id, retained=False)
        ref.on_message(node_id, clock.now)
    return tracker, clock, ref, [t0 + g + TIMEOUT + 0.01 for g in range(groups)]


def bench_sweep(n_reps: int) -> str:
    n = SWEEP_N
    samples: dict[tuple[int, str], list[float]] = {}
    expired: dict[str, int] = {}
    for rep in range(n_reps):
        for k in SWEEP_KS:
            tracker, clock, ref, times = _sweep_setup(n, k)

            def tick(
                tracker: Any = tracker, clock: SimClock = clock, times: list[float] = times
            ) -> None:
                count = 0
                for at in times:
                    clock.now = at
                    count += len(tracker.tick().changed)
                expired["tick"] = count

            def scan(ref: NaiveScan = ref, times: list[float] = times) -> None:
                expired["scan"] = sum(len(ref.scan(at)) for at in times)

            jobs = [("tick", tick), ("scan", scan)]
            for kind, job in jobs if rep % 2 == 0 else jobs[::-1]:
                samples.setdefault((k, kind), []).append(_timed(job) / len(times) * 1e6)
                if expired[kind] != k * len(times):
                    raise AssertionError(f"{kind} expired {expired[kind]}, not {k * len(times)}")
    rows = []
    for k in SWEEP_KS:
        tick_med, tick_spread = fmt_stat(samples[(k, "tick")], 1)
        scan_med, scan_spread = fmt_stat(samples[(k, "scan")], 1)
        per_node = summary_med(samples[(k, "tick")]) / k
        ratio = summary_med(samples[(k, "scan")]) / summary_med(samples[(k, "tick")])
        rows.append(
            [f"{k:,}", tick_med, tick_spread, fmt(per_node), scan_med, scan_spread, f"{ratio:.2f}"]
        )
    return table(
        [
            "k expiring at once",
            "tracker.tick(): µs per sweep",
            "spread",
            "µs per expired node",
            f"naive scan of {n:,}: µs",
            "spread",
            "scan ÷ tick",
        ],
        rows,
    )


# ------------------------------------------------------------------------------ scale, memory


def _drive(
    tracker: Any, clock: SimClock, beats: Sequence[tuple[float, str, int, Any]], fire: list[float]
) -> int:
    """Feed heartbeats in time order as hub.py does, with its one timer (fire[0]).

    Each beat carries the node's tracker record (``tracker.handle``), which hub.py keeps in
    the topic's route: the quiet path on the record first (`quiet_heartbeat`: nothing visible
    changes, no heap push, so the timer is not re-armed); when it declines, the full
    `on_heartbeat` by id and the timer re-arm. Returns how many took the quiet path.
    """
    quiet_path = tracker.quiet_heartbeat
    on_heartbeat = tracker.on_heartbeat
    next_deadline = tracker.next_deadline
    quiet = 0
    for t, node_id, seq, record in beats:
        while fire[0] <= t:
            clock.now = fire[0]
            tracker.tick(limit=100)
            due = next_deadline()
            fire[0] = math.inf if due is None else max(_fire_coalesced(due), clock.now)
        clock.now = t
        if record is not None and quiet_path(record, seq, seq * 30, INTERVAL):
            quiet += 1
            continue
        on_heartbeat(node_id, seq=seq, uptime=seq * 30, interval=INTERVAL, retained=False)
        due = next_deadline()
        if due is not None and (at := _fire_coalesced(due)) < fire[0]:
            fire[0] = at
    return quiet


@dataclass(slots=True)
class _LastSeen:
    """The floor's record of a node: the one thing any heartbeat tracker must remember."""

    last_seen: float = 0.0


def _drive_floor(clock: SimClock, beats: Sequence[tuple[float, str, int, Any]]) -> None:
    """The floor of table 4: per heartbeat, the node's last_seen set on its own record.

    The same loop, clock and stream as `_drive`, the record reached the same way (carried in
    the beat, as hub.py's route carries it): what is left is the memory traffic of touching
    one record per node and replacing one number object, which grows with N for any design
    that keeps a Python object per node.
    """
    for t, _node_id, _seq, record in beats:
        clock.now = t
        record.last_seen = clock()


def _round_robin(
    ids: Sequence[str],
    rounds: int,
    start: float,
    first_seq: int,
    records: Mapping[str, Any] | None = None,
) -> list[Any]:
    """(time, node id, seq, record) per heartbeat: every node once per round, random phase."""
    rnd = random.Random(len(ids))
    phases = sorted((rnd.uniform(0.0, INTERVAL), node_id) for node_id in ids)
    get = (records or {}).get
    return [
        (start + r * INTERVAL + phase, node_id, first_seq + r, get(node_id))
        for r in range(rounds)
        for phase, node_id in phases
    ]


@dataclass(slots=True)
class _Fleet:
    """One tracker of N nodes in its steady state, carried from rep to rep, and its floor."""

    ids: list[str]
    tracker: Any
    records: dict[str, Any]  # node id -> the tracker's record (hub.py keeps it in the route)
    floor: dict[str, _LastSeen]  # node id -> the floor's record
    clock: SimClock
    fire: list[float]
    start: float  # simulated time of the next round
    seq: int  # seq of the next round


def bench_scale(n_reps: int) -> tuple[str, Target]:
    """µs per heartbeat for 1 k … 100 k nodes (the same timed message count for every N).

    Every N is measured in the steady state of a live fleet: link_window + 1 untimed rounds
    first (until then each heartbeat changes the node's link quality, which is shown, so it
    takes the full path), done once per N; the reps then continue the same stream. The floor
    (`_drive_floor`) runs the same stream in the same rep, right after ours.
    """
    warmup = T.TrackerSettings().link_window + 1
    fleets: dict[int, _Fleet] = {}
    for n in SCALE_SIZES:
        ids = [f"node-{i:06d}" for i in range(n)]
        clock = SimClock()
        tracker = T.HeartbeatTracker(T.TrackerSettings(), clock)
        floor = {node_id: _LastSeen() for node_id in ids}
        fire = [math.inf]
        _drive(tracker, clock, _round_robin(ids, warmup, clock.now, 1), fire)
        records = {node_id: tracker.handle(node_id) for node_id in ids}
        fleets[n] = _Fleet(ids, tracker, records, floor, clock, fire, clock.now + 1, warmup + 1)
    samples: dict[int, list[float]] = {}
    floor_samples: dict[int, list[float]] = {}
    quiet_share: dict[int, list[float]] = {}
    for _rep in range(n_reps):
        for n in SCALE_SIZES:
            fleet = fleets[n]
            rounds = max(1, math.ceil(SCALE_MESSAGES / n))
            args = (fleet.ids, rounds, fleet.start, fleet.seq)
            timed = _round_robin(*args, fleet.records)[:SCALE_MESSAGES]
            floor_timed = _round_robin(*args, fleet.floor)[:SCALE_MESSAGES]
            fleet.start += rounds * INTERVAL
            fleet.seq += rounds
            quiet = [0]

            def run(
                fleet: _Fleet = fleet, timed: list[Any] = timed, quiet: list[int] = quiet
            ) -> None:
                quiet[0] = _drive(fleet.tracker, fleet.clock, timed, fleet.fire)

            def run_floor(timed: list[Any] = floor_timed) -> None:
                _drive_floor(SimClock(), timed)

            cpu = _timed(run)
            floor_cpu = _timed(run_floor)
            samples.setdefault(n, []).append(cpu / len(timed) * 1e6)
            floor_samples.setdefault(n, []).append(floor_cpu / len(floor_timed) * 1e6)
            quiet_share.setdefault(n, []).append(quiet[0] / len(timed))
            assert fleet.tracker.counts() == (n, 0)
            del timed, floor_timed
    first = SCALE_SIZES[0]
    base = median(samples[first])
    floor_base = median(floor_samples[first])

    def paired(per_n: dict[int, list[float]], n: int) -> list[float]:
        """Per-rep ratios to the 1 k pass of the same rep (back to back: drift cancels)."""
        return [x / x0 for x, x0 in zip(per_n[n], per_n[first], strict=True)]

    rows = []
    for n in SCALE_SIZES:
        med, spread = fmt_stat(samples[n])
        floor_med, floor_spread = fmt_stat(floor_samples[n])
        ratio = paired(samples, n)
        rows.append(
            [
                f"{n:,}",
                med,
                spread,
                f"{median(ratio):.2f}× ({min(ratio):.2f}–{max(ratio):.2f})",
                floor_med,
                floor_spread,
                f"{median(paired(floor_samples, n)):.2f}×",
                f"{median(samples[n]) - base:+.2f} / {median(floor_samples[n]) - floor_base:+.2f}",
                f"{100 * min(quiet_share[n]):.1f} %",
            ]
        )
    worst = max(median(paired(samples, n)) for n in SCALE_SIZES)
    last = SCALE_SIZES[-1]
    floor_growth = median(paired(floor_samples, last))
    extra = median(samples[last]) - base
    floor_extra = median(floor_samples[last]) - floor_base
    target = Target(
        "tracker_flat",
        worst,
        1.10,
        "× the 1 k cost",
        "worst over N of the median per-rep ratio to the 1 k nodes pass of the same rep, same "
        f"{SCALE_MESSAGES:,} timed heartbeats per N, the path hub.py runs (the quiet "
        "heartbeat path on the node's record, the full path and timer re-arm when it "
        f"declines; timer work included) after {warmup} untimed rounds (the steady state at "
        f"every N). The per-heartbeat work is the same at every N; what grows is memory "
        f"latency: at {SCALE_SIZES[-1]:,} nodes every heartbeat's node is a cache miss that "
        f"it is not at {SCALE_SIZES[0]:,}. The floor in the same reps (one last_seen set on "
        f"a per-node record, nothing else) gets {floor_extra:+.2f} µs slower at "
        f"{SCALE_SIZES[-1]:,} nodes ({floor_growth:.2f}× its own 1 k cost); ours {extra:+.2f}"
        f" µs. That floor's extra alone, on our 1 k cost, is {1 + floor_extra / base:.2f}×: "
        "the bound for any tracker that keeps a Python record per node (benchmarks/NOTES.md)",
    )
    body = table(
        [
            "N",
            "µs per heartbeat (median)",
            "spread",
            "÷ 1 k nodes (per rep: median, min–max)",
            "floor µs",
            "floor spread",
            "floor ÷ 1 k",
            "µs over 1 k: ours / floor",
            "quiet path (min over reps)",
        ],
        rows,
    )
    return body, target


def bench_memory() -> tuple[str, Target]:
    """Bytes per node held by the tracker (tracemalloc), node ids excluded (the hub has them)."""
    n = MEMORY_N
    ids = [f"node-{i:06d}" for i in range(n)]
    clock = SimClock()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracker = T.HeartbeatTracker(T.TrackerSettings(), clock)
    for seq in range(1, 4):  # three heartbeats each: link window, seq, uptime, interval set
        for node_id in ids:
            tracker.on_heartbeat(
                node_id, seq=seq, uptime=seq * 30, interval=INTERVAL, retained=False
            )
        clock.now += INTERVAL
    for node_id in ids[: n // 10]:  # a tenth went through an offline/online pair (flap list)
        tracker.on_online_status(node_id, False, reason="shutdown", uptime=None, retained=False)
    clock.now += 10
    for node_id in ids[: n // 10]:
        tracker.on_heartbeat(node_id, seq=9, uptime=300, interval=INTERVAL, retained=False)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_node = (after - before) / n
    target = Target(
        "tracker_memory",
        per_node,
        1536,
        "B/node",
        f"tracemalloc delta for {n:,} nodes (3 heartbeats each, a tenth with a transition pair; "
        "the node, the dict slot, the heap entry, floats), node id strings excluded",
    )
    body = table(
        ["nodes", "bytes per node", "heap entries"],
        [[f"{n:,}", f"{per_node:,.0f}", f"{tracker.heap_size:,}"]],
    )
    assert tracker is not None
    return body, target


# ------------------------------------------------------------------------------ loss table


def _loss_cell(loss: float, multiplier: float, seed: int) -> tuple[float, list[float], int]:
    """(false offline per node-hour, freeze detection delays, node-hours) for one setting."""
    rnd = random.Random(seed)
    settings = T.TrackerSettings(multiplier=multiplier, mass_min=10**9)
    clock = SimClock()
    tracker = T.HeartbeatTracker(settings, clock)
    start = clock.now
    end = start + LOSS_HOURS * 3600
    ids = [f"n{i:04d}" for i in range(LOSS_NODES)]
    beats = []
    for node_id in ids:
        phase = rnd.uniform(0.0, INTERVAL)
        k = 0
        while (t := start + phase + k * INTERVAL) < end:
            if k == 0 or rnd.random() >= loss:
                beats.append((t, node_id, k + 1))
            k += 1
    beats.sort()
    false_offline = 0
    fire = [math.inf]
    on_heartbeat = tracker.on_heartbeat
    for t, node_id, seq in beats:
        while fire[0] <= t:
            clock.now = fire[0]
            false_offline += sum(1 for e in tracker.tick().events if e.type is T.EventType.OFFLINE)
            due = tracker.next_deadline()
            fire[0] = math.inf if due is None else _fire_coalesced(due)
        clock.now = t
        on_heartbeat(node_id, seq=seq, uptime=seq * 30, interval=INTERVAL, retained=False)
        due = tracker.next_deadline()
        if due is not None and (at := _fire_coalesced(due)) < fire[0]:
            fire[0] = at
    delays = _freeze_delays(loss, settings, rnd)
    node_hours = LOSS_NODES * LOSS_HOURS
    return false_offline / node_hours, delays, int(node_hours)


def _freeze_delays(loss: float, settings: Any, rnd: random.Random) -> list[float]:
    """Real freezes at the same settings: a node heartbeating with this loss stops at a random
    instant; delay = offline event time - freeze time (timer grid included)."""
    clock = SimClock()
    start = clock.now
    delays = []
    for f in range(FREEZES):
        clock.now = start
        single = T.HeartbeatTracker(settings, clock)
        freeze_at = start + 600 + rnd.uniform(0.0, INTERVAL)
        t = start + rnd.uniform(0.0, INTERVAL)
        k = 0
        while t < freeze_at:
            if k == 0 or rnd.random() >= loss:
                clock.now = t
                single.on_heartbeat("x", seq=k + 1, uptime=k, interval=INTERVAL, retained=False)
            k += 1
            t += INTERVAL
        clock.now = freeze_at
        single.tick()  # a loss just before the freeze may already have expired it
        status = single.status("x")
        if status is not None and status.state is T.Availability.OFFLINE:
            delays.append(0.0)
            continue
        due = single.next_deadline()
        assert due is not None, f
        clock.now = _fire_coalesced(due)
        events = single.tick().events
        assert events, (loss, f)
        delays.append(events[0].at - freeze_at)
    return delays


def bench_loss() -> tuple[str, Target]:
    rows = []
    cells = 0
    for multiplier in MULTIPLIERS:
        timeout = max(30.0, multiplier * INTERVAL)
        for loss in LOSSES:
            rate, delays, node_hours = _loss_cell(loss, multiplier, int(loss * 1000 + multiplier))
            expected = 3600 / INTERVAL * (1 - loss) * loss**multiplier
            delays.sort()
            rows.append(
                [
                    f"{multiplier:g}",
                    f"{timeout:g} s",
                    f"{loss * 100:g} %",
                    f"{rate:.4f}",
                    f"{expected:.2g}",
                    f"{median(delays):.1f} s",
                    f"{delays[int(len(delays) * 0.95) - 1]:.1f} s",
                    f"{delays[-1]:.1f} s",
                ]
            )
            cells += 1
    body = table(
        [
            "multiplier",
            "timeout",
            "heartbeat loss",
            f"false offline per node-hour (measured, {LOSS_NODES * LOSS_HOURS:,.0f} node-h)",
            "expected 120·(1−p)·p^m",
            "freeze detected after (median)",
            "p95",
            "max",
        ],
        rows,
    )
    target = Target(
        "false_offline_table",
        cells,
        len(LOSSES) * len(MULTIPLIERS),
        "cells",
        "every loss × multiplier cell measured with the real tracker on an injected clock",
        higher_is_better=True,
    )
    return body, target


# ------------------------------------------------------------------------------ main


def main() -> None:
    wall = time.perf_counter()
    n_reps = reps()
    stream_table, _ = bench_stream(n_reps)
    idle_table = bench_idle(n_reps)
    print("idle: done", flush=True)
    sweep_table = bench_sweep(n_reps)
    print("sweep: done", flush=True)
    scale_table, flat = bench_scale(reps(9))  # more reps: its ratio is the noisiest
    print("scale: done", flush=True)
    memory_table, memory = bench_memory()
    loss_table, loss_target = bench_loss()
    print("loss: done", flush=True)
    wall = time.perf_counter() - wall
    report(
        "bench_tracker",
        "bench_tracker — HeartbeatTracker scheduling cost (pure Python, no Home Assistant)",
        ".venv/bin/python benchmarks/bench_tracker.py",
        [
            f"- method: CPU time (`time.process_time`), median of {n_reps} reps with min–max "
            "spread; variants alternate (rotating order) rep by "
            "rep in this one run; `gc.collect()` before every timed block",
            f"- stream: every node heartbeats every {INTERVAL:g} s (random phase), timeout "
            f"{TIMEOUT:g} s (defaults), {WARMUP_ROUNDS} untimed warm-up rounds, then "
            f"{MESSAGES:,} timed messages; 1 % of the nodes stop a third of the way in and "
            "must expire (they do, in every variant that can detect it)",
        ],
        [
            (
                "1. µs per message in a steady heartbeat stream (amortised timer work included)",
                stream_table
                + "\n\n`wake-ups / s`: timer firings (tracker) or scans (naive) per simulated "
                "second. `heap at end`: tracker heap entries, live + stale. `max lateness`: "
                "worst detection time minus deadline (`last_seen + timeout`) over the dead "
                "nodes; the target is < 1 s. `÷ on_message row`: median of the row divided by "
                "the on_message row of the same N (harness loop included in both).",
            ),
            (
                "2. One wake-up when nothing is due (the idle cost)",
                idle_table,
            ),
            (
                f"3. One expiry sweep when k of {SWEEP_N:,} nodes expire at once",
                table_note_sweep(sweep_table),
            ),
            (
                "4. Per-heartbeat cost from 1 k to 100 k nodes (issue 14: flat within 10 %)",
                scale_table + "\n\nSame number of timed heartbeats for every N, in time order "
                "(every node every 30 s, random phase), the hub's coalesced timer simulated. "
                "Each heartbeat goes the way hub.py sends it: the tracker's quiet path on the "
                "node's record (which hub.py keeps in the topic's route) first, the full "
                "`on_heartbeat` + timer re-arm when it declines. Every N is "
                "measured in the steady state (link window full: link_window + 1 untimed "
                "rounds, once per N; the reps continue the same fleet's stream; 9 reps, the "
                "ratios paired per rep). Floor: the same "
                "stream and loop, each heartbeat only sets `last_seen` on its node's own "
                "record (a slotted object per node, reached as ours is): how much of the "
                "growth with N any per-node Python record pays.",
            ),
            ("5. Memory per node (issue 14: ≤ 1.5 KB)", memory_table),
            (
                "6. False offline under random heartbeat loss, and detection of a real freeze",
                loss_table + "\n\nEvery node heartbeats every 30 s; each heartbeat is lost "
                "independently with the given probability (a lossy Wi-Fi link). A node goes "
                "offline falsely when m consecutive heartbeats are lost (timeout = m × 30 s), "
                "hence the expected column. Freeze: a node stops at a random instant; the delay "
                "runs from the freeze to the offline event (0 when losses before it already "
                "expired it). Pick the multiplier from this table: 3 keeps a 5 % lossy link "
                "under ~0.02 false alarms per node-hour (expected column) and detects a "
                "freeze within its 90 s timeout.",
            ),
        ],
        wall,
        targets=[flat, memory, loss_target],
    )


def table_note_sweep(body: str) -> str:
    return (
        body + f"\n\nEach sample times up to {SWEEP_GROUPS} sweeps on one tracker (groups of k "
        "nodes heard 1 s apart, every other node later), divided by the number of sweeps; "
        "k = N is a single sweep. The tracker pops exactly the k due heap entries, turns each "
        "node offline and emits its event; the naive scan visits all N nodes and turns the k "
        "expired ones offline."
    )


if __name__ == "__main__":
    main()
