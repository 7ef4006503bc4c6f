"""The hub announcement: tell the nodes we are (back), so they re-publish their state live.

Retained messages are an optimisation, never a dependency (docs/protocol.md, "Hub
announcement"): after the entry starts and after every reconnect of Home Assistant's MQTT link we
publish ``{"online": true}`` on ``homesync/{home}/hub/status`` and every node answers with its
birth, relay, LED, firmware and rssi, live.

The answers are only worth something once our own subscriptions are live, and Home Assistant's
MQTT client sends SUBSCRIBE packets after a cooldown (0.1 s, 0.5 s after a reconnect, later while
HA starts), whereas a publish goes out at once. A node that answered at once (its random spread
can be 0) would answer into the void, and on a broker that delivers no retained messages to
wildcard subscriptions (RabbitMQ) its firmware version would stay unknown until the next
reconnect. So we first probe: we subscribe to the announcement topic ourselves and publish
``{"probe": true}`` there, which nodes ignore, until we hear it back. Hearing it proves our
subscriptions are live (HA's client subscribes wildcard topics, our ``nodes/#``, before plain
ones in the same pass, each acknowledged before the next); then we announce, once, and every
answer reaches us. The probes are bounded: a broker ACL may deny us reading the topic, and then
we announce all the same (as before the probe existed; heartbeats still carry relay and LED).
"""

from __future__ import annotations

from datetime import datetime
import logging
from typing import Final

from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_call_later

from .homesync.protocol import HUB_ONLINE_PAYLOAD, HUB_PROBE_PAYLOAD, hub_status_topic

_LOGGER = logging.getLogger(__package__)

# How long to wait for a probe to come back before probing again, and how many probes at most:
# 1 s is beyond HA's subscribe cooldowns plus a broker's round trip; 5 of them cover a busy start.
PROBE_WAIT_S: Final = 1.0
MAX_PROBES: Final = 5


class HubAnnouncement:
    """Announce the hub to the nodes of one home once our subscriptions are live."""

    def __init__(self, hass: HomeAssistant, home_id: str) -> None:
        """Nothing is subscribed or published before :meth:`async_start`."""
        self.hass = hass
        self.home_id = home_id
        self._topic = hub_status_topic(home_id)
        self._unsubscribe: list[CALLBACK_TYPE] = []
        # Set while a probe awaits its echo: the announcement is still to come.
        self._retry: CALLBACK_TYPE | None = None
        self._probes_left = 0  # probes still to send in this round, after the one awaited

    async def async_start(self) -> None:
        """Subscribe to our own announcement topic; announce now and after every reconnect."""
        self._unsubscribe.append(
            await mqtt.async_subscribe(self.hass, self._topic, self._async_heard, qos=1)
        )
        self._unsubscribe.append(
            mqtt.async_subscribe_connection_status(self.hass, self._async_on_connection)
        )
        if mqtt.is_connected(self.hass):
            self._start_probing()

    @callback
    def async_stop(self) -> None:
        """Unsubscribe; nothing is pending after this."""
        self._stop_probing()
        while self._unsubscribe:
            self._unsubscribe.pop()()

    @callback
    def _async_on_connection(self, connected: bool) -> None:
        if connected:
            self._start_probing()
        else:
            self._stop_probing()  # the next connect starts afresh

    @callback
    def _start_probing(self) -> None:
        self._probes_left = MAX_PROBES
        self._probe()

    @callback
    def _probe(self) -> None:
        self._cancel_retry()
        self._probes_left -= 1
        self._publish(HUB_PROBE_PAYLOAD)
        self._retry = async_call_later(self.hass, PROBE_WAIT_S, self._async_not_heard)

    @callback
    def _async_heard(self, msg: mqtt.ReceiveMessage) -> None:
        """A message on our topic: our subscriptions are live, so announce now (once).

        A retained one proves nothing (the broker replays it at subscribe time).
        """
        if not msg.retain and self._retry is not None:
            self._stop_probing()
            self._publish(HUB_ONLINE_PAYLOAD)

    @callback
    def _async_not_heard(self, _now: datetime) -> None:
        self._retry = None
        if not mqtt.is_connected(self.hass):
            return  # the next connect starts afresh
        if self._probes_left > 0:
            self._probe()
            return
        _LOGGER.debug(
            "Home %s: our probe on %s was not heard back (may the broker's ACL let Home "
            "Assistant read it?); announcing anyway, early answers may be missed",
            self.home_id,
            self._topic,
        )
        self._publish(HUB_ONLINE_PAYLOAD)

    @callback
    def _publish(self, payload: str) -> None:
        self.hass.async_create_background_task(
            self._async_publish(payload), f"heartbeat_iot announce {self.home_id}"
        )

    async def _async_publish(self, payload: str) -> None:
        try:
            await mqtt.async_publish(self.hass, self._topic, payload, qos=1)
        except HomeAssistantError as err:  # the link dropped again: the next connect retries
            _LOGGER.debug("Could not announce home %s: %s", self.home_id, err)

    @callback
    def _stop_probing(self) -> None:
        self._probes_left = 0
        self._cancel_retry()

    @callback
    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry()
            self._retry = None
