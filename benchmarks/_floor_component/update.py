"""The kinds floor's update entities (kinds.py)."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from . import add_floor_entities
from .kinds import KIND_BUILDERS


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddConfigEntryEntitiesCallback
) -> None:
    """Every device's share of this platform."""
    add_floor_entities(KIND_BUILDERS, Platform.UPDATE, entry, async_add_entities)
