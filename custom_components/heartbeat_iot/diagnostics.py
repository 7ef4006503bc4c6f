"""Diagnostics: what the hub knows, with anything secret redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from .homesync.redact import redact
from .homesync.tracker import FleetSilence, NodeStatus
from .models import HomeSyncConfigEntry
from .tcp_nodelay import tcp_nodelay_status


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: HomeSyncConfigEntry
) -> dict[str, Any]:
    """Entry, options, per-node state, pending commands and the offline queue."""
    data = entry.runtime_data
    availability = data.availability
    online, offline = availability.counts()
    # Nodes never send credentials, but queued params, options or a misbehaving node might:
    # redacted by key pattern at any depth (api_key, wifi_password, clientSecret, URLs, ...).
    redacted: dict[str, Any] = redact(
        {
            "entry": {"data": dict(entry.data), "options": dict(entry.options)},
            "broker_connected": availability.broker_connected,
            # TCP_NODELAY on HA's MQTT connection: on / off (option) / unsupported (why) ...
            "tcp_nodelay": tcp_nodelay_status(hass),
            "fleet": {
                "online": online,
                "offline": offline,
                "offline_ratio": round(availability.offline_ratio(), 2),
                "timer_heap_size": availability.tracker.heap_size,
                # Known but not heard live yet (in neither count), and a suspected
                # fleet-wide silence (docs/availability.md).
                "unknown": availability.tracker.unknown_count,
                "fleet_silence": _silence(availability.fleet_silence),
            },
            "nodes": {
                node.node_id: {
                    "firmware": node.firmware,
                    "relay": data.outputs.relay(node.node_id),
                    "availability": _availability(availability.status(node.node_id)),
                    "metrics": {
                        key: {"unit": spec.unit, "value": node.values.get(key)}
                        for key, spec in node.metrics.items()
                    },
                    "queued_intents": data.control.queued(node.node_id),
                }
                for node in data.nodes.values()
            },
            # Commands waiting for confirmation and the offline queue (docs/architecture.md §6).
            "control": data.control.diagnostics(),
            # What the home's statistics sensors show (and the raw message count).
            "statistics": data.stats.as_dict(),
            # Firmware bundle on offer and updates in progress (firmware.py; no tokens).
            "firmware_updates": data.firmware.diagnostics(),
        }
    )
    return redacted


def _silence(silence: FleetSilence | None) -> dict[str, Any] | None:
    if silence is None:
        return None
    since = dt_util.utc_from_timestamp(silence.since).isoformat()
    return {"since": since, "late": silence.late, "online": silence.online}


def _availability(status: NodeStatus | None) -> dict[str, Any] | None:
    """The tracker's view of a node, timestamps as ISO strings."""
    if status is None:
        return None
    data = asdict(status)
    for key in ("last_seen", "deadline", "last_boot"):
        if data[key] is not None:
            try:
                data[key] = dt_util.utc_from_timestamp(data[key]).isoformat()
            except (OverflowError, OSError, ValueError):  # e.g. stored before numbers were bounded
                data[key] = None
    data["state"] = str(status.state)
    return data
