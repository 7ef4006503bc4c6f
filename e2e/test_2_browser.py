"""A look through a real browser: Playwright driving Debian's chromium against the real hass.

Logs in through the real login page and captures, at 1280x900, the fleet dashboard, a node's
device page, the hub device page and the logbook after a node froze. Fails on what a user
would call broken: raw translation keys, "Entity not available" cards, blank icons.
Skipped only when chromium or Playwright cannot be installed on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.screenshots import Finding, Shot, browser_missing, capture

from .conftest import FROZEN, PASSWORD, TIMEOUT_S, USERNAME, System

MISSING = browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no browser: {MISSING}")


@pytest.fixture(scope="module")
def findings(system: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Freeze a node (if no earlier test did), then capture the four pages once."""
    if not system.hass.frontend:
        pytest.fail("home-assistant-frontend is not installed (./scripts/setup --demo)")
    connectivity = system.entity(FROZEN, "connectivity")
    if system.state(connectivity)["state"] == "on":
        system.fleet.control(FROZEN, {"fault": "freeze"})
    system.wait_state(connectivity, "off", TIMEOUT_S + 10)
    fleet = system.entities()
    node = next(n for n in fleet.nodes.values() if n.name == FROZEN)
    shots = [
        Shot("fleet-dashboard", "/lovelace/fleet", "Fleet"),
        Shot("node-device", f"/config/devices/device/{node.device_id}", FROZEN),
        Shot("hub-device", f"/config/devices/device/{fleet.hub_device_id}", "Nodes online"),
        Shot("logbook", "/logbook", "Logbook"),
    ]
    out = tmp_path_factory.mktemp("screenshots")
    found = capture(system.hass.url, USERNAME, PASSWORD, shots, out)
    return {"out": out, "shots": shots, "found": found}


def _problems(found: list[Finding], kind: str) -> list[str]:
    return [str(f) for f in found if f.problem.startswith(kind)]


def test_pages_captured_after_login(findings: dict[str, Any]) -> None:
    """Every page was reached through the login page and saved at 1280x900."""
    for shot in findings["shots"]:
        png: Path = findings["out"] / f"{shot.name}.png"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20]), int.from_bytes(data[20:24])
        assert (width, height) == (1280, 900)


def test_no_raw_translation_keys(findings: dict[str, Any]) -> None:
    """Every text is translated (no ``component.heartbeat_iot....`` on screen)."""
    assert _problems(findings["found"], "raw translation key") == []


def test_no_entity_not_available_cards(findings: dict[str, Any]) -> None:
    """Every dashboard card finds its entity."""
    assert _problems(findings["found"], "card says") == []


def test_no_blank_icons(findings: dict[str, Any]) -> None:
    """Every icon draws something."""
    assert _problems(findings["found"], "blank icon") == []
