"""What the user sees first: the "HomeSync fleet" dashboard and the Energy dashboard.

Both are written through the same WebSocket commands the frontend's editors use
(``lovelace/config/save``, ``energy/save_prefs``), from the entity and device registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .hass import ApiError, HassClient

DOMAIN = "heartbeat_iot"
HUB_KEYS = ("nodes_online", "nodes_offline", "offline_ratio", "fleet_degraded")
NODE_KEYS = ("connectivity", "relay", "power", "energy")
# Short tile names: the section heading already says which node (or "Fleet").
TILE_NAMES = {
    "nodes_online": "Nodes online",
    "nodes_offline": "Nodes offline",
    "offline_ratio": "Offline ratio",
    "fleet_degraded": "Fleet degraded",
    "connectivity": "Connectivity",
    "relay": "Relay",
    "power": "Power",
    "energy": "Energy",
}
DASHBOARD_TITLE = "HomeSync fleet"


@dataclass
class NodeEntities:
    """One node's device and its entities by translation key (``relay``, ``energy``...)."""

    device_id: str
    name: str
    entities: dict[str, str] = field(default_factory=dict)


@dataclass
class FleetEntities:
    """The hub device and every node device of the integration."""

    hub_device_id: str | None
    hub: dict[str, str]
    nodes: dict[str, NodeEntities]


def fleet_entities(client: HassClient) -> FleetEntities:
    """Read the registries: which entity is which, per device."""
    devices = {d["id"]: d for d in client.ws("config/device_registry/list")}
    hub: dict[str, str] = {}
    hub_device: str | None = None
    nodes: dict[str, NodeEntities] = {}
    for ent in client.ws("config/entity_registry/list"):
        if ent.get("platform") != DOMAIN or not ent.get("device_id"):
            continue
        key = ent.get("translation_key") or ent["unique_id"].rsplit("_", 1)[-1]
        device = devices.get(ent["device_id"]) or {}
        if key in HUB_KEYS:
            hub[key] = ent["entity_id"]
            hub_device = ent["device_id"]
            continue
        name = device.get("name_by_user") or device.get("name") or ent["device_id"]
        node = nodes.setdefault(ent["device_id"], NodeEntities(ent["device_id"], name))
        node.entities[key] = ent["entity_id"]
    return FleetEntities(hub_device, hub, nodes)


def dashboard_config(fleet: FleetEntities) -> dict[str, Any]:
    """The fleet dashboard: fleet health on top, then one section per node."""
    sections: list[dict[str, Any]] = [
        {
            "type": "grid",
            "column_span": 2,
            "cards": [
                {"type": "heading", "heading": "Fleet", "icon": "mdi:lan"},
                *(
                    {"type": "tile", "entity": fleet.hub[key], "name": TILE_NAMES[key]}
                    for key in HUB_KEYS
                    if key in fleet.hub
                ),
            ],
        }
    ]
    for node in sorted(fleet.nodes.values(), key=lambda n: n.name):
        cards: list[dict[str, Any]] = [
            {"type": "heading", "heading": node.name, "icon": "mdi:power-socket-eu"}
        ]
        for key in NODE_KEYS:
            if key not in node.entities:
                continue
            card: dict[str, Any] = {
                "type": "tile",
                "entity": node.entities[key],
                "name": TILE_NAMES[key],
            }
            if key == "relay":
                card["features"] = [{"type": "toggle"}]
                card["features_position"] = "inline"
            cards.append(card)
        sections.append({"type": "grid", "cards": cards})
    return {
        "title": DASHBOARD_TITLE,
        "views": [
            {
                "title": DASHBOARD_TITLE,
                "path": "fleet",
                "icon": "mdi:power-socket-eu",
                "type": "sections",
                "max_columns": 4,
                "sections": sections,
            }
        ],
    }


def configure_dashboard(client: HassClient, fleet: FleetEntities, *, force: bool = False) -> bool:
    """Make "HomeSync fleet" the default dashboard unless the user already edited it."""
    if not force:
        try:
            current = client.ws("lovelace/config")
        except ApiError:
            current = None
        if current and current.get("title") != DASHBOARD_TITLE:
            return False  # the user made their own: keep it
    client.ws("lovelace/config/save", config=dashboard_config(fleet))
    return True


def configure_energy(client: HassClient, fleet: FleetEntities) -> list[str]:
    """Every plug's energy sensor as an individual device in the Energy dashboard."""
    stats = sorted(n.entities["energy"] for n in fleet.nodes.values() if "energy" in n.entities)
    try:
        prefs = client.ws("energy/get_prefs")
    except ApiError:
        prefs = {"energy_sources": [], "device_consumption": []}
    known = {d["stat_consumption"] for d in prefs.get("device_consumption", [])}
    devices = list(prefs.get("device_consumption", []))
    devices += [{"stat_consumption": s} for s in stats if s not in known]
    client.ws(
        "energy/save_prefs",
        energy_sources=prefs.get("energy_sources", []),
        device_consumption=devices,
    )
    return stats
