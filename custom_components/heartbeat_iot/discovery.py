"""MQTT discovery of homes: one discovery flow per home, not one per node (issue 16 #9).

The manifest's `mqtt` topic (`homesync/+/nodes/+/status/online`) makes Home Assistant's MQTT
integration start a config flow for every message on a topic it has not seen with that payload:
one flow per node id, at every birth. A flood of births with invented node ids (5 000/s) started
tens of thousands of flows, each ~1 ms of event-loop time; Home Assistant fell behind, the broker
dropped what it could not deliver, and every live node went silent for longer than its timeout.

Home Assistant has no option for this, so once our integration runs (a config entry is set up,
or the first discovery flow reaches us) we replace that per-topic subscription by our own on the
same topic, which starts at most one flow per home id (none for a home that is configured or
ignored, at most MAX_HOMES_OFFERED per run) and costs a set lookup per message. Replacing it
touches one internal of the MQTT integration (`MqttData.integration_unsubscribe`), so it is
feature-detected: if the internal is missing or shaped differently, Home Assistant's own
discovery stays as it is and nothing fails. Our unsubscribe is stored in the internal's place,
so the MQTT integration removes it when it unloads (and creates its own again when it reloads;
we take over again at the next setup or flow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import logging

from homeassistant.components import mqtt
from homeassistant.config_entries import SOURCE_MQTT
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import discovery_flow
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN
from .homesync.protocol import DISCOVERY_TOPIC, is_valid_id
from .homesync.ratelimit import RateLimitedLogger

_LOGGER = logging.getLogger(__package__)

# Distinct home ids offered per Home Assistant run; more are logged (rate-limited) and ignored.
MAX_HOMES_OFFERED = 32
# Levels of a birth topic: homesync/{home_id}/nodes/{node_id}/status/online.
_LEVELS = len(DISCOVERY_TOPIC.split("/"))


@dataclass(slots=True)
class _Discovery:
    seen: set[str] = field(default_factory=set)
    unsubscribe: CALLBACK_TYPE | None = None
    flows: int = 0  # flows started by us (diagnostics, tests)


DATA_DISCOVERY: HassKey[_Discovery] = HassKey(f"{DOMAIN}_discovery")


def _integration_unsubscribe(hass: HomeAssistant) -> dict[str, CALLBACK_TYPE] | None:
    """The MQTT integration's per-integration discovery subscriptions, if it has them."""
    try:
        from homeassistant.components.mqtt.models import DATA_MQTT
    except ImportError:  # pragma: no cover - depends on Home Assistant's internals
        return None
    mqtt_data = hass.data.get(DATA_MQTT)
    unsubs = getattr(mqtt_data, "integration_unsubscribe", None)
    return unsubs if isinstance(unsubs, dict) else None


async def async_take_over_discovery(hass: HomeAssistant, *, offered: str | None = None) -> bool:
    """Replace HA's per-topic discovery of our manifest topic by one flow per home.

    ``offered``: a home id a flow is running for already (the flow that called this).
    Returns whether our subscription is the active one. Never raises.
    """
    state = hass.data.setdefault(DATA_DISCOVERY, _Discovery())
    if offered is not None:
        state.seen.add(offered)
    unsubs = _integration_unsubscribe(hass)
    key = f"{DOMAIN}_{DISCOVERY_TOPIC}"
    if unsubs is None:
        _LOGGER.debug("MQTT discovery internals not found: Home Assistant's discovery stays")
        return False
    current = unsubs.get(key)
    if current is not None and current is state.unsubscribe:
        return True  # already ours
    if current is None:
        return False  # MQTT discovery is off (or not started yet): nothing to replace
    try:
        ours = await mqtt.async_subscribe(
            hass, DISCOVERY_TOPIC, _make_handler(hass, state), qos=0, encoding=None
        )
    except HomeAssistantError as err:  # pragma: no cover - the client is up here
        _LOGGER.debug("Could not subscribe for discovery (%s): Home Assistant's stays", err)
        return False
    if unsubs.get(key) is not current:  # pragma: no cover - changed while we subscribed
        ours()
        return False
    current()
    unsubs[key] = ours
    state.unsubscribe = ours
    _LOGGER.debug("HomeSync discovery: one flow per home id (topic %s)", DISCOVERY_TOPIC)
    return True


def _make_handler(hass: HomeAssistant, state: _Discovery) -> Callable[[mqtt.ReceiveMessage], None]:
    warn = RateLimitedLogger(_LOGGER)

    @callback
    def on_birth(msg: mqtt.ReceiveMessage) -> None:
        """O(1) per message: a set lookup for every home already seen."""
        levels = msg.topic.split("/")
        if len(levels) != _LEVELS:
            return
        home_id = levels[1]
        if home_id in state.seen or not is_valid_id(home_id):
            return
        if len(state.seen) >= MAX_HOMES_OFFERED:
            warn.warning(
                "discovery_cap",
                "Ignoring HomeSync home %s: %d homes were already offered for setup since "
                "Home Assistant started (a flood of invented home ids?)",
                home_id,
                MAX_HOMES_OFFERED,
            )
            return
        state.seen.add(home_id)
        if hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, home_id) is not None:
            return  # configured (or ignored by the user)
        state.flows += 1
        discovery_flow.async_create_flow(
            hass,
            DOMAIN,
            {"source": SOURCE_MQTT},
            MqttServiceInfo(
                topic=msg.topic,
                payload=msg.payload,
                qos=msg.qos,
                retain=msg.retain,
                subscribed_topic=msg.subscribed_topic,
                timestamp=msg.timestamp,
            ),
            discovery_key=discovery_flow.DiscoveryKey(domain="mqtt", key=msg.topic, version=1),
        )

    return on_birth


@callback
def async_forget_home(hass: HomeAssistant, home_id: str) -> None:
    """The home's entry was removed: offer it again when one of its nodes is next heard."""
    if (state := hass.data.get(DATA_DISCOVERY)) is not None:
        state.seen.discard(home_id)
