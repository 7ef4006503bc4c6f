"""Repair flows: removing a stale node (the issue is raised by stale.py)."""

from __future__ import annotations

from typing import Any

from homeassistant import data_entry_flow
from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from .models import HomeSyncConfigEntry


class StaleNodeRepairFlow(RepairsFlow):
    """Confirm, then remove the node's device and forget the node."""

    def __init__(self, entry_id: str, node_id: str) -> None:
        """The issue's data says which node of which entry."""
        self._entry_id = entry_id
        self._node_id = node_id

    async def async_step_init(
        self, user_input: dict[str, str] | None = None
    ) -> data_entry_flow.FlowResult:
        """Nothing to ask first."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> data_entry_flow.FlowResult:
        """Remove on confirmation, unless the node spoke again meanwhile."""
        entry: HomeSyncConfigEntry | None = self.hass.config_entries.async_get_entry(self._entry_id)
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        data = entry.runtime_data
        if not data.stale.is_stale(self._node_id):
            data.stale.forget(self._node_id)
            return self.async_abort(reason="node_back")
        name = data.nodes.node_name(self._node_id)
        if user_input is None:
            return self.async_show_form(step_id="confirm", description_placeholders={"node": name})
        device_id = data.nodes.device_id(self._node_id)
        data.async_forget_node(self._node_id)
        if device_id is not None:
            dr.async_get(self.hass).async_update_device(
                device_id, remove_config_entry_id=self._entry_id
            )
        return self.async_create_entry(data={})


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, Any] | None
) -> RepairsFlow:
    """The fix flow of a stale-node issue."""
    assert data is not None
    return StaleNodeRepairFlow(str(data["entry_id"]), str(data["node_id"]))
