"""The heartbeat_iot integration: HomeSync MQTT nodes with heartbeat-based availability."""

from __future__ import annotations

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.helpers.typing import ConfigType

from .blueprint import async_install_blueprint
from .const import DOMAIN, PLATFORMS
from .device import hub_identifier, node_id_for_device
from .discovery import async_forget_home, async_take_over_discovery
from .models import HomeSyncConfigEntry, HomeSyncOptions, build_runtime_data
from .services import async_setup_services
from .storage import node_store
from .tcp_nodelay import async_enable_tcp_nodelay

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up what is shared by all homes."""
    async_setup_services(hass)
    await async_install_blueprint(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: HomeSyncConfigEntry) -> bool:
    """Set up one home."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_not_ready")
    # One discovery flow per home, not per node id (a birth flood, issue 16 #9).
    await async_take_over_discovery(hass)
    data = build_runtime_data(hass, entry)
    if data.options.tcp_nodelay:
        # Commands confirm in ~2 ms instead of ~25 ms (benchmarks/bench_relay.py).
        entry.async_on_unload(async_enable_tcp_nodelay(hass, entry.entry_id))
    await data.async_start()
    entry.runtime_data = data
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def _async_options_updated(hass: HomeAssistant, entry: HomeSyncConfigEntry) -> None:
    """Options changed: reload so every part picks them up.

    Entry updates that leave the options alone (e.g. MQTT discovery recording a discovery key
    for every node's birth) must not reload.
    """
    if HomeSyncOptions.from_options(entry.options) != entry.runtime_data.options:
        await hass.config_entries.async_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: HomeSyncConfigEntry) -> bool:
    """Unload one home, leaving no subscription behind."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.async_stop()
    return unloaded


async def async_remove_entry(hass: HomeAssistant, entry: HomeSyncConfigEntry) -> None:
    """Delete the persisted node list with the entry; its home may be discovered again."""
    await node_store(hass, entry.entry_id).async_remove()
    if entry.unique_id:
        async_forget_home(hass, entry.unique_id)


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: HomeSyncConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user delete any device of the entry except the home's own hub device.

    A node's device: the home forgets the node (one that is still publishing comes back, as a
    new device, on its next message). Any other device of the entry no longer publishes for
    this home (e.g. left over from an earlier home id) and simply goes.
    """
    data = entry.runtime_data
    if hub_identifier(data.home_id) in device.identifiers:
        return False
    if (node_id := node_id_for_device(data.home_id, device)) is not None:
        data.async_forget_node(node_id)
    return True
