"""The statistics of one home: command and message counters, for sensors and diagnostics.

Cheap on the hot path: the hub bumps two integers per message (`MessageStats`); nothing is
written per message. The message numbers reach the sensors on a slow timer (STATS_INTERVAL, a
minute); command and queue numbers as they change (commands are rare). Each sensor writes only
when the value it shows changed. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.event import async_track_time_interval

from .const import (
    HUB,
    STAT_COMMANDS_CONFIRMED,
    STAT_COMMANDS_FAILED,
    STAT_COMMANDS_PENDING,
    STAT_COMMANDS_SENT,
    STAT_INTENTS_QUEUED,
    STAT_MESSAGES_PER_MINUTE,
    STAT_MESSAGES_REJECTED,
    STATS_INTERVAL,
)
from .control import NodeControl
from .homesync.clock import Clock
from .homesync.stats import MessageStats
from .updates import Updates

COMMAND_KEYS: Final = (
    STAT_COMMANDS_SENT,
    STAT_COMMANDS_CONFIRMED,
    STAT_COMMANDS_FAILED,
    STAT_COMMANDS_PENDING,
    STAT_INTENTS_QUEUED,
)
MESSAGE_KEYS: Final = (STAT_MESSAGES_PER_MINUTE, STAT_MESSAGES_REJECTED)


class HomeStatistics:
    """Reads the counters of the hub (messages) and of control (commands, queue)."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        messages: MessageStats,
        control: Callable[[], NodeControl],
        clock: Clock,
        updates: Updates,
    ) -> None:
        """Nothing runs until `async_start`."""
        self.hass = hass
        self.messages = messages
        self._control = control
        self._clock = clock
        self._updates = updates
        self._unsub: CALLBACK_TYPE | None = None
        # What the message sensors show: taken on the timer only, so that no write in between
        # (a status change re-rendering the sensor) can show a per-message number.
        self._shown_rate: float | None = None
        self._shown_rejected = 0

    def value(self, key: str) -> float | int | None:
        """The current value of one statistic (a sensor's state)."""
        if key == STAT_MESSAGES_PER_MINUTE:
            return self._shown_rate
        if key == STAT_MESSAGES_REJECTED:
            return self._shown_rejected
        control = self._control()
        stats = control.manager.stats
        if key == STAT_COMMANDS_SENT:
            return stats.sent
        if key == STAT_COMMANDS_CONFIRMED:
            return stats.confirmed
        if key == STAT_COMMANDS_FAILED:
            # One per heartbeat_iot_command_failed event: sent and not confirmed, or a queued
            # intent that expired (or was refused) without being sent.
            return stats.failed + control.intents_failed
        if key == STAT_COMMANDS_PENDING:
            return control.manager.in_flight
        if key == STAT_INTENTS_QUEUED:
            return control.queued()
        raise KeyError(key)

    def as_dict(self) -> dict[str, float | int | None]:
        """Everything, for diagnostics (message counters as of now, the rate as last sampled)."""
        return {
            **{key: self.value(key) for key in COMMAND_KEYS},
            "messages_received": self.messages.received,
            STAT_MESSAGES_REJECTED: self.messages.rejected,
            STAT_MESSAGES_PER_MINUTE: self._shown_rate,
        }

    @callback
    def async_start(self) -> None:
        """Sample the message counters every STATS_INTERVAL seconds."""
        self.messages.sample(self._clock())
        self._unsub = async_track_time_interval(
            self.hass, self._async_tick, timedelta(seconds=STATS_INTERVAL), cancel_on_shutdown=True
        )

    @callback
    def async_stop(self) -> None:
        """Stop the timer."""
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    @callback
    def _async_tick(self, _now: datetime) -> None:
        self.messages.sample(self._clock())
        rate = self.messages.per_minute()
        self._shown_rate = None if rate is None else round(rate, 1)
        self._shown_rejected = self.messages.rejected
        for key in MESSAGE_KEYS:
            self._updates.async_notify(HUB, key)

    @callback
    def async_commands_changed(self) -> None:
        """Command counters, pending commands or the queue changed."""
        for key in COMMAND_KEYS:
            self._updates.async_notify(HUB, key)
