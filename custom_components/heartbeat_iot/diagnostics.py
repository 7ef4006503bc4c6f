"""Diagnostics: what the hub knows, with anything secret redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PASSWORD, CONF_USERNAME
from homeassistant.core import HomeAssistant

from . import HomeSyncConfigEntry

# Nodes never send credentials, but a future option or a misbehaving node might.
TO_REDACT = {CONF_PASSWORD, CONF_USERNAME, "token", "url"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: HomeSyncConfigEntry
) -> dict[str, Any]:
    """Entry, options, per-node state, pending commands and the offline queue."""
    hub = entry.runtime_data.hub
    return async_redact_data(
        {
            "entry": {"data": dict(entry.data), "options": dict(entry.options)},
            "nodes": {
                node.node_id: {
                    "firmware": node.firmware,
                    "metrics": {
                        key: {"unit": spec.unit, "value": node.values.get(key)}
                        for key, spec in node.metrics.items()
                    },
                }
                for node in hub.nodes.values()
            },
            # Commands waiting for confirmation and the offline queue (DESIGN §4).
            "control": hub.control.diagnostics(),
        },
        TO_REDACT,
    )
