"""Tests for the pure command manager and offline intent queue (no Home Assistant instance).

The async scenarios run on a virtual-time event loop: when nothing is ready the loop jumps
straight to its next timer instead of sleeping, so the real 5 s timeouts and 1/2/4 s backoffs
run instantly and every publish time is exact. Each scenario must end with no task, no live
timer and no unretrieved exception left on its loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
import gc
import json
import logging
import math
import selectors
from typing import Any

import pytest

from custom_components.heartbeat_iot.homesync.commands import (
    CommandManager,
    CommandResult,
    CommandStatus,
    IntentQueue,
    QueuedIntent,
    TooManyPending,
)
from custom_components.heartbeat_iot.homesync.protocol import ProtocolError

from .fakes import EPOCH, FakeClock  # EPOCH is virtual loop time 0

LOGGER_NAME = "custom_components.heartbeat_iot.homesync.commands"


class _InstantSelector(selectors.DefaultSelector):
    """Poll without blocking; a wait for a timer advances virtual time instead."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: the loop would wait forever")
        self._clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: FakeClock) -> None:
        self._vclock = clock
        super().__init__(selector=_InstantSelector(clock))

    def time(self) -> float:
        return self._vclock.now


@dataclass
class Sent:
    at: float  # loop time of the publish
    topic: str
    payload: dict[str, Any]

    @property
    def node(self) -> str:
        return self.topic.split("/")[3]

    @property
    def request_id(self) -> str:
        rid: str = self.payload["request_id"]
        return rid


def answer(sent: Sent, status: str = "success", **extra: Any) -> dict[str, Any]:
    """The node's response/command payload for a publish."""
    return {"request_id": sent.request_id, "status": status, "result": sent.payload["action"]} | (
        extra
    )


@dataclass
class Rig:
    """A fake broker side: records publishes, can fail them or answer them."""

    clock: FakeClock
    loop: asyncio.AbstractEventLoop
    sent: list[Sent] = field(default_factory=list)
    publish_errors: int = 0  # how many of the next publishes raise
    on_publish: Callable[[Sent], None] | None = None  # runs inside publish (node side)
    manager: CommandManager = field(init=False)

    def __post_init__(self) -> None:
        self.manager = self.make()

    def wall(self) -> float:
        """Wall time: EPOCH at virtual loop time 0."""
        return EPOCH + self.clock.now

    def make(self, **kwargs: Any) -> CommandManager:
        self.manager = CommandManager("home1", self.publish, clock=self.wall, **kwargs)
        return self.manager

    async def publish(self, topic: str, payload: str) -> None:
        await asyncio.sleep(0)  # a real publish yields to the loop
        sent = Sent(self.loop.time(), topic, json.loads(payload))
        self.sent.append(sent)
        if self.publish_errors:
            self.publish_errors -= 1
            raise ConnectionError("broker unreachable")
        if self.on_publish is not None:
            self.on_publish(sent)

    def reply_after(
        self, delay: float, *, when: Callable[[Sent], bool] = lambda _: True, **kw: Any
    ) -> None:
        """Answer every publish (or those matching `when`) after `delay` seconds."""

        def hook(sent: Sent) -> None:
            if when(sent):
                self.loop.call_later(
                    delay, self.manager.handle_response, sent.node, answer(sent, **kw)
                )

        self.on_publish = hook

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in zip(self.sent, self.sent[1:], strict=False)]


type Scenario = Callable[[Rig], Coroutine[Any, Any, None]]


def run(scenario: Scenario) -> None:
    """Run a scenario on a fresh virtual-time loop and check it left nothing behind."""
    clock = FakeClock(0.0)  # the loop's monotonic seconds
    loop = VirtualTimeLoop(clock)
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    try:
        loop.run_until_complete(scenario(Rig(clock, loop)))
        assert not asyncio.all_tasks(loop), "task left behind"
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert not timers, f"timer left behind: {timers}"
        # Unretrieved exceptions are reported when a future dies; young generations are
        # enough for this short-lived loop and cost 1 ms instead of 120 ms for a full pass.
        gc.collect(1)
        assert not problems, problems
    finally:
        if leftovers := asyncio.all_tasks(loop):
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.close()


def virtual_time(scenario: Scenario) -> Callable[[], None]:
    """Turn `async def test_x(rig)` into a plain test run on its own virtual-time loop."""

    def test() -> None:
        run(scenario)

    # Not functools.wraps: pytest would follow __wrapped__ and ask for a `rig` fixture.
    test.__name__, test.__qualname__, test.__doc__ = (
        scenario.__name__,
        scenario.__qualname__,
        scenario.__doc__,
    )
    return test


def test_harness_reports_what_a_scenario_leaves_behind() -> None:
    """The checks every scenario relies on actually fire."""

    async def unretrieved_exception(rig: Rig) -> None:
        rig.loop.create_future().set_exception(RuntimeError("lost"))

    async def live_timer(rig: Rig) -> None:
        rig.loop.call_later(1, print)

    async def live_task(rig: Rig) -> None:
        asyncio.create_task(asyncio.sleep(1))  # noqa: RUF006 - leaked on purpose

    async def deadlock(rig: Rig) -> None:
        await rig.loop.create_future()

    with pytest.raises(AssertionError, match="never retrieved"):
        run(unretrieved_exception)
    with pytest.raises(AssertionError, match="timer left behind"):
        run(live_timer)
    with pytest.raises(AssertionError, match="task left behind"):
        run(live_task)
    with pytest.raises(RuntimeError, match="deadlock"):
        run(deadlock)


# --- CommandManager -------------------------------------------------------------------------


@virtual_time
async def test_topic_payload_and_request_id(rig: Rig) -> None:
    """Topic, payload keys, ISO timestamp from the injected clock, uuid hex request id."""
    rig.reply_after(0.01)
    result = await rig.manager.send(
        "plug-1", "config", "set", {"config": {"heartbeat_interval": 5}}
    )

    (sent,) = rig.sent
    assert sent.topic == "homesync/home1/nodes/plug-1/command/config"
    assert sent.payload == {
        "action": "set",
        "request_id": result.request_id,
        "timestamp": "2025-02-06T14:30:00Z",
        "ttl": 30,
        "config": {"heartbeat_interval": 5},
    }
    assert len(result.request_id) == 32
    int(result.request_id, 16)  # hex
    # A caller may set its own ttl (e.g. OTA), and request ids are fresh per command.
    second = await rig.manager.send("plug-1", "ota", "update", {"url": "u", "ttl": 600})
    assert rig.sent[1].payload["ttl"] == 600
    assert rig.sent[1].payload["timestamp"] == "2025-02-06T14:30:00Z"
    assert second.request_id != result.request_id


@virtual_time
async def test_success_first_try(rig: Rig) -> None:
    rig.reply_after(0.088)
    result = await rig.manager.send("n1", "relay", "on")

    assert result == CommandResult(
        request_id=rig.sent[0].request_id,
        node_id="n1",
        command="relay",
        action="on",
        status=CommandStatus.SUCCESS,
        result="on",
        error=None,
        attempts=1,
        latency_ms=result.latency_ms,
    )
    assert result.latency_ms == pytest.approx(88.0)
    assert result.as_dict() == {
        "request_id": result.request_id,
        "status": "success",
        "result": "on",
        "error": None,
        "attempts": 1,
        "latency_ms": 88.0,
    }
    json.dumps(result.as_dict())
    assert rig.manager.pending() == []


@virtual_time
async def test_no_answer_retries_same_id_with_backoff_then_timeout(rig: Rig) -> None:
    """Defaults: 5 s per attempt, 3 retries, backoff 1, 2, 4 s after each timed-out attempt."""
    start = rig.loop.time()
    result = await rig.manager.send("n1", "relay", "off")

    assert [s.at for s in rig.sent] == [0.0, 6.0, 13.0, 22.0]
    assert rig.gaps() == [5 + 1, 5 + 2, 5 + 4]
    assert {s.request_id for s in rig.sent} == {result.request_id}
    assert all(s.payload == rig.sent[0].payload for s in rig.sent)  # identical retransmission
    assert rig.loop.time() - start == 27.0  # the last attempt also gets its full 5 s
    assert result.status is CommandStatus.TIMEOUT
    assert result.attempts == 4
    assert result.latency_ms is None
    assert result.result is None
    assert result.error == "no answer from n1 after 4 attempts"
    assert rig.manager.pending() == []


@virtual_time
async def test_backoff_scales_with_backoff_setting(rig: Rig) -> None:
    rig.make(timeout=0.5, retries=4, backoff=0.25)
    await rig.manager.send("n1", "relay", "on")
    assert rig.gaps() == [0.5 + 0.25, 0.5 + 0.5, 0.5 + 1.0, 0.5 + 2.0]


@virtual_time
async def test_answer_on_third_attempt(rig: Rig) -> None:
    rig.reply_after(0.05, when=lambda _: len(rig.sent) == 3)
    result = await rig.manager.send("n1", "relay", "toggle")

    assert len(rig.sent) == 3
    assert result.status is CommandStatus.SUCCESS
    assert result.attempts == 3
    # Latency counts from the first publish: 5+1 + 5+2 s of failed attempts + 50 ms.
    assert result.latency_ms == pytest.approx(13_050.0)


@virtual_time
async def test_error_answer_is_not_retried(rig: Rig) -> None:
    rig.reply_after(0.02, status="error", error="relay stuck", result=None)
    result = await rig.manager.send("n1", "relay", "on")

    assert len(rig.sent) == 1
    assert result.status is CommandStatus.ERROR
    assert result.error == "relay stuck"
    assert result.result is None
    assert result.attempts == 1
    assert result.latency_ms == pytest.approx(20.0)


@virtual_time
async def test_expired_answer_is_not_retried(rig: Rig) -> None:
    rig.reply_after(0.02, status="expired")
    result = await rig.manager.send("n1", "relay", "on")

    assert len(rig.sent) == 1
    assert result.status is CommandStatus.EXPIRED
    assert result.error == "node answered 'expired'"


@virtual_time
async def test_unknown_or_missing_status_is_an_error(rig: Rig) -> None:
    rig.reply_after(0.01, status="maybe")
    result = await rig.manager.send("n1", "relay", "on")
    assert (result.status, result.error) == (CommandStatus.ERROR, "node answered 'maybe'")

    rig.reply_after(0.01, status=7)
    result = await rig.manager.send("n1", "relay", "on")
    assert (result.status, result.error) == (CommandStatus.ERROR, "node answered 7")


@virtual_time
async def test_non_text_result_is_serialised(rig: Rig) -> None:
    rig.reply_after(0.01, result={"heartbeat_interval": 5})
    result = await rig.manager.send("n1", "config", "set")
    assert result.result == '{"heartbeat_interval": 5}'


@virtual_time
async def test_answer_during_backoff_counts(rig: Rig) -> None:
    """An answer after its attempt timed out but before the retry resolves without a retry."""
    rig.reply_after(5.5)
    result = await rig.manager.send("n1", "relay", "on")

    assert len(rig.sent) == 1
    assert result.status is CommandStatus.SUCCESS
    assert result.latency_ms == pytest.approx(5500.0)
    assert rig.loop.time() == 5.5  # it did not sit out the rest of the backoff


@virtual_time
async def test_answer_inside_publish(rig: Rig) -> None:
    """An answer that beats the publish coroutine's return (e.g. local broker) is not missed."""

    def answer_now(sent: Sent) -> None:
        assert rig.manager.handle_response(sent.node, answer(sent))

    rig.on_publish = answer_now
    result = await rig.manager.send("n1", "relay", "on")
    assert (result.status, result.attempts, result.latency_ms) == (CommandStatus.SUCCESS, 1, 0.0)


def test_late_duplicate_and_unknown_answers_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
        failed = await rig.manager.send("n1", "relay", "on", retries=0)
        assert failed.status is CommandStatus.TIMEOUT
        # Late: the sender already gave up.
        assert not rig.manager.handle_response("n1", answer(rig.sent[0]))
        assert "late or unknown" in caplog.text

        rig.reply_after(0.01)
        ok = await rig.manager.send("n1", "relay", "off")
        # Duplicate after resolution (node replaying its cache for a retry).
        assert not rig.manager.handle_response("n1", answer(rig.sent[1]))
        assert ok.status is CommandStatus.SUCCESS
        # Unknown id.
        assert not rig.manager.handle_response("n1", {"request_id": "nope", "status": "success"})

    run(scenario)


@virtual_time
async def test_duplicate_while_waiting_is_ignored(rig: Rig) -> None:
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0.1)
    first = answer(rig.sent[0])
    assert rig.manager.handle_response("n1", first)
    # Resolved, but send() has not run yet to clean up: a second answer must not count,
    # and neither does an unload racing it.
    assert not rig.manager.handle_response("n1", answer(rig.sent[0], status="error"))
    rig.manager.cancel_all()
    result = await task
    assert result.status is CommandStatus.SUCCESS


@virtual_time
async def test_malformed_responses_are_ignored(rig: Rig) -> None:
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0.1)
    handle = rig.manager.handle_response
    for bad in (None, "text", [rig.sent[0].request_id], {}, {"request_id": 5}):
        assert not handle("n1", bad)  # type: ignore[arg-type]
    assert handle("n1", answer(rig.sent[0]))
    assert (await task).status is CommandStatus.SUCCESS


@virtual_time
async def test_answer_from_another_node_is_ignored(rig: Rig) -> None:
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0.1)
    assert not rig.manager.handle_response("n2", answer(rig.sent[0]))
    assert rig.manager.handle_response("n1", answer(rig.sent[0]))
    assert (await task).status is CommandStatus.SUCCESS


@virtual_time
async def test_max_pending_per_node(rig: Rig) -> None:
    rig.make(max_pending=2)
    tasks = [asyncio.create_task(rig.manager.send("n1", "relay", "on")) for _ in range(2)]
    await asyncio.sleep(0.1)
    assert len(rig.sent) == 2

    with pytest.raises(TooManyPending) as err:
        await rig.manager.send("n1", "led", "blink")
    assert (err.value.node_id, err.value.limit) == ("n1", 2)
    assert "n1" in str(err.value)
    assert len(rig.sent) == 2  # refused before publishing

    rig.reply_after(0.01)
    assert (await rig.manager.send("n2", "relay", "on")).status is CommandStatus.SUCCESS

    for sent in rig.sent[:2]:
        rig.manager.handle_response("n1", answer(sent))
    assert [t.status for t in await asyncio.gather(*tasks)] == [CommandStatus.SUCCESS] * 2
    # Capacity is back once the earlier commands finished.
    assert (await rig.manager.send("n1", "relay", "off")).status is CommandStatus.SUCCESS


def test_publish_error_is_a_failed_attempt(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(rig: Rig) -> None:
        rig.publish_errors = 1
        rig.reply_after(0.05)
        result = await rig.manager.send("n1", "relay", "on")

        assert len(rig.sent) == 2
        # Nothing went out, so no 5 s wait: straight to the 1 s backoff.
        assert rig.gaps() == [1.0]
        assert result.status is CommandStatus.SUCCESS
        assert result.attempts == 2
        assert result.latency_ms == pytest.approx(1050.0)
        assert "broker unreachable" in caplog.text

    run(scenario)


@virtual_time
async def test_every_publish_failing_times_out(rig: Rig) -> None:
    rig.publish_errors = 99
    result = await rig.manager.send("n1", "relay", "on")

    assert rig.gaps() == [1.0, 2.0, 4.0]
    assert result.status is CommandStatus.TIMEOUT
    assert result.attempts == 4
    assert result.error == (
        "no answer from n1 after 4 attempts (publish failed: broker unreachable)"
    )


@virtual_time
async def test_cancel_all(rig: Rig) -> None:
    """Waiting in an attempt or in a backoff, every send returns CANCELLED at once."""
    waiting = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    backing_off = asyncio.create_task(rig.manager.send("n2", "relay", "on", timeout=1.0))
    await asyncio.sleep(1.5)
    assert len(rig.manager.pending()) == 2

    rig.manager.cancel_all()
    results = await asyncio.gather(waiting, backing_off)

    assert rig.loop.time() == 1.5  # promptly: no timer had to run
    assert [r.status for r in results] == [CommandStatus.CANCELLED] * 2
    assert [r.as_dict()["status"] for r in results] == ["cancelled"] * 2
    assert results[0].error == "cancelled"
    assert rig.manager.pending() == []
    assert not rig.manager.handle_response("n1", answer(rig.sent[0]))
    rig.manager.cancel_all()  # idempotent, nothing pending


@virtual_time
async def test_cancel_all_during_publish(rig: Rig) -> None:
    rig.on_publish = lambda _: rig.manager.cancel_all()
    result = await rig.manager.send("n1", "relay", "on")
    assert (result.status, len(rig.sent)) == (CommandStatus.CANCELLED, 1)


@virtual_time
async def test_caller_cancellation_cleans_up(rig: Rig) -> None:
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.manager.pending() == []
    assert not rig.manager.handle_response("n1", answer(rig.sent[0]))


@virtual_time
async def test_constructor_sets_the_defaults(rig: Rig) -> None:
    """Timeout and retries come from the options once: an options change reloads the entry."""
    rig.make(timeout=2.0, retries=1)
    result = await rig.manager.send("n1", "relay", "on")

    assert [s.at for s in rig.sent] == [0.0, 3.0]
    assert result.attempts == 2
    assert rig.loop.time() == 5.0

    for timeout, retries in ((0.0, 1), (-1.0, 1), (math.nan, 1), (math.inf, 1), (1.0, -1)):
        with pytest.raises(ValueError, match="must be"):
            rig.make(timeout=timeout, retries=retries)


@virtual_time
async def test_per_call_overrides(rig: Rig) -> None:
    result = await rig.manager.send("n1", "relay", "on", timeout=0.5, retries=0)
    assert (len(rig.sent), result.attempts, rig.loop.time()) == (1, 1, 0.5)

    result = await rig.manager.send("n1", "relay", "on", retries=1)
    assert result.attempts == 2
    assert rig.gaps()[-1] == 6.0  # default 5 s timeout + 1 s backoff still apply

    with pytest.raises(ValueError, match="timeout must be"):
        await rig.manager.send("n1", "relay", "on", timeout=0)
    assert len(rig.sent) == 3


@virtual_time
async def test_pending_for_diagnostics(rig: Rig) -> None:
    rig.make(new_request_id=iter(["a1", "b2"]).__next__)
    first = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(1.0)
    second = asyncio.create_task(rig.manager.send("n2", "led", "blink"))
    await asyncio.sleep(5.5)  # n1 is in its second attempt now

    assert rig.manager.pending() == [
        {
            "request_id": "a1",
            "node": "n1",
            "command": "relay",
            "action": "on",
            "attempts": 2,
            "age": 6.5,
        },
        {
            "request_id": "b2",
            "node": "n2",
            "command": "led",
            "action": "blink",
            "attempts": 1,
            "age": 5.5,
        },
    ]
    assert [p["request_id"] for p in rig.manager.pending("n2")] == ["b2"]
    rig.manager.cancel_all()
    await asyncio.gather(first, second)


@virtual_time
async def test_invalid_input_is_refused_before_publishing(rig: Rig) -> None:
    for node, command in (("a/b", "relay"), ("n1", "Relay"), ("+", "relay"), ("n1", "")):
        with pytest.raises(ProtocolError):
            await rig.manager.send(node, command, "on")
    with pytest.raises(ValueError, match="request_id"):
        await rig.manager.send("n1", "relay", "on", {"request_id": "mine"})
    assert rig.sent == []

    rig.make(new_request_id=lambda: "same")
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already in flight"):
        await rig.manager.send("n1", "relay", "off")
    rig.manager.cancel_all()
    await task


def test_constructor_validation() -> None:
    async def publish(topic: str, payload: str) -> None:
        raise AssertionError  # pragma: no cover

    def make(**kwargs: Any) -> CommandManager:
        return CommandManager(kwargs.pop("home", "home1"), publish, clock=lambda: 0.0, **kwargs)

    make()
    with pytest.raises(ProtocolError):
        make(home="bad/home")
    for bad in ({"timeout": 0}, {"retries": -1}, {"backoff": -1}, {"max_pending": 0}):
        with pytest.raises(ValueError, match="must be"):
            make(**bad)
    with pytest.raises(ValueError, match="must be"):
        make(command_ttl=0)


# --- IntentQueue ----------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> IntentQueue:
    return IntentQueue(clock=clock, default_ttl=3600.0)


def test_queue_last_intent_per_node_and_command_wins(queue: IntentQueue, clock: FakeClock) -> None:
    queue.put("n1", "relay", "on")
    queue.put("n1", "led", "blink")
    clock.now += 10
    latest = queue.put("n1", "relay", "off", {"source": "automation"})
    queue.put("n2", "relay", "on")

    assert len(queue) == 3
    assert latest == QueuedIntent(
        "n1", "relay", "off", {"source": "automation"}, EPOCH + 10, EPOCH + 3610
    )
    # Replacing moves the intent to the back of the queue.
    assert [(i.command, i.action) for i in queue.pending("n1")] == [
        ("led", "blink"),
        ("relay", "off"),
    ]
    assert [i.node_id for i in queue.pending()] == ["n1", "n1", "n2"]


def test_queue_params_are_copied(queue: IntentQueue) -> None:
    params: dict[str, Any] = {"config": {"heartbeat_interval": 30}}
    intent = queue.put("n1", "config", "set", params)
    params["config"]["heartbeat_interval"] = 1
    assert intent.params == {"config": {"heartbeat_interval": 30}}
    exported = queue.export()
    exported[0]["params"]["config"]["heartbeat_interval"] = 2
    assert queue.pending()[0].params["config"]["heartbeat_interval"] == 30


def test_queue_take_returns_live_intents_only(queue: IntentQueue, clock: FakeClock) -> None:
    queue.put("n1", "led", "on", ttl=5)
    queue.put("n1", "relay", "on")
    queue.put("n2", "relay", "off")
    clock.now += 5  # the led intent expires exactly now

    taken = queue.take("n1")
    assert [(i.command, i.action) for i in taken] == [("relay", "on")]
    assert queue.take("n1") == []
    # The expired one stays until expire() reports it (so the glue can tell the user).
    assert [i.command for i in queue.pending("n1")] == ["led"]
    assert [i.command for i in queue.expire()] == ["led"]
    assert [i.node_id for i in queue.pending()] == ["n2"]


def test_queue_expiry(queue: IntentQueue, clock: FakeClock) -> None:
    assert queue.next_expiry() is None
    assert queue.expire() == []
    queue.put("n1", "relay", "on", ttl=60)
    queue.put("n2", "relay", "on", ttl=30)
    queue.put("n3", "relay", "on")
    assert queue.next_expiry() == EPOCH + 30

    clock.now += 29.9
    assert queue.expire() == []
    clock.now += 0.1
    assert [i.node_id for i in queue.expire()] == ["n2"]
    assert queue.next_expiry() == EPOCH + 60
    clock.now += 3600
    assert [i.node_id for i in queue.expire()] == ["n1", "n3"]
    assert queue.next_expiry() is None
    assert len(queue) == 0


def test_queue_rejects_non_positive_ttl(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        IntentQueue(clock=clock, default_ttl=0)
    queue = IntentQueue(clock=clock)
    for ttl in (0, -5, math.nan):
        with pytest.raises(ValueError, match="must be positive"):
            queue.put("n1", "relay", "on", ttl=ttl)
    assert queue.put("n1", "relay", "on").expires_at == EPOCH + 3600


def test_queue_forget(queue: IntentQueue) -> None:
    queue.put("n1", "relay", "on")
    queue.put("n1", "led", "on")
    queue.put("n2", "relay", "on")
    queue.forget("n1")
    queue.forget("unknown")
    assert [i.node_id for i in queue.pending()] == ["n2"]


def test_queue_export_restore_round_trip(queue: IntentQueue, clock: FakeClock) -> None:
    queue.put("n1", "relay", "on")
    queue.put("n1", "config", "set", {"config": {"telemetry_interval": 10}}, ttl=120)
    queue.put("n2", "ota", "update", {"url": "http://x/fw.bin", "version": "1.2.3"})
    stored = json.loads(json.dumps(queue.export()))  # what helpers.storage.Store round-trips

    restored = IntentQueue(clock=clock)
    restored.restore(stored)
    assert restored.pending() == queue.pending()
    assert restored.export() == stored
    assert stored[1] == {
        "node_id": "n1",
        "command": "config",
        "action": "set",
        "params": {"config": {"telemetry_interval": 10}},
        "queued_at": EPOCH,
        "expires_at": EPOCH + 120,
    }


def test_queue_restore_keeps_newer_intents(queue: IntentQueue, clock: FakeClock) -> None:
    old = {"node_id": "n1", "command": "relay", "action": "on", "queued_at": EPOCH - 60}
    old["expires_at"] = EPOCH + 60
    clock.now += 1
    queue.put("n1", "relay", "off")
    queue.restore([old, {**old, "command": "led", "action": "blink"}])
    assert [(i.command, i.action) for i in queue.pending()] == [("relay", "off"), ("led", "blink")]
    # A newer stored intent replaces an older one in memory; params default to {}.
    queue.restore([{**old, "action": "toggle", "queued_at": EPOCH + 5}])
    assert queue.pending()[-1] == QueuedIntent("n1", "relay", "toggle", {}, EPOCH + 5, EPOCH + 60)


def test_queue_restore_skips_garbage(queue: IntentQueue, caplog: pytest.LogCaptureFixture) -> None:
    good: dict[str, Any] = {
        "node_id": "n1",
        "command": "relay",
        "action": "on",
        "params": {},
        "queued_at": EPOCH,
        "expires_at": EPOCH + 10,
    }
    garbage: list[Any] = [
        None,
        "n1",
        42,
        [],
        {},
        {**good, "node_id": ""},
        {**good, "node_id": 7},
        {**good, "command": None},
        {**good, "action": ["on"]},
        {**good, "params": "x"},
        {**good, "queued_at": "yesterday"},
        {**good, "expires_at": None},
        {**good, "expires_at": True},
        {**good, "expires_at": math.nan},
        {k: v for k, v in good.items() if k != "queued_at"},
        good,
    ]
    queue.restore(garbage)
    assert queue.pending() == [QueuedIntent("n1", "relay", "on", {}, EPOCH, EPOCH + 10)]
    assert "Skipped 15 malformed" in caplog.text

    for not_a_list in (None, "[]", {"node_id": "n1"}, 5):
        queue.restore(not_a_list)  # type: ignore[arg-type]
    assert len(queue) == 1
    assert "not a list" in caplog.text
