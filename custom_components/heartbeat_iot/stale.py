"""Stale nodes: a node silent for longer than the configured period gets a fixable repair issue.

HA's `stale-devices` rule: a device that is gone for good should not linger. We cannot know a
node is gone (it may be unplugged for the holidays), so after `stale_after` seconds of silence
(option, default 7 days) a repair issue offers to remove it (repairs.py); it disappears again as
soon as the node is heard. Checked at start and hourly: silence of days needs no finer clock.
See docs/architecture.md (devices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.event import async_track_time_interval

from .const import DOMAIN, ISSUE_STALE_NODE
from .homesync.clock import Clock

CHECK_INTERVAL: Final = timedelta(hours=1)
DAY: Final = 86400.0


def stale_issue_id(entry_id: str, node_id: str) -> str:
    """Repair issue id of one node of one entry."""
    return f"{ISSUE_STALE_NODE}_{entry_id}_{node_id}"


class StaleNodeMonitor:
    """Raises and clears the stale-node repair issues of one home."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        entry_id: str,
        stale_after: float,
        clock: Clock,
        known_nodes: Callable[[], Iterable[str]],
        last_seen: Callable[[str], float | None],
        node_name: Callable[[str], str],
    ) -> None:
        """`last_seen` is the node's last live message (None: nothing known yet)."""
        self.hass = hass
        self._entry_id = entry_id
        self._stale_after = stale_after
        self._clock = clock
        self._known_nodes = known_nodes
        self._last_seen = last_seen
        self._node_name = node_name
        self._raised: set[str] = set()
        self._unsub: CALLBACK_TYPE | None = None

    def is_stale(self, node_id: str) -> bool:
        """Silent for longer than the stale period."""
        seen = self._last_seen(node_id)
        return seen is not None and self._clock() - seen > self._stale_after

    @callback
    def async_start(self) -> None:
        """Check now (restored nodes may already be stale), then every hour."""
        self.async_check()
        self._unsub = async_track_time_interval(self.hass, self._async_on_interval, CHECK_INTERVAL)

    @callback
    def async_stop(self) -> None:
        """Stop checking (issues stay: they belong to the entry, not to this run)."""
        if self._unsub is not None:
            self._unsub()
            self._unsub = None

    @callback
    def _async_on_interval(self, _now: datetime) -> None:
        self.async_check()

    @callback
    def async_check(self) -> None:
        """Raise an issue for each newly stale node; clear it for nodes heard again."""
        for node_id in list(self._known_nodes()):
            if self.is_stale(node_id):
                self._raise(node_id)
            else:
                self.forget(node_id)

    def _raise(self, node_id: str) -> None:
        seen = self._last_seen(node_id)
        assert seen is not None
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            stale_issue_id(self._entry_id, node_id),
            is_fixable=True,
            is_persistent=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_STALE_NODE,
            translation_placeholders={
                "node": self._node_name(node_id),
                "days": str(int((self._clock() - seen) // DAY)),
            },
            data={"entry_id": self._entry_id, "node_id": node_id},
        )
        self._raised.add(node_id)

    @callback
    def forget(self, node_id: str) -> None:
        """The node was heard again or removed: its issue goes."""
        if node_id in self._raised:
            self._raised.discard(node_id)
            ir.async_delete_issue(self.hass, DOMAIN, stale_issue_id(self._entry_id, node_id))
