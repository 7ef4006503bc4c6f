"""Look at Home Assistant through a real browser: Playwright driving Debian's chromium.

Logs in through the real login page, opens each page at 1280x900, waits for it to settle,
saves a PNG and reports what a user would call broken: raw translation keys, "Entity not
available" cards, icons that render blank. Never downloads a browser: it needs
``/usr/bin/chromium`` (``./scripts/setup --demo`` installs Debian's).

``./scripts/screenshots`` runs the demo's system in a temporary directory, waits until the
frozen plug has been declared offline and writes ``docs/screenshots/*.png``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import os
from pathlib import Path
import shutil
import sys
import tempfile
import time
from typing import Any

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
# As the workplace's browser tests run it: no background traffic to the outside world.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = Path(__file__).resolve().parents[1]

# Collects visible text and blank icons through every shadow root (HA's UI is web components).
INSPECT_JS = """
() => {
  const texts = [];
  const blankIcons = [];
  const visible = (el) => {
    const opts = {checkOpacity: true, checkVisibilityCSS: true};
    if (!el.checkVisibility || !el.checkVisibility(opts)) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < window.innerHeight;
  };
  const describe = (el) => {
    let host = el;
    const names = [];
    while (host && names.length < 6) {
      names.push(host.localName + (host.getAttribute && host.getAttribute('icon')
        ? '[' + host.getAttribute('icon') + ']' : ''));
      host = host.parentNode && host.parentNode.host ? host.parentNode.host : host.parentElement;
    }
    return names.join(' < ');
  };
  const walk = (root) => {
    const all = root.querySelectorAll('*');
    for (const el of all) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (el.localName === 'ha-svg-icon' && visible(el)) {
        const svg = el.shadowRoot && el.shadowRoot.querySelector('svg');
        const paths = svg ? [...svg.querySelectorAll('path')] : [];
        const drawn = paths.some((p) => (p.getAttribute('d') || '').length > 0);
        if (!drawn) blankIcons.push(describe(el));
      }
      for (const child of el.childNodes) {
        if (child.nodeType === 3 && child.textContent.trim() && visible(el)) {
          texts.push(child.textContent.trim());
        }
      }
    }
  };
  walk(document);
  return {texts, blankIcons};
}
"""
# A raw translation key looks like "component.heartbeat_iot.entity..." or "ui.panel.config...".
RAW_KEY_PATTERNS = (
    r"\bcomponent\.[a-z0-9_]+\.",
    r"\bui\.[a-z_]+\.[a-z_]+",
    r"\bstate\.[a-z_]+\.[a-z_]+",
    r"\b[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+\b",
)
NOT_AVAILABLE = ("Entity not available", "Entity is not available")


@dataclass
class Shot:
    """One page to capture: ``name`` (file name without .png) and its path in the frontend."""

    name: str
    path: str
    wait_for_text: str | None = None


@dataclass
class Finding:
    """Something a user would see as broken."""

    shot: str
    problem: str

    def __str__(self) -> str:
        return f"{self.shot}: {self.problem}"


def browser_missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (./scripts/setup --demo installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (./scripts/setup --demo installs requirements_demo.txt)"
    return None


def inspect(shot: str, found: dict[str, Any]) -> list[Finding]:
    """Raw translation keys, "Entity not available", blank icons."""
    import re

    findings: list[Finding] = []
    for text in found["texts"]:
        if any(marker in text for marker in NOT_AVAILABLE):
            findings.append(Finding(shot, f"card says {text!r}"))
        for pattern in RAW_KEY_PATTERNS:
            if re.search(pattern, text) and "://" not in text:
                findings.append(Finding(shot, f"raw translation key {text!r}"))
                break
    findings += [Finding(shot, f"blank icon: {where}") for where in found["blankIcons"]]
    return findings


def capture(
    base_url: str,
    username: str,
    password: str,
    shots: list[Shot],
    out_dir: Path,
    *,
    settle_s: float = 2.0,
) -> list[Finding]:
    """Log in through the login page, capture every shot, return what looks broken."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    findings: list[Finding] = []
    profile = tempfile.mkdtemp(prefix="homesync-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport=VIEWPORT,  # type: ignore[arg-type]
                locale="en-US",
                timezone_id="UTC",
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                login(page, base_url, username, password)
                for shot in shots:
                    page.goto(base_url + shot.path, wait_until="networkidle")
                    if shot.wait_for_text:
                        page.get_by_text(shot.wait_for_text).first.wait_for(timeout=20000)
                    time.sleep(settle_s)  # icons and history load after the page
                    found = page.evaluate(INSPECT_JS)
                    for _ in range(2):  # icons come from an async icon database: give it time
                        if not found["blankIcons"]:
                            break
                        time.sleep(settle_s)
                        found = page.evaluate(INSPECT_JS)
                    page.screenshot(path=str(out_dir / f"{shot.name}.png"))
                    findings += inspect(shot.name, found)
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return findings


def login(page: Any, base_url: str, username: str, password: str) -> None:
    """Through HA's real login page, as a person would type it."""
    page.goto(base_url + "/", wait_until="networkidle")
    page.locator("input[name='username']").fill(username)
    page.locator("input[name='password']").fill(password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/authorize" not in url, timeout=30000)
    page.wait_for_load_state("networkidle")


def demo_shots(client: Any, frozen: str = "plug-03") -> list[Shot]:
    """The README's pictures: fleet dashboard, a node, the hub, the logbook, energy."""
    from .ui import fleet_entities

    fleet = fleet_entities(client)
    node = next(n for n in fleet.nodes.values() if n.name == frozen)
    return [
        Shot("fleet-dashboard", "/lovelace/fleet", "Fleet"),
        Shot("node-device", f"/config/devices/device/{node.device_id}", frozen),
        Shot("hub-device", f"/config/devices/device/{fleet.hub_device_id}", "Nodes online"),
        Shot(
            "logbook",
            "/logbook?entity_id="
            + ",".join(
                node.entities[k] for k in ("connectivity", "availability") if k in node.entities
            ),
            "Logbook",
        ),
        Shot("energy", "/energy", None),
    ]


FROZEN = "plug-03"  # the demo scenario's frozen plug


def _capture_running(login_path: Path, out: Path) -> list[Finding]:
    """Pictures of a demo that is already running (its ``login.json``)."""
    from .hass import HassClient

    login_data = json.loads(login_path.read_text())
    client = HassClient(login_data["url"], login_data["username"], login_data["password"])
    try:
        client.login()
        client.ws_connect()
        shots = demo_shots(client, FROZEN)
    finally:
        client.close()
    return capture(login_data["url"], login_data["username"], login_data["password"], shots, out)


def _capture_fresh(out: Path) -> list[Finding]:
    """The demo in a temporary directory; pictures once the frozen plug is offline."""
    from .demo import Demo, parser as demo_parser
    from .ports import free_port
    from .ui import fleet_entities

    workdir = Path(tempfile.mkdtemp(prefix="homesync-screens-"))
    demo = Demo(
        demo_parser().parse_args(
            ["--port", str(free_port()), "--dir", str(workdir), "--nodes", "8"]
        )
    )
    try:
        demo.start()
        client = demo.client
        assert client is not None
        node = next(n for n in fleet_entities(client).nodes.values() if n.name == FROZEN)
        print(f"screenshots: waiting until {FROZEN} freezes and is declared offline", flush=True)
        client.wait(
            lambda: (client.state(node.entities["connectivity"]) or {}).get("state") == "off",
            180,
            f"{FROZEN} offline",
            interval=1,
        )
        time.sleep(5)
        return _capture_running(workdir / "login.json", out)
    finally:
        demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``./scripts/screenshots``: the demo in a temporary dir, pictures after the freeze."""
    p = argparse.ArgumentParser(
        prog="./scripts/screenshots",
        description="Pictures of the demo through headless chromium into docs/screenshots/.",
    )
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    p.add_argument(
        "--running",
        action="store_true",
        help="capture the demo that runs now (./scripts/demo; reads .demo/login.json)",
    )
    args = p.parse_args(argv)
    why = browser_missing()
    if why:
        print(f"screenshots: {why}", file=sys.stderr)
        return 2
    if args.running:
        findings = _capture_running(REPO / ".demo" / "login.json", args.out)
    else:
        findings = _capture_fresh(args.out)
    for name in sorted(args.out.glob("*.png")):
        print(f"screenshots: wrote {name.relative_to(REPO) if name.is_relative_to(REPO) else name}")
    for finding in findings:
        print(f"screenshots: PROBLEM {finding}", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
