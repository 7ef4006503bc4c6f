"""Firmware update entity per node: installed version from the node, latest from the bundle.

Install runs the update through `firmware.FirmwareUpdates` (at most N at a time, the rest
wait) and returns only once the node runs the new version; failures are translated errors.
The flow and its safety rules are in docs/protocol.md ("Firmware updates").
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.update import (
    UpdateDeviceClass,
    UpdateEntity,
    UpdateEntityFeature,
)
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import HUB, KEY_BUNDLE, KEY_FIRMWARE, KEY_UPDATE
from .entity import HomeSyncNodeEntity, async_add_node_entities
from .homesync.firmware import Phase
from .models import HomeSyncConfigEntry, HomeSyncRuntimeData

# No limit here: FirmwareUpdates queues installs itself (the max_parallel_updates option).
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: HomeSyncConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """One firmware update entity per node, for known nodes now and new ones on discovery."""
    data = entry.runtime_data
    async_add_node_entities(
        hass,
        entry,
        async_add_entities,
        Platform.UPDATE,
        lambda node_id: [FirmwareUpdate(data, node_id)],
    )


class FirmwareUpdate(HomeSyncNodeEntity, UpdateEntity):
    """The node's firmware; stays available while the node is offline (it says so on install)
    and while it reboots into the new version."""

    _attr_device_class = UpdateDeviceClass.FIRMWARE
    _attr_entity_category = EntityCategory.CONFIG
    _attr_supported_features = (
        UpdateEntityFeature.INSTALL
        | UpdateEntityFeature.PROGRESS
        | UpdateEntityFeature.RELEASE_NOTES
    )
    _attr_title = "HomeSync firmware"
    _attr_translation_key = "firmware"
    _requires_online = False

    def __init__(self, data: HomeSyncRuntimeData, node_id: str) -> None:
        """The firmware of one node."""
        super().__init__(data, node_id, KEY_UPDATE)

    async def async_added_to_hass(self) -> None:
        """Also refresh when the node reports a version or the bundle on offer changes."""
        await super().async_added_to_hass()
        updates = self.data.updates
        self.async_on_remove(
            updates.async_listen(self.node_id, KEY_FIRMWARE, self.async_write_ha_state)
        )
        self.async_on_remove(updates.async_listen(HUB, KEY_BUNDLE, self.async_write_ha_state))

    @property
    def installed_version(self) -> str | None:
        """What the node reports (status/firmware, or the firmware of its birth)."""
        nodes = self.data.nodes
        return nodes[self.node_id].firmware if self.node_id in nodes else None

    @property
    def latest_version(self) -> str | None:
        """The version of the bundle on offer (None: no bundle found)."""
        bundle = self.data.firmware.bundle
        return bundle.version if bundle is not None else None

    @property
    def release_summary(self) -> str | None:
        """The start of the bundle's release notes."""
        bundle = self.data.firmware.bundle
        return bundle.summary or None if bundle is not None else None

    async def async_release_notes(self) -> str | None:
        """The bundle's release notes (Markdown)."""
        bundle = self.data.firmware.bundle
        return bundle.notes or None if bundle is not None else None

    @property
    def in_progress(self) -> bool:
        """An update of this node is waiting for its turn or running."""
        job = self.data.firmware.job(self.node_id)
        return job is not None and not job.finished

    @property
    def update_percentage(self) -> int | None:
        """Download progress reported by the node (None while waiting for a slot)."""
        job = self.data.firmware.job(self.node_id)
        if job is None or job.phase in (Phase.QUEUED, Phase.SENT):
            return None
        return job.progress

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """The update's phase while one runs (queued, downloading, rebooting…)."""
        job = self.data.firmware.job(self.node_id)
        return {"phase": job.phase.value} if job is not None else None

    async def async_install(self, version: str | None, backup: bool, **kwargs: Any) -> None:
        """Update the node; returns when it runs the new version, raises when it does not."""
        await self.data.firmware.async_install(self.node_id, version)
