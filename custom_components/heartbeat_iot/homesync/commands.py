"""Confirmed node commands and the offline intent queue (docs/protocol.md "Delivery rules",
docs/architecture.md §6).

Pure module: no Home Assistant import. Publishing and the wall clock are injected; waiting uses
asyncio loop timers only, so Home Assistant's tests can drive it with `async_fire_time_changed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
import json
import logging
import math
from typing import Any, Final
import uuid

from .clock import Clock
from .protocol import (
    MAX_COMMAND_BYTES,
    MAX_COMMAND_TTL,
    MIN_COMMAND_TTL,
    Category,
    ProtocolError,
    build_topic,
    is_valid_id,
)

_LOGGER = logging.getLogger(__name__)

type Publish = Callable[[str, str], Awaitable[None]]
"""Send (topic, JSON payload); the glue publishes with QoS 1, never retained."""

# Keys the manager owns in a command payload. `ttl` is deliberately not among them: a caller
# may pass its own (an OTA download can legitimately need longer than a relay toggle).
RESERVED_KEYS: Final = frozenset({"action", "request_id", "timestamp"})


class CommandStatus(StrEnum):
    """Final outcome of `CommandManager.send`."""

    SUCCESS = "success"
    ERROR = "error"  # the node answered and refused or failed
    EXPIRED = "expired"  # the node answered that the command arrived after its TTL
    TIMEOUT = "timeout"  # no answer to any attempt
    CANCELLED = "cancelled"  # the manager was shut down while waiting
    INVALID = "invalid"  # the node answered with a response the schema rejects


# Answer statuses a node may send, mapped to our outcome.
_ANSWERS: Final = {
    "success": CommandStatus.SUCCESS,
    "error": CommandStatus.ERROR,
    "expired": CommandStatus.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What became of one command."""

    request_id: str
    node_id: str
    command: str
    action: str
    status: CommandStatus
    result: str | None
    error: str | None
    attempts: int
    latency_ms: float | None  # first publish → answer; None when nothing answered

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view, used as service response data."""
        return {
            "request_id": self.request_id,
            "status": self.status.value,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
        }


class TooManyPending(Exception):
    """The node already has the maximum number of commands in flight."""

    def __init__(self, node_id: str, limit: int) -> None:
        """Keep node and limit for the caller's (translated) error."""
        super().__init__(f"node {node_id!r} already has {limit} commands pending")
        self.node_id = node_id
        self.limit = limit


class CommandRefused(ValueError):
    """A command no node could take, refused before anything is sent or queued.

    `key` and `placeholders` are what the glue needs for a translated error.
    """

    def __init__(self, key: str, message: str, **placeholders: str) -> None:
        """Keep the translation key and placeholders next to the message."""
        super().__init__(message)
        self.key = key
        self.placeholders = placeholders


class CommandTooLarge(CommandRefused):
    """The command's JSON is longer than a node accepts (MAX_COMMAND_BYTES)."""

    def __init__(self, size: int, limit: int = MAX_COMMAND_BYTES) -> None:
        """Keep the sizes for the caller's (translated) error."""
        super().__init__(
            "command_too_large",
            f"command of {size} bytes exceeds the node's limit of {limit} bytes",
            size=str(size),
            limit=str(limit),
        )
        self.size = size
        self.limit = limit


@dataclass(slots=True)
class CommandStats:
    """Counters of one home since start: sent = confirmed + failed + in flight + cancelled."""

    sent: int = 0  # commands (not attempts) that went out
    confirmed: int = 0  # the node answered success
    failed: int = 0  # error, expired, invalid answer, or no answer at all


# What a pending future resolves to: (arrival wall time, answer payload, why the answer is
# invalid or None), or None on cancel_all.
type _Answer = tuple[float, dict[str, Any], str | None] | None

# A placeholder as long as the request ids we generate (uuid4 hex), for size checks.
_REQUEST_ID_PLACEHOLDER: Final = "0" * 32


@dataclass(slots=True, eq=False)
class _Pending:
    """One command in flight, created right before its first publish."""

    request_id: str
    node_id: str
    command: str
    action: str
    created: float
    future: asyncio.Future[_Answer]
    attempts: int = 0


def _check_timing(timeout: float, retries: int) -> None:
    if not timeout > 0 or not math.isfinite(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")


def _iso_utc(ts: float) -> str:
    """docs/protocol.md timestamp format; whole seconds keep MicroPython parsing trivial."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_ttl(params: Mapping[str, Any]) -> None:
    """A caller's `ttl` must be a number of seconds the firmware accepts (docs/protocol.md)."""
    if "ttl" not in params:
        return
    ttl = params["ttl"]
    valid = isinstance(ttl, int | float) and not isinstance(ttl, bool)
    if not valid or not MIN_COMMAND_TTL <= ttl <= MAX_COMMAND_TTL:  # NaN compares False
        raise CommandRefused(
            "invalid_ttl",
            f"ttl must be {MIN_COMMAND_TTL}..{MAX_COMMAND_TTL} seconds, got {ttl!r}",
            ttl=repr(ttl),
            min=str(MIN_COMMAND_TTL),
            max=str(MAX_COMMAND_TTL),
        )


def _encode(content: Mapping[str, Any]) -> str:
    """The command's JSON; CommandRefused for params JSON cannot carry."""
    try:
        return json.dumps(content, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CommandRefused(
            "invalid_params", f"params are not JSON: {err}", error=str(err)
        ) from err


def _check_size(payload: str) -> None:
    size = len(payload.encode())
    if size > MAX_COMMAND_BYTES:
        raise CommandTooLarge(size)


def _text(value: Any) -> str | None:
    """Normalise a free-form answer field to text (the schema says string, be lenient)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


async def _wait(future: asyncio.Future[Any], delay: float) -> bool:
    """Wait up to `delay` seconds for `future`; True when it is done.

    `asyncio.wait` uses one loop timer and never cancels or consumes the future, so the same
    future can be waited on across every attempt and backoff of a command.
    """
    if not future.done():
        await asyncio.wait((future,), timeout=delay)
    return future.done()


class CommandManager:
    """Send commands to nodes of one home and match their answers by request id."""

    def __init__(
        self,
        home_id: str,
        publish: Publish,
        *,
        clock: Clock,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_pending: int = 16,
        command_ttl: int = 30,
        new_request_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """Create a manager; nothing is scheduled until `send`.

        `on_change` runs (synchronously) whenever `stats` or `in_flight` changed.
        """
        if not is_valid_id(home_id):
            raise ProtocolError("bad_id", f"invalid home id {home_id!r}")
        _check_timing(timeout, retries)
        if backoff < 0 or max_pending < 1 or command_ttl < 1:
            raise ValueError("backoff must be >= 0, max_pending and command_ttl >= 1")
        self._home_id = home_id
        self._publish = publish
        self._clock = clock
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_pending = max_pending
        self._command_ttl = command_ttl
        self._new_request_id = new_request_id
        self._on_change = on_change
        # request_id → command; exactly one waiter (the send() that created it) per id.
        self._pending: dict[str, _Pending] = {}
        self.stats = CommandStats()

    @property
    def in_flight(self) -> int:
        """Commands sent and waiting for their confirmation."""
        return len(self._pending)

    def _payload(self, action: str, request_id: str, now: float, params: Mapping[str, Any]) -> str:
        return _encode(
            {
                "action": action,
                "request_id": request_id,
                "timestamp": _iso_utc(now),
                "ttl": self._command_ttl,
                **params,
            }
        )

    def check(self, action: str, params: Mapping[str, Any]) -> None:
        """Raise CommandRefused for what `send` would refuse (ttl, JSON, size), sending nothing.

        For callers that queue a command for later: it is sized with a request id as long as
        the ones `send` generates.
        """
        check_ttl(params)
        _check_size(self._payload(action, _REQUEST_ID_PLACEHOLDER, self._clock(), params))

    async def send(
        self,
        node_id: str,
        command: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> CommandResult:
        """Publish a command and wait for the node's answer, retrying on silence.

        Every attempt republishes the identical payload (same request_id and timestamp): the
        node answers a duplicate from its cache instead of executing twice, and its TTL check
        bounds how long after the user's request the command can still take effect.
        """
        timeout = self._timeout if timeout is None else timeout
        retries = self._retries if retries is None else retries
        _check_timing(timeout, retries)
        params = dict(params or {})
        if clash := RESERVED_KEYS & params.keys():
            raise ValueError(f"params may not set {sorted(clash)}")
        check_ttl(params)
        topic = build_topic(self._home_id, node_id, Category.COMMAND, command)
        in_flight = sum(1 for p in self._pending.values() if p.node_id == node_id)
        if in_flight >= self._max_pending:
            raise TooManyPending(node_id, self._max_pending)
        request_id = self._new_request_id()
        if request_id in self._pending:
            raise RuntimeError(f"request id {request_id!r} is already in flight")

        now = self._clock()
        payload = self._payload(action, request_id, now, params)
        _check_size(payload)  # a node cannot take more: refuse before anything goes out
        entry = _Pending(
            request_id,
            node_id,
            command,
            action,
            created=now,
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending[request_id] = entry
        self.stats.sent += 1
        self._on_change()
        try:
            publish_error = await self._attempts(entry, topic, payload, timeout, retries)
            result = self._result(entry, publish_error)
            if result.status is CommandStatus.SUCCESS:
                self.stats.confirmed += 1
            elif result.status is not CommandStatus.CANCELLED:
                self.stats.failed += 1
            return result
        finally:
            del self._pending[request_id]
            # Nobody else waits on the future; cancelling makes later answers inert.
            entry.future.cancel()
            self._on_change()

    async def _attempts(
        self, entry: _Pending, topic: str, payload: str, wait: float, retries: int
    ) -> Exception | None:
        """Run the attempts until answered; return the last publish error, if any."""
        publish_error: Exception | None = None
        for attempt in range(retries + 1):
            # The backoff also watches the future: an answer to an earlier attempt that
            # arrives after its timeout still counts, and saves a publish.
            if attempt and await _wait(entry.future, self._backoff * 2 ** (attempt - 1)):
                break
            entry.attempts += 1
            try:
                await self._publish(topic, payload)
            except Exception as err:  # any publish failure is just a failed attempt
                # Nothing went out, so there is nothing to wait for: go straight to backoff.
                publish_error = err
                _LOGGER.warning(
                    "Publishing %s/%s to %s failed (attempt %d): %s",
                    entry.command,
                    entry.action,
                    entry.node_id,
                    entry.attempts,
                    err,
                )
                continue
            publish_error = None
            if await _wait(entry.future, wait):
                break
            _LOGGER.debug(
                "No answer from %s to %s (attempt %d)",
                entry.node_id,
                entry.request_id,
                entry.attempts,
            )
        return publish_error

    def _result(self, entry: _Pending, publish_error: Exception | None) -> CommandResult:
        """Turn a finished wait into its result."""
        result: str | None = None
        error: str | None
        latency: float | None = None
        if not entry.future.done():
            status = CommandStatus.TIMEOUT
            error = f"no answer from {entry.node_id} after {entry.attempts} attempts"
            if publish_error is not None:
                error += f" (publish failed: {publish_error})"
        elif (answered := entry.future.result()) is None:
            status, error = CommandStatus.CANCELLED, "cancelled"
        else:
            received_at, answer, invalid = answered
            raw = answer.get("status")
            # An unknown status is still the node answering: report it, retrying won't help.
            status = CommandStatus.ERROR
            if invalid is not None:
                status, error = CommandStatus.INVALID, invalid
            else:
                if isinstance(raw, str):
                    status = _ANSWERS.get(raw, CommandStatus.ERROR)
                result = _text(answer.get("result"))
                error = _text(answer.get("error"))
                if status is not CommandStatus.SUCCESS and error is None:
                    error = f"node answered {raw!r}"
            # `created` is taken right before the first publish; clamp against clock steps.
            latency = max(0.0, (received_at - entry.created) * 1000.0)
        return CommandResult(
            request_id=entry.request_id,
            node_id=entry.node_id,
            command=entry.command,
            action=entry.action,
            status=status,
            result=result,
            error=error,
            attempts=entry.attempts,
            latency_ms=latency,
        )

    def handle_response(self, node_id: str, payload: Mapping[str, Any]) -> bool:
        """Resolve the command this answer belongs to; True if one was waiting for it."""
        entry = self._waiting(node_id, payload)
        if entry is None:
            return False
        entry.future.set_result((self._clock(), dict(payload), None))
        return True

    def handle_invalid_response(
        self, node_id: str, payload: Mapping[str, Any], reason: str
    ) -> bool:
        """An answer the schema rejects (`reason`): end its command at once as INVALID.

        The node did answer, so retrying would only repeat the bad answer, and "no answer"
        would be untrue. True if a command was waiting for it (then the reason is logged).
        """
        entry = self._waiting(node_id, payload)
        if entry is None:
            return False
        _LOGGER.warning(
            "Node %s answered %s/%s (request %s) with an invalid response: %s",
            node_id,
            entry.command,
            entry.action,
            entry.request_id,
            reason,
        )
        entry.future.set_result((self._clock(), {}, reason))
        return True

    def _waiting(self, node_id: str, payload: Mapping[str, Any]) -> _Pending | None:
        """The command still waiting for this answer, if any."""
        data: object = payload  # a bad payload must never raise here
        if not isinstance(data, Mapping):
            _LOGGER.debug("Ignoring non-object response from %s", node_id)
            return None
        request_id = data.get("request_id")
        if not isinstance(request_id, str):
            _LOGGER.debug("Ignoring response from %s without request_id", node_id)
            return None
        entry = self._pending.get(request_id)
        if entry is None or entry.node_id != node_id:
            # Late (after the sender gave up), unknown, or another node's id: the relay state
            # still follows status/relay, so dropping the answer loses nothing.
            _LOGGER.debug("Ignoring late or unknown response %s from %s", request_id, node_id)
            return None
        if entry.future.done():
            _LOGGER.debug("Ignoring duplicate response %s from %s", request_id, node_id)
            return None
        return entry

    def pending(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """Commands in flight, oldest first (diagnostics)."""
        now = self._clock()
        return [
            {
                "request_id": p.request_id,
                "node": p.node_id,
                "command": p.command,
                "action": p.action,
                "attempts": p.attempts,
                "age": round(max(0.0, now - p.created), 3),
            }
            for p in self._pending.values()
            if node_id is None or p.node_id == node_id
        ]

    def cancel_all(self) -> None:
        """Wake every waiting `send` with CANCELLED (unload); each cleans up after itself."""
        for entry in self._pending.values():
            if not entry.future.done():
                entry.future.set_result(None)


@dataclass(frozen=True, slots=True)
class QueuedIntent:
    """A command wanted for a node that is offline (the "desired" side of a device shadow)."""

    node_id: str
    command: str
    action: str
    params: dict[str, Any] = field(hash=False)
    queued_at: float
    expires_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able view, for storage and diagnostics."""
        return {
            "node_id": self.node_id,
            "command": self.command,
            "action": self.action,
            "params": copy.deepcopy(self.params),
            "queued_at": self.queued_at,
            "expires_at": self.expires_at,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _check_params_size(params: Mapping[str, Any]) -> None:
    """Params longer than a whole command cannot be sent: keep them out of the store."""
    _check_size(_encode(params))


def _intent_from(data: Any) -> QueuedIntent | None:
    """Parse one stored intent; None for anything malformed (storage may be hand-edited)."""
    if not isinstance(data, Mapping):
        return None
    node_id, command, action = data.get("node_id"), data.get("command"), data.get("action")
    params = data.get("params", {})
    queued_at, expires_at = _number(data.get("queued_at")), _number(data.get("expires_at"))
    if not (isinstance(node_id, str) and isinstance(command, str) and isinstance(action, str)):
        return None
    if not (node_id and command and action and isinstance(params, Mapping)):
        return None
    if queued_at is None or expires_at is None:
        return None
    try:
        _check_params_size(params)
    except CommandRefused:
        return None  # a node could never take it (an older version stored it, or a hand edit)
    return QueuedIntent(
        node_id, command, action, copy.deepcopy(dict(params)), queued_at, expires_at
    )


class IntentQueue:
    """Last intent per (node, command) wins; intents expire after a TTL.

    See docs/architecture.md §6 (offline queue).
    """

    def __init__(self, *, clock: Clock, default_ttl: float = 3600.0) -> None:
        """Create an empty queue."""
        if not default_ttl > 0:
            raise ValueError("default_ttl must be positive")
        self._clock = clock
        self._default_ttl = default_ttl
        # Insertion order is queue order: a replaced intent moves to the back.
        self._intents: dict[tuple[str, str], QueuedIntent] = {}

    def __len__(self) -> int:
        """Number of queued intents, expired ones included until `expire`."""
        return len(self._intents)

    def put(
        self,
        node_id: str,
        command: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> QueuedIntent:
        """Queue an intent, replacing an earlier one for the same node and command."""
        ttl = self._default_ttl if ttl is None else ttl
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        _check_params_size(params or {})  # bounds what the store holds per intent
        now = self._clock()
        intent = QueuedIntent(
            node_id, command, action, copy.deepcopy(dict(params or {})), now, now + ttl
        )
        self._intents.pop((node_id, command), None)
        self._intents[(node_id, command)] = intent
        return intent

    def take(self, node_id: str) -> list[QueuedIntent]:
        """Remove and return the node's live intents; expired ones are left for `expire`."""
        now = self._clock()
        taken = [
            intent
            for intent in self._intents.values()
            if intent.node_id == node_id and intent.expires_at > now
        ]
        for intent in taken:
            del self._intents[(intent.node_id, intent.command)]
        return taken

    def expire(self) -> list[QueuedIntent]:
        """Remove and return every intent whose TTL has run out."""
        now = self._clock()
        expired = [intent for intent in self._intents.values() if intent.expires_at <= now]
        for intent in expired:
            del self._intents[(intent.node_id, intent.command)]
        return expired

    def next_expiry(self) -> float | None:
        """When the next intent expires (to schedule one timer), or None when empty."""
        return min((i.expires_at for i in self._intents.values()), default=None)

    def pending(self, node_id: str | None = None) -> list[QueuedIntent]:
        """Queued intents, optionally of one node, in queue order."""
        return [i for i in self._intents.values() if node_id is None or i.node_id == node_id]

    def forget(self, node_id: str) -> None:
        """Drop everything queued for a node (the node was removed)."""
        for key in [key for key in self._intents if key[0] == node_id]:
            del self._intents[key]

    def export(self) -> list[dict[str, Any]]:
        """JSON-serialisable snapshot for `helpers.storage.Store`."""
        return [intent.as_dict() for intent in self._intents.values()]

    def restore(self, data: Iterable[Mapping[str, Any]]) -> None:
        """Load a snapshot, skipping malformed entries; a newer queued intent is kept."""
        items: object = data
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            _LOGGER.warning("Ignoring stored command queue: not a list")
            return
        skipped = 0
        for item in items:
            intent = _intent_from(item)
            if intent is None:
                skipped += 1
                continue
            key = (intent.node_id, intent.command)
            current = self._intents.get(key)
            if current is not None and current.queued_at > intent.queued_at:
                continue
            self._intents.pop(key, None)
            self._intents[key] = intent
        if skipped:
            _LOGGER.warning("Skipped %d malformed queued command(s) from storage", skipped)
