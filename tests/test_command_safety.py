"""Command safety in the pure command module (issue 16 items 5, 6, 10; issue 10 item 14).

Commands a node cannot take are refused before anything is sent or queued; an answer the
schema rejects ends the command at once; answers, whatever their shape, never break the
manager; the counters behind the per-home statistics add up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.heartbeat_iot.homesync.commands import (
    CommandRefused,
    CommandStatus,
    CommandTooLarge,
    IntentQueue,
)
from custom_components.heartbeat_iot.homesync.protocol import MAX_COMMAND_BYTES
from firmware.homesync import protocol as firmware_protocol

from .test_commands import EPOCH, LOGGER_NAME, FakeClock, Rig, answer, run, virtual_time

REQUEST_ID = "0123456789abcdef0123456789abcdef"  # what uuid4().hex looks like


def _config_params(payload_bytes: int) -> dict[str, Any]:
    """config/set params making the command payload exactly `payload_bytes` long."""
    base = {
        "action": "set",
        "request_id": REQUEST_ID,
        "timestamp": "2025-02-06T14:30:00Z",
        "ttl": 30,
        "config": {"note": ""},
    }
    pad = payload_bytes - len(json.dumps(base).encode())
    assert pad >= 0
    return {"config": {"note": "x" * pad}}


def test_the_limit_is_the_firmware_limit() -> None:
    """Contract: the integration refuses what the firmware could not take, no less."""
    assert MAX_COMMAND_BYTES == firmware_protocol.MAX_COMMAND_BYTES == 4096


@virtual_time
async def test_command_above_the_node_limit_is_refused_before_sending(rig: Rig) -> None:
    rig.make(new_request_id=lambda: REQUEST_ID)
    with pytest.raises(CommandTooLarge) as err:
        await rig.manager.send("n1", "config", "set", _config_params(MAX_COMMAND_BYTES + 1))
    assert (err.value.size, err.value.limit) == (MAX_COMMAND_BYTES + 1, MAX_COMMAND_BYTES)
    assert err.value.key == "command_too_large"
    assert err.value.placeholders == {"size": "4097", "limit": "4096"}
    assert rig.sent == []
    assert rig.manager.pending() == []
    assert rig.manager.stats.sent == 0

    # Exactly at the limit goes out, byte for byte.
    rig.reply_after(0.01)
    result = await rig.manager.send("n1", "config", "set", _config_params(MAX_COMMAND_BYTES))
    assert result.status is CommandStatus.SUCCESS
    assert len(json.dumps(rig.sent[0].payload).encode()) == MAX_COMMAND_BYTES


@virtual_time
async def test_check_refuses_what_send_would_refuse(rig: Rig) -> None:
    """The check a caller runs before queueing agrees with send()."""
    rig.manager.check("set", _config_params(MAX_COMMAND_BYTES))
    with pytest.raises(CommandTooLarge):
        rig.manager.check("set", _config_params(MAX_COMMAND_BYTES + 1))
    with pytest.raises(CommandRefused, match="JSON"):
        rig.manager.check("set", {"config": {"when": object()}})


@pytest.mark.parametrize("ttl", [0, -1, 0.5, 86401, "30", True, None, math.inf, math.nan, [30]])
def test_invalid_ttl_is_refused(ttl: Any) -> None:
    async def scenario(rig: Rig) -> None:
        with pytest.raises(CommandRefused) as err:
            await rig.manager.send("n1", "relay", "on", {"ttl": ttl})
        assert err.value.key == "invalid_ttl"
        assert err.value.placeholders["min"] == "1"
        assert err.value.placeholders["max"] == "86400"
        assert rig.sent == []

    run(scenario)


@virtual_time
async def test_valid_ttl_is_sent(rig: Rig) -> None:
    rig.reply_after(0.01)
    for ttl in (1, 600, 86400, 2.5):
        await rig.manager.send("n1", "relay", "on", {"ttl": ttl})
    assert [s.payload["ttl"] for s in rig.sent] == [1, 600, 86400, 2.5]


def test_queue_refuses_oversized_intents_and_skips_stored_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    queue = IntentQueue(clock=clock)
    with pytest.raises(CommandTooLarge):
        queue.put("n1", "config", "set", {"config": {"note": "x" * MAX_COMMAND_BYTES}})
    assert len(queue) == 0
    queue.put("n1", "config", "set", {"config": {"note": "x" * 100}})

    big = {
        "node_id": "n2",
        "command": "config",
        "action": "set",
        "params": {"config": {"note": "x" * 200_000}},
        "queued_at": EPOCH,
        "expires_at": EPOCH + 10,
    }
    queue.restore([big])
    assert [i.node_id for i in queue.pending()] == ["n1"]
    assert "Skipped 1 malformed" in caplog.text


def test_invalid_answer_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """The node answered, badly: no retries, no 'did not confirm', and the log says why."""

    async def scenario(rig: Rig) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
        task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
        await asyncio.sleep(0.1)
        bad = answer(rig.sent[0], result="x" * 300)
        reason = "length of value must be at most 256 for dictionary value @ data['result']"
        assert rig.manager.handle_invalid_response("n1", bad, reason)
        result = await task

        assert result.status is CommandStatus.INVALID
        assert result.attempts == 1
        assert len(rig.sent) == 1
        assert result.error == reason
        assert result.latency_ms == pytest.approx(100.0)
        assert "n1" in caplog.text
        assert reason in caplog.text
        assert rig.manager.stats.failed == 1

    run(scenario)


@virtual_time
async def test_invalid_answer_for_nobody_is_ignored(rig: Rig) -> None:
    task = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0.1)
    request_id = rig.sent[0].request_id
    handle = rig.manager.handle_invalid_response
    assert not handle("n2", {"request_id": request_id}, "bad")  # another node's answer
    assert not handle("n1", {"request_id": "other"}, "bad")
    assert not handle("n1", {"request_id": 5}, "bad")
    assert not handle("n1", "garbage", "bad")  # type: ignore[arg-type]
    assert rig.manager.handle_response("n1", answer(rig.sent[0]))
    assert not handle("n1", {"request_id": request_id}, "bad")  # already answered
    assert (await task).status is CommandStatus.SUCCESS


@virtual_time
async def test_stats_add_up(rig: Rig) -> None:
    rig.reply_after(0.01)
    await rig.manager.send("n1", "relay", "on")
    rig.reply_after(0.01, status="error", error="busy")
    await rig.manager.send("n1", "relay", "on")
    rig.on_publish = None
    await rig.manager.send("n1", "relay", "on", retries=0)  # timeout
    pending = asyncio.create_task(rig.manager.send("n1", "relay", "on"))
    await asyncio.sleep(0.1)

    stats = rig.manager.stats
    assert (stats.sent, stats.confirmed, stats.failed) == (4, 1, 2)
    assert rig.manager.in_flight == 1
    rig.manager.cancel_all()
    await pending
    # An unload is not the node failing.
    assert (stats.sent, stats.confirmed, stats.failed) == (4, 1, 2)
    assert rig.manager.in_flight == 0


# --- response matching: whatever arrives, the manager stays consistent (issue 16 item 10) ---

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["n1", "n2", "", "n1/x"]),
            st.one_of(
                _values,
                st.fixed_dictionaries(
                    {"request_id": st.sampled_from(["RID", "other", 5, None])},
                    optional={"status": _values, "result": _values, "error": _values},
                ),
            ),
            st.booleans(),  # valid (handle_response) or schema-rejected (handle_invalid_response)
        ),
        max_size=6,
    )
)
def test_any_answers_leave_the_manager_consistent(
    answers: list[tuple[str, Any, bool]],
) -> None:
    async def scenario(rig: Rig) -> None:
        rig.make(new_request_id=lambda: "RID")
        task = asyncio.create_task(rig.manager.send("n1", "relay", "on", retries=0))
        await asyncio.sleep(0.1)
        resolved = 0
        for node, payload, valid in answers:
            if valid:
                resolved += rig.manager.handle_response(node, payload)
            else:
                resolved += rig.manager.handle_invalid_response(node, payload, "bad")
        assert resolved <= 1  # at most the one command waiting, once
        result = await task
        assert result.status in set(CommandStatus) - {CommandStatus.CANCELLED}
        assert (result.status is CommandStatus.TIMEOUT) == (resolved == 0)
        assert result.result is None or isinstance(result.result, str)
        assert result.error is None or isinstance(result.error, str)
        json.dumps(result.as_dict())
        assert rig.manager.pending() == []
        assert rig.manager.in_flight == 0
        stats = rig.manager.stats
        assert stats.sent == 1
        assert stats.confirmed + stats.failed == 1

    run(scenario)
