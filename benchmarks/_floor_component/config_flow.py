"""One entry, created over the REST flow API with the number of devices and whether they have
the kinds floor's entities (bench_system)."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
import voluptuous as vol

from . import CONF_KINDS, DOMAIN

CONF_DEVICES = "devices"


class FloorConfigFlow(ConfigFlow, domain=DOMAIN):
    """The user step asks for the number of devices; one entry at most."""

    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Create the entry."""
        if user_input is None:
            return self.async_show_form(
                step_id="user",
                data_schema=vol.Schema(
                    {vol.Required(CONF_DEVICES): int, vol.Optional(CONF_KINDS, default=False): bool}
                ),
            )
        await self.async_set_unique_id(DOMAIN)
        self._abort_if_unique_id_configured()
        return self.async_create_entry(
            title="floor",
            data={CONF_DEVICES: user_input[CONF_DEVICES], CONF_KINDS: user_input[CONF_KINDS]},
        )
