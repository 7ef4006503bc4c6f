"""The hub announcement: tell the nodes we are (back), so they re-publish their state live.

Retained messages are an optimisation, never a dependency (docs/protocol.md, "Hub
announcement"): after the entry starts and after every reconnect of Home Assistant's MQTT link we
publish ``{"online": true}`` on ``homesync/{home}/hub/status`` and every node answers with its
birth, relay, LED, firmware and rssi, live.

The answers are only worth something once our own subscriptions are live, and Home Assistant's
MQTT client sends SUBSCRIBE packets after a cooldown (0.1 s, 0.5 s after a reconnect, later while
HA starts), whereas a publish goes out at once. A node that answers quickly (its random spread
can be 0) would answer into the void, and on a broker that delivers no retained messages to
wildcard subscriptions (RabbitMQ) its firmware version would stay unknown until the next
reconnect. So we also subscribe to our own announcement topic: hearing an announcement there
proves our subscriptions are live (HA's client subscribes wildcard topics, our
``nodes/#``, before plain ones in the same pass, each acknowledged before the next), so the
nodes' answers to it reach us. Until we hear one we announce again, a bounded number of times (a
broker ACL may deny us reading the topic: then the retries stop, and heartbeats still carry relay
and LED).
"""

from __future__ import annotations

from datetime import datetime
import logging
from typing import Final

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_call_later

from .homesync.protocol import HUB_ONLINE_PAYLOAD, hub_status_topic

_LOGGER = logging.getLogger(__package__)

# How long to wait for our own announcement to come back before announcing again, and how many
# times to announce again: 2 s is beyond HA's subscribe cooldowns plus a broker's round trip.
ECHO_WAIT_S: Final = 2.0
MAX_REPEATS: Final = 3


class HubAnnouncement:
    """Announce the hub to the nodes of one home until the announcement is heard back."""

    def __init__(self, hass: HomeAssistant, home_id: str) -> None:
        """Nothing is subscribed or published before :meth:`async_start`."""
        self.hass = hass
        self.home_id = home_id
        self._topic = hub_status_topic(home_id)
        self._unsubscribe: list[CALLBACK_TYPE] = []
        self._retry: CALLBACK_TYPE | None = None
        self._repeats_left = 0

    async def async_start(self) -> None:
        """Subscribe to our own announcement topic; announce now and after every reconnect."""
        self._unsubscribe.append(
            await mqtt.async_subscribe(self.hass, self._topic, self._async_heard, qos=1)
        )
        self._unsubscribe.append(
            mqtt.async_subscribe_connection_status(self.hass, self._async_on_connection)
        )
        if mqtt.is_connected(self.hass):
            self.announce()

    @callback
    def async_stop(self) -> None:
        """Unsubscribe; no announcement is pending after this."""
        self._cancel_retry()
        while self._unsubscribe:
            self._unsubscribe.pop()()

    @callback
    def announce(self) -> None:
        """Announce now, and again while the announcement is not heard back (bounded)."""
        self._repeats_left = MAX_REPEATS
        self._publish()

    @callback
    def _async_on_connection(self, connected: bool) -> None:
        if connected:
            self.announce()
        else:
            self._cancel_retry()  # the next connect announces afresh

    @callback
    def _async_heard(self, msg: mqtt.ReceiveMessage) -> None:
        """An announcement on our topic: our subscriptions are live, the nodes' answers reach us.

        A retained one proves nothing (the broker replays it at subscribe time).
        """
        if not msg.retain:
            self._cancel_retry()

    @callback
    def _publish(self) -> None:
        self._cancel_retry()
        self.hass.async_create_background_task(
            self._async_publish(), f"heartbeat_iot announce {self.home_id}"
        )
        self._retry = async_call_later(self.hass, ECHO_WAIT_S, self._async_not_heard)

    @callback
    def _async_not_heard(self, _now: datetime) -> None:
        self._retry = None
        if self._repeats_left <= 0 or not mqtt.is_connected(self.hass):
            _LOGGER.debug(
                "Home %s: our announcement on %s was not heard back; nodes that answered it "
                "early may not have been heard (heartbeats still carry relay and LED)",
                self.home_id,
                self._topic,
            )
            return
        self._repeats_left -= 1
        self._publish()

    async def _async_publish(self) -> None:
        try:
            await mqtt.async_publish(self.hass, self._topic, HUB_ONLINE_PAYLOAD, qos=1)
        except HomeAssistantError as err:  # the link dropped again: the next connect retries
            _LOGGER.debug("Could not announce home %s: %s", self.home_id, err)

    @callback
    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry()
            self._retry = None
