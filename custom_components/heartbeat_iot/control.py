"""Commands, confirmations and the offline queue of a home (docs/architecture.md §6): the HA glue.

`homesync/commands.py` holds the logic (request ids, retries, the intent queue); this module
wires it to Home Assistant: MQTT publishing, translated errors (the one place HA errors are
raised for commands), bus events and the expiry timer. It gets the narrow things it needs
(availability and naming callables, the outputs owner, the update registry), never the hub.
Confirmed relay / LED states go to outputs.NodeOutputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
import logging
import math
from typing import Any, Final, NoReturn

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.event import async_track_point_in_utc_time
from homeassistant.util import dt as dt_util

from .const import (
    DOMAIN,
    EVENT_COMMAND_COMPLETED,
    EVENT_COMMAND_FAILED,
    KEY_LAST_SEEN,
    KEY_QUEUED_INTENTS,
)
from .homesync.clock import Clock
from .homesync.commands import (
    RESERVED_KEYS,
    CommandManager,
    CommandRefused,
    CommandResult,
    CommandStatus,
    IntentQueue,
    QueuedIntent,
    TooManyPending,
)
from .homesync.protocol import COMMAND_ACTIONS
from .outputs import NodeOutputs
from .updates import Updates

_LOGGER = logging.getLogger(__package__)

# Command names. Confirmed answers update outputs.NodeOutputs (the relay also by status/relay).
RELAY: Final = "relay"
LED: Final = "led"
CONFIG: Final = "config"

# What Home Assistant lets a user send (OTA needs its own flow: URL, version, hash).
ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    command: COMMAND_ACTIONS[command] for command in (RELAY, LED, CONFIG)
}
STATES: Final = ("on", "off")
DEFAULT_QUEUE_TTL: Final = 3600.0

# Why a command failed, in events and translated errors.
REASON_EXPIRED: Final = "expired"
_ERROR_KEYS: Final = {
    CommandStatus.TIMEOUT: "command_timeout",
    CommandStatus.ERROR: "command_rejected",
    CommandStatus.EXPIRED: "command_expired",
    CommandStatus.CANCELLED: "command_cancelled",
    CommandStatus.INVALID: "command_invalid_answer",
}

# Who asked: the switch entities, the send_command action, or the offline queue.
SOURCE_SWITCH: Final = "switch"
SOURCE_SERVICE: Final = "service"
SOURCE_QUEUE: Final = "queue"

type Spawn = Callable[[Coroutine[Any, Any, None], str], object]
"""Start a background task of the entry (name second)."""


def _iso(ts: float) -> str:
    return dt_util.utc_from_timestamp(ts).isoformat()


def validate_command(command: str, action: str, params: Mapping[str, Any]) -> None:
    """Refuse what no node would accept, before anything is sent or queued."""
    allowed = ACTIONS.get(command)
    if allowed is None or action not in allowed:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="invalid_action",
            translation_placeholders={
                "command": command,
                "action": action,
                "actions": ", ".join(allowed or ()),
            },
        )
    if clash := sorted(RESERVED_KEYS & params.keys()):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="reserved_params",
            translation_placeholders={"keys": ", ".join(clash)},
        )
    if command == CONFIG:
        values = params.get("config")
        if not isinstance(values, Mapping) or not values:
            raise ServiceValidationError(
                translation_domain=DOMAIN, translation_key="config_params_required"
            )


class NodeControl:
    """Owns the CommandManager and IntentQueue of one home."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        home_id: str,
        timeout: float,
        retries: int,
        clock: Clock,
        updates: Updates,
        outputs: NodeOutputs,
        is_online: Callable[[str], bool],
        node_name: Callable[[str], str],
        device_id: Callable[[str], str | None],
        schedule_save: Callable[[], None],
        spawn: Spawn,
        stats_changed: Callable[[], None] = lambda: None,
    ) -> None:
        """Timeout and retries come from the entry options (an options change reloads)."""
        self.hass = hass
        self._home_id = home_id
        self._updates = updates
        self._outputs = outputs
        self._is_online = is_online
        self.node_name = node_name
        self._device_id = device_id
        self._schedule_save = schedule_save
        self._spawn = spawn
        # Command counters, pending commands or the queue changed (the home's statistics).
        self._stats_changed = stats_changed
        self.manager = CommandManager(
            home_id,
            self._publish,
            clock=clock,
            timeout=timeout,
            retries=retries,
            on_change=stats_changed,
        )
        # Queued intents that failed without being sent (expired, refused at delivery).
        self.intents_failed = 0
        # Nodes whose queued-intents sensor may show a non-zero count.
        self._queued_nodes: set[str] = set()
        self.queue = IntentQueue(clock=clock, default_ttl=DEFAULT_QUEUE_TTL)
        # Queued intents taken for delivery and not finished yet (persisted with the queue,
        # so a restart in the middle of a delivery does not lose them).
        self._in_flight: dict[int, QueuedIntent] = {}
        # Nodes with queued intents: a listener on their live messages sends the queue as soon
        # as they are online (covers a restart or a broker outage, where no transition happens).
        self._watching: dict[str, CALLBACK_TYPE] = {}
        self._expiry_unsub: CALLBACK_TYPE | None = None
        self._expiry_due: float | None = None
        self._stopped = False

    async def _publish(self, topic: str, payload: str) -> None:
        await mqtt.async_publish(self.hass, topic, payload, qos=1, retain=False)

    @callback
    def _apply_success(self, result: CommandResult) -> None:
        """A confirmed command changes what the switches show."""
        node_id = result.node_id
        if result.command == RELAY:
            # The node's answer is the truth (a toggle's outcome is only known from it).
            state = result.result if result.result in STATES else None
            if state is None and result.action in STATES:
                state = result.action
            if state is not None:
                self._outputs.async_set_relay(node_id, state)
        elif result.command == LED:
            allowed = ACTIONS[LED]
            mode = result.result if result.result in allowed else result.action
            if mode in allowed:
                self._outputs.async_set_led(node_id, mode)

    # --- sending --------------------------------------------------------------------------

    def _offline_error(self, node_id: str) -> ServiceValidationError:
        return ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="node_offline",
            translation_placeholders={"node": self.node_name(node_id)},
        )

    def _raise_for(self, result: CommandResult) -> NoReturn:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=_ERROR_KEYS[result.status],
            translation_placeholders={
                "node": self.node_name(result.node_id),
                "command": result.command,
                "action": result.action,
                "attempts": str(result.attempts),
                "error": result.error or "",
            },
        )

    async def async_command(
        self,
        node_id: str,
        command: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        source: str = SOURCE_SWITCH,
    ) -> CommandResult:
        """Send now and wait for the node; raise a translated error unless it confirmed."""
        if not self._is_online(node_id):
            raise self._offline_error(node_id)
        try:
            result = await self.manager.send(
                node_id, command, action, params, timeout=timeout, retries=retries
            )
        except TooManyPending as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="too_many_pending",
                translation_placeholders={
                    "node": self.node_name(node_id),
                    "limit": str(err.limit),
                },
            ) from err
        self._finished(result, source)
        if result.status is not CommandStatus.SUCCESS:
            self._raise_for(result)
        return result

    async def async_request(
        self,
        node_id: str,
        command: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        queue: bool = False,
        queue_ttl: float | None = None,
    ) -> dict[str, Any]:
        """The send_command action: send now, or queue for an offline node when asked to."""
        params = dict(params or {})
        validate_command(command, action, params)
        try:
            # Too large for a node, a bad ttl, not JSON: refused before sending or queueing.
            self.manager.check(action, params)
        except CommandRefused as err:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key=err.key,
                translation_placeholders=err.placeholders,
            ) from err
        if self._is_online(node_id) or not queue:
            result = await self.async_command(
                node_id,
                command,
                action,
                params,
                timeout=timeout,
                retries=retries,
                source=SOURCE_SERVICE,
            )
            return result.as_dict()
        if action == "toggle":
            # A device shadow stores a desired state; "flip whatever it is then" is not one.
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="toggle_not_queueable",
                translation_placeholders={"node": self.node_name(node_id)},
            )
        intent = self.queue.put(node_id, command, action, params, ttl=queue_ttl)
        _LOGGER.debug("Queued %s/%s for offline node %s", command, action, node_id)
        self._queue_changed()
        return {
            "request_id": None,
            "status": "queued",
            "result": None,
            "error": None,
            "attempts": 0,
            "latency_ms": None,
            "expires_at": _iso(intent.expires_at),
        }

    # --- outcome events -------------------------------------------------------------------

    def _event_data(self, node_id: str, command: str, action: str, source: str) -> dict[str, Any]:
        return {
            "device_id": self._device_id(node_id),
            "home_id": self._home_id,
            "node_id": node_id,
            "command": command,
            "action": action,
            "source": source,
        }

    @callback
    def _finished(self, result: CommandResult, source: str) -> None:
        """Apply a success; announce a failure (any source) on the bus."""
        if result.status is CommandStatus.SUCCESS:
            self._apply_success(result)
            if source == SOURCE_QUEUE:
                # Nobody waits on a queued intent: the event is how its result is reported.
                self.hass.bus.async_fire(
                    EVENT_COMMAND_COMPLETED,
                    {
                        **self._event_data(result.node_id, result.command, result.action, source),
                        **result.as_dict(),
                    },
                )
            return
        if result.status is CommandStatus.CANCELLED:
            return  # unloading: not the node's failure, and the caller gets an error anyway
        _LOGGER.debug("Command %s to %s failed: %s", result.request_id, result.node_id, result)
        self.hass.bus.async_fire(
            EVENT_COMMAND_FAILED,
            {
                **self._event_data(result.node_id, result.command, result.action, source),
                **result.as_dict(),
                "reason": result.status.value,
            },
        )

    # --- offline queue --------------------------------------------------------------------

    @callback
    def _queue_changed(self, *, save: bool = True) -> None:
        """Watch nodes with intents, re-arm the expiry timer, persist, update the counts."""
        queued = {intent.node_id for intent in self.queue.pending()}
        for node_id in queued | self._queued_nodes:
            self._updates.async_notify(node_id, KEY_QUEUED_INTENTS)
        self._queued_nodes = queued
        self._stats_changed()
        for node_id in queued:
            if node_id not in self._watching:
                self._watching[node_id] = self._updates.async_listen(
                    node_id, KEY_LAST_SEEN, self._live_message_callback(node_id)
                )
        self._arm_expiry()
        if save:
            self._schedule_save()

    def _live_message_callback(self, node_id: str) -> CALLBACK_TYPE:
        @callback
        def _on_live_message() -> None:
            # Runs per live message of a node that had intents: a scan of the (tiny) queue.
            if self.queue.pending(node_id):
                self._flush(node_id)

        return _on_live_message

    def node_online(self, node_id: str) -> None:
        """The node just became online: send its queued intents."""
        self._flush(node_id)

    @callback
    def _flush(self, node_id: str) -> None:
        if self._stopped or not self._is_online(node_id):
            return
        intents = self.queue.take(node_id)
        if not intents:
            return
        for intent in intents:
            self._in_flight[id(intent)] = intent
            self._spawn(
                self._deliver(intent),
                f"{DOMAIN} deliver {intent.command}/{intent.action} to {node_id}",
            )
        self._queue_changed()

    async def _deliver(self, intent: QueuedIntent) -> None:
        """Send one queued intent; its result is reported by a bus event."""
        try:
            result = await self.manager.send(
                intent.node_id, intent.command, intent.action, intent.params
            )
        except asyncio.CancelledError:
            # HA is stopping: keep the intent for the next start (if `stop` did not already).
            if self._in_flight.pop(id(intent), None) is not None:
                self.queue.restore([intent.as_dict()])
                self._schedule_save()
            raise
        except (TooManyPending, ValueError) as err:
            if self._in_flight.pop(id(intent), None) is None:
                return
            self._intent_failed(intent, "error", str(err))
            self._schedule_save()
            return
        if self._in_flight.pop(id(intent), None) is None:
            return  # stopped meanwhile: the intent went back into the persisted queue
        self._finished(result, SOURCE_QUEUE)
        self._schedule_save()

    @callback
    def _intent_failed(self, intent: QueuedIntent, reason: str, error: str) -> None:
        """A queued intent that never got an answer (expired, or could not be sent)."""
        self.intents_failed += 1
        self._stats_changed()
        self.hass.bus.async_fire(
            EVENT_COMMAND_FAILED,
            {
                **self._event_data(intent.node_id, intent.command, intent.action, SOURCE_QUEUE),
                "request_id": None,
                "status": reason,
                "result": None,
                "error": error,
                "attempts": 0,
                "latency_ms": None,
                "reason": reason,
            },
        )

    @callback
    def _arm_expiry(self) -> None:
        """Keep ONE timer at the earliest expiry of the queue."""
        due = self.queue.next_expiry()
        if due == self._expiry_due:
            return
        self._cancel_expiry()
        if due is None or self._stopped:
            return
        self._expiry_due = due
        # Whole milliseconds plus one, so the timer never fires a hair before the expiry.
        fire_at = math.floor(due * 1000) / 1000 + 0.001
        self._expiry_unsub = async_track_point_in_utc_time(
            self.hass, self._on_expiry, dt_util.utc_from_timestamp(fire_at)
        )

    def _cancel_expiry(self) -> None:
        if self._expiry_unsub is not None:
            self._expiry_unsub()
        self._expiry_unsub = None
        self._expiry_due = None

    @callback
    def _on_expiry(self, _now: datetime) -> None:
        self._expiry_unsub = None
        self._expiry_due = None
        for intent in self.queue.expire():
            _LOGGER.info(
                "Queued %s/%s for %s expired: the node did not come online in time",
                intent.command,
                intent.action,
                intent.node_id,
            )
            ttl = round(intent.expires_at - intent.queued_at)
            self._intent_failed(
                intent, REASON_EXPIRED, f"queued for {ttl} s without the node coming online"
            )
        self._queue_changed()

    # --- lifecycle ----------------------------------------------------

    def handle_response(self, node_id: str, data: dict[str, Any]) -> None:
        """A validated, live response/command from the node."""
        self.manager.handle_response(node_id, data)

    def queued(self, node_id: str | None = None) -> int:
        """Intents waiting in the offline queue (of one node, or of the whole home)."""
        return len(self.queue) if node_id is None else len(self.queue.pending(node_id))

    def handle_invalid_response(self, node_id: str, payload: dict[str, Any], reason: str) -> bool:
        """A live response/command the schema rejects; True when it ended a waiting command."""
        return self.manager.handle_invalid_response(node_id, payload, reason)

    def forget(self, node_id: str) -> None:
        """The node was removed: drop its queue and watch."""
        self.queue.forget(node_id)
        for key, intent in list(self._in_flight.items()):
            if intent.node_id == node_id:
                del self._in_flight[key]
        if (unsub := self._watching.pop(node_id, None)) is not None:
            unsub()
        self._queue_changed()

    def stop(self) -> None:
        """Unload: cancel everything in flight; queued intents stay for the next start."""
        self._stopped = True
        self._cancel_expiry()
        while self._watching:
            self._watching.popitem()[1]()
        # Deliveries cut short go back into the queue, which the unload persists next.
        self.queue.restore([intent.as_dict() for intent in self._in_flight.values()])
        self._in_flight.clear()
        # Every waiting send returns CANCELLED at once: switches and actions raise, tasks end.
        self.manager.cancel_all()

    def export(self) -> Any:
        """JSON-able state to persist: the offline queue, deliveries in progress included."""
        return self.queue.export() + [intent.as_dict() for intent in self._in_flight.values()]

    def restore(self, data: Any) -> None:
        """Restore persisted state; tolerate garbage."""
        if data is None:
            return
        self.queue.restore(data)
        if len(self.queue):
            self._queue_changed(save=False)

    def diagnostics(self) -> dict[str, Any]:
        """Commands in flight, the offline queue and the confirmed LED modes."""
        return {
            "pending": self.manager.pending(),
            "queue": [
                {
                    **intent.as_dict(),
                    "queued_at": _iso(intent.queued_at),
                    "expires_at": _iso(intent.expires_at),
                }
                for intent in self.queue.pending()
            ],
            "delivering": [
                {"node_id": intent.node_id, "command": intent.command, "action": intent.action}
                for intent in self._in_flight.values()
            ],
            "led": self._outputs.led_modes(),
        }
