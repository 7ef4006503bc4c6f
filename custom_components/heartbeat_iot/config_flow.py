"""Config flow: one entry per HomeSync home."""

from __future__ import annotations

from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import (
    SOURCE_MQTT,
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TextSelector,
)
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
import voluptuous as vol

from .const import (
    CONF_COMMAND_RETRIES,
    CONF_COMMAND_TIMEOUT,
    CONF_FIRMWARE_PATH,
    CONF_FLAP_TRANSITIONS,
    CONF_FLAP_WINDOW,
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MAX_METRICS,
    CONF_MAX_NODES,
    CONF_MAX_PARALLEL_UPDATES,
    CONF_MIN_TIMEOUT,
    CONF_OFFLINE_RATIO,
    CONF_STALE_DAYS,
    CONF_TCP_NODELAY,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
    DOMAIN,
)
from .device import async_move_home
from .discovery import async_take_over_discovery
from .homesync.protocol import ProtocolError, is_valid_id, parse_topic


def _number(minimum: float, maximum: float, step: float, unit: str = "") -> NumberSelector:
    config = NumberSelectorConfig(min=minimum, max=maximum, step=step, mode=NumberSelectorMode.BOX)
    if unit:
        config["unit_of_measurement"] = unit
    return NumberSelector(config)


OPTIONS_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_HEARTBEAT_INTERVAL): _number(1, 3600, 1, "s"),
        vol.Required(CONF_TIMEOUT_MULTIPLIER): _number(1.5, 20, 0.5),
        vol.Required(CONF_MIN_TIMEOUT): _number(5, 86400, 1, "s"),
        vol.Required(CONF_FLAP_TRANSITIONS): _number(2, 100, 1),
        vol.Required(CONF_FLAP_WINDOW): _number(60, 86400, 1, "s"),
        vol.Required(CONF_OFFLINE_RATIO): _number(0, 100, 0.5, "%"),
        vol.Required(CONF_COMMAND_TIMEOUT): _number(0.5, 60, 0.5, "s"),
        vol.Required(CONF_COMMAND_RETRIES): _number(0, 10, 1),
        vol.Required(CONF_MAX_NODES): _number(1, 4096, 1),
        vol.Required(CONF_MAX_METRICS): _number(1, 1024, 1),
        vol.Required(CONF_TCP_NODELAY): BooleanSelector(),
        vol.Required(CONF_STALE_DAYS): _number(1, 365, 1, "d"),
        vol.Required(CONF_MAX_PARALLEL_UPDATES): _number(1, 16, 1),
        vol.Optional(CONF_FIRMWARE_PATH): TextSelector(),
    }
)
_INTEGER_OPTIONS = {
    CONF_HEARTBEAT_INTERVAL,
    CONF_MIN_TIMEOUT,
    CONF_FLAP_TRANSITIONS,
    CONF_FLAP_WINDOW,
    CONF_COMMAND_RETRIES,
    CONF_MAX_NODES,
    CONF_MAX_METRICS,
    CONF_STALE_DAYS,
    CONF_MAX_PARALLEL_UPDATES,
}
_BOOLEAN_OPTIONS = {CONF_TCP_NODELAY}


def _option_value(key: str, value: Any) -> int | float | bool:
    """Number selectors hand back floats; whole-number options are stored as ints."""
    if key in _BOOLEAN_OPTIONS:
        return bool(value)
    return int(value) if key in _INTEGER_OPTIONS else float(value)


_TEXT_OPTIONS = {CONF_FIRMWARE_PATH}


class HomeSyncConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add a HomeSync home by hand or from MQTT discovery."""

    VERSION = 1

    def __init__(self) -> None:
        """Start with nothing discovered."""
        self._home_id: str | None = None

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Timeouts, thresholds and limits."""
        return HomeSyncOptionsFlow()

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the home id, offering the homes seen on the broker."""
        if not await mqtt.async_wait_for_mqtt_client(self.hass):
            return self.async_abort(reason="mqtt_not_configured")
        errors: dict[str, str] = {}
        if user_input is not None and (home_id := _home_id_from(user_input, errors)):
            # A discovery card for the same home may be open: creating the entry
            # closes it (Home Assistant aborts flows with the same unique id).
            await self.async_set_unique_id(home_id, raise_on_progress=False)
            self._abort_if_unique_id_configured()
            return self._create(home_id)
        seen = self._discovered_home_ids()
        return self.async_show_form(
            step_id="user",
            data_schema=vol.Schema(
                {
                    vol.Required(CONF_HOME_ID, default=seen[0] if seen else ""): SelectSelector(
                        SelectSelectorConfig(
                            options=seen, custom_value=True, mode=SelectSelectorMode.DROPDOWN
                        )
                    )
                }
            ),
            description_placeholders={"seen": ", ".join(seen) or "-"},
            errors=errors,
        )

    @callback
    def _discovered_home_ids(self) -> list[str]:
        """Homes Home Assistant's MQTT discovery found and nobody has added yet.

        The manifest's `mqtt` topic makes Home Assistant start a discovery flow per home it sees
        (retained births included) as soon as MQTT is up, so the list is there at once: no
        broker scan, no wait before the form.
        """
        configured = {entry.unique_id for entry in self._async_current_entries()}
        return sorted(
            {
                home_id
                for flow in self._async_in_progress(include_uninitialized=True)
                if flow["context"].get("source") == SOURCE_MQTT
                and isinstance(home_id := flow["context"].get("unique_id"), str)
            }
            - configured
        )

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """A node's birth message revealed a home."""
        try:
            home_id = parse_topic(discovery_info.topic).home_id
        except ProtocolError:
            return self.async_abort(reason="invalid_discovery_info")
        # From now on one flow per home id, not one per node id (discovery.py, issue 16 #9).
        await async_take_over_discovery(self.hass, offered=home_id)
        await self.async_set_unique_id(home_id)
        self._abort_if_unique_id_configured()
        self._home_id = home_id
        self.context["title_placeholders"] = {"home_id": home_id}
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Let the user accept the discovered home."""
        assert self._home_id is not None
        if user_input is not None:
            return self._create(self._home_id)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="confirm", description_placeholders={"home_id": self._home_id}
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Point the entry at another home id (e.g. the nodes were re-flashed with a new one)."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None and (home_id := _home_id_from(user_input, errors)):
            await self.async_set_unique_id(home_id)
            if home_id != entry.unique_id:
                self._abort_if_unique_id_configured()
                async_move_home(self.hass, entry.entry_id, entry.data[CONF_HOME_ID], home_id)
            return self.async_update_reload_and_abort(
                entry,
                unique_id=home_id,
                title=_title(home_id),
                data_updates={CONF_HOME_ID: home_id},
            )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({vol.Required(CONF_HOME_ID): str}), entry.data
            ),
            errors=errors,
        )

    def _create(self, home_id: str) -> ConfigFlowResult:
        assert self.source != SOURCE_RECONFIGURE
        return self.async_create_entry(
            title=_title(home_id), data={CONF_HOME_ID: home_id}, options=dict(DEFAULT_OPTIONS)
        )


def _home_id_from(user_input: dict[str, Any], errors: dict[str, str]) -> str | None:
    """The home id the user entered, stripped; None, with the form error set, when invalid."""
    home_id = str(user_input[CONF_HOME_ID]).strip()
    if is_valid_id(home_id):
        return home_id
    errors[CONF_HOME_ID] = "invalid_home_id"
    return None


def _title(home_id: str) -> str:
    return f"HomeSync {home_id}"


class HomeSyncOptionsFlow(OptionsFlow):
    """Tune availability, commands and limits."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """One form with every option."""
        if user_input is not None:
            options: dict[str, Any] = {
                key: _option_value(key, value)
                for key, value in user_input.items()
                if key not in _TEXT_OPTIONS
            }
            if path := str(user_input.get(CONF_FIRMWARE_PATH) or "").strip():
                options[CONF_FIRMWARE_PATH] = path
            return self.async_create_entry(data=options)
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                OPTIONS_SCHEMA, {**DEFAULT_OPTIONS, **self.config_entry.options}
            ),
        )
