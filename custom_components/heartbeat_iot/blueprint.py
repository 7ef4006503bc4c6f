"""Install the shipped blueprint into the user's config (HACS only installs this folder)."""

from __future__ import annotations

import logging
from pathlib import Path
import shutil

from homeassistant.core import HomeAssistant

from .const import DOMAIN

_LOGGER = logging.getLogger(__package__)

BLUEPRINT_NAME = "node_offline_notify.yaml"
SOURCE = Path(__file__).parent / "blueprints" / BLUEPRINT_NAME


def _install(target: Path) -> bool:
    if target.exists():
        return False  # never overwrite a copy the user may have edited
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, target)
    return True


async def async_install_blueprint(hass: HomeAssistant) -> None:
    """Copy the blueprint to blueprints/automation/heartbeat_iot/ when it is missing."""
    target = Path(hass.config.path("blueprints", "automation", DOMAIN, BLUEPRINT_NAME))
    try:
        if await hass.async_add_executor_job(_install, target):
            _LOGGER.info("Installed the blueprint %s", target)
    except OSError as err:
        _LOGGER.warning("Could not install the blueprint to %s: %s", target, err)
