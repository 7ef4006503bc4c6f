"""The floor for bench_system: N devices × 10 minimal entities from one config entry.

Not part of the product. bench_system copies this folder into its hass config dir as the custom
component ``bench_floor`` (writing its manifest there: tests/test_metadata.py allows one tracked
manifest.json, the integration's) and adds one entry through the config-flow API, with the
number of devices. What a restart costs with those devices restored, in CPU and RSS, is Home
Assistant's own part of what a restart with our nodes restored costs (benchmarks/NOTES.md).
"""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant

DOMAIN = "bench_floor"
PLATFORMS = [Platform.SENSOR]


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Set up the sensors (one platform, like bench_entity_cost's floor)."""
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Unload the sensors."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
