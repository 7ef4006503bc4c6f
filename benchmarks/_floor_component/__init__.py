"""The floors for bench_system: N devices × 10 minimal entities from one config entry.

Not part of the product. bench_system copies this folder into its hass config dir as the custom
component ``bench_floor`` (writing its manifest there: tests/test_metadata.py allows one tracked
manifest.json, the integration's) and adds one entry through the config-flow API, with the
number of devices. What a restart costs with those devices restored, in CPU and RSS, is Home
Assistant's own part of what a restart with our nodes restored costs (benchmarks/NOTES.md).
With ``kinds: true`` the ten entities of a device are of the kinds a node has (kinds.py)
instead of ten plain sensors (sensor.py).
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .kinds import KIND_BUILDERS, Builders

DOMAIN = "bench_floor"
CONF_KINDS = "kinds"
PLATFORMS = [Platform.SENSOR]


def floor_device(node: int, domain: str = DOMAIN) -> DeviceInfo:
    """Device `node` of a floor (entity ids ``<platform>.dev_<node>_<name>``)."""
    return DeviceInfo(identifiers={(domain, f"dev{node}")}, name=f"Dev {node}")


def add_floor_entities(
    builders: Builders,
    platform: Platform,
    entry: ConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """A platform's share of ``entry.data["devices"]`` devices, added at once."""
    build = builders[platform]
    async_add_entities(
        [entity for n in range(entry.data["devices"]) for entity in build(n, floor_device(n))]
    )


def _platforms(entry: ConfigEntry) -> list[Platform]:
    return list(KIND_BUILDERS) if entry.data.get(CONF_KINDS) else PLATFORMS


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Set up the entities (one platform, like bench_entity_cost's plain floor, or five)."""
    await hass.config_entries.async_forward_entry_setups(entry, _platforms(entry))
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Unload the entities."""
    return await hass.config_entries.async_unload_platforms(entry, _platforms(entry))
