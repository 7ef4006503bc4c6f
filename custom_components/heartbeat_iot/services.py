"""Service actions, registered once in async_setup (quality scale: action-setup)."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_DEVICE_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv, device_registry as dr
import voluptuous as vol

from .const import DOMAIN
from .control import ACTIONS
from .device import node_id_for_device
from .models import HomeSyncRuntimeData

SERVICE_SET_NODE_TIMEOUT = "set_node_timeout"
SERVICE_SEND_COMMAND = "send_command"
ATTR_TIMEOUT = "timeout"
ATTR_COMMAND = "command"
ATTR_ACTION = "action"
ATTR_PARAMS = "params"
ATTR_RETRIES = "retries"
ATTR_QUEUE = "queue"
ATTR_QUEUE_TTL = "queue_ttl"

SET_NODE_TIMEOUT_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): cv.string,
        # 0 clears the override (back to max(min timeout, multiplier × interval)).
        vol.Required(ATTR_TIMEOUT): vol.All(vol.Coerce(float), vol.Range(min=0, max=7 * 86400)),
    }
)

SEND_COMMAND_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_DEVICE_ID): cv.string,
        vol.Required(ATTR_COMMAND): vol.In(list(ACTIONS)),
        # Checked against the command in the handler, for a translated error naming both.
        vol.Required(ATTR_ACTION): vol.All(cv.string, vol.Strip, vol.Lower),
        vol.Optional(ATTR_PARAMS): vol.Any(None, dict),
        # Per attempt; the options flow sets the default.
        vol.Optional(ATTR_TIMEOUT): vol.All(vol.Coerce(float), vol.Range(min=0.1, max=300)),
        vol.Optional(ATTR_RETRIES): vol.All(vol.Coerce(int), vol.Range(min=0, max=10)),
        vol.Optional(ATTR_QUEUE, default=False): cv.boolean,
        vol.Optional(ATTR_QUEUE_TTL): vol.All(vol.Coerce(float), vol.Range(min=1, max=7 * 86400)),
    }
)


def resolve_node(hass: HomeAssistant, device_id: str) -> tuple[HomeSyncRuntimeData, str]:
    """The loaded home and node id behind a device id, or a translated validation error."""
    device = dr.async_get(hass).async_get(device_id)
    if device is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_device",
            translation_placeholders={"device_id": device_id},
        )
    for entry_id in device.config_entries:
        entry = hass.config_entries.async_get_entry(entry_id)
        if entry is None or entry.domain != DOMAIN:
            continue
        if entry.state is not ConfigEntryState.LOADED:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="entry_not_loaded",
                translation_placeholders={"title": entry.title},
            )
        data: HomeSyncRuntimeData = entry.runtime_data
        if (node_id := node_id_for_device(data.home_id, device)) is not None:
            return data, node_id
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_device",
        translation_placeholders={"device_id": device_id},
    )


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the integration's service actions."""

    async def set_node_timeout(call: ServiceCall) -> None:
        data, node_id = resolve_node(hass, call.data[ATTR_DEVICE_ID])
        seconds = call.data[ATTR_TIMEOUT]
        data.availability.async_set_timeout_override(node_id, seconds or None)

    hass.services.async_register(
        DOMAIN, SERVICE_SET_NODE_TIMEOUT, set_node_timeout, schema=SET_NODE_TIMEOUT_SCHEMA
    )

    async def send_command(call: ServiceCall) -> ServiceResponse:
        data, node_id = resolve_node(hass, call.data[ATTR_DEVICE_ID])
        response = await data.control.async_request(
            node_id,
            call.data[ATTR_COMMAND],
            call.data[ATTR_ACTION],
            call.data.get(ATTR_PARAMS),
            timeout=call.data.get(ATTR_TIMEOUT),
            retries=call.data.get(ATTR_RETRIES),
            queue=call.data[ATTR_QUEUE],
            queue_ttl=call.data.get(ATTR_QUEUE_TTL),
        )
        return response if call.return_response else None

    hass.services.async_register(
        DOMAIN,
        SERVICE_SEND_COMMAND,
        send_command,
        schema=SEND_COMMAND_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
