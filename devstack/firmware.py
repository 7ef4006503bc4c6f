"""The demo's firmware update: a bundle built from this repository, plugs one release behind.

``build_bundle`` runs ``python -m firmware.bundle`` (the same as ``./scripts/build-firmware``)
into ``<config>/heartbeat_iot_firmware/``, one of the places the integration looks for bundles
without any configuration. The simulated plugs start out reporting ``PLUG_FIRMWARE``, so each
plug's *Firmware* update entity offers the repository's version; *Install* really downloads the
bundle from Home Assistant, verifies it, unpacks it into the plug's slot, reboots it and
confirms the new version (docs/protocol.md, "Firmware updates").
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
import subprocess
import sys
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLUG_FIRMWARE = "0.0.9"  # what the simulated plugs run before their first update
BUNDLE_FOLDER = "heartbeat_iot_firmware"  # firmware.CONFIG_FOLDER of the integration


def build_bundle(config_dir: Path) -> dict[str, Any]:
    """Build the repository's firmware bundle for the demo's Home Assistant; returns the
    builder's summary (``path``, ``version``, ``sha256``, ``size``, ``notes``)."""
    out = config_dir / BUNDLE_FOLDER
    proc = subprocess.run(
        [sys.executable, "-m", "firmware.bundle", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the firmware bundle failed: {proc.stderr.strip()}")
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


@functools.cache
def load_test_harness() -> ModuleType:
    """The firmware tests' broker/node/peer harness (``firmware/tests/harness.py``), by path;
    loaded once, so every caller shares its classes.

    Importing it as ``firmware.tests.harness`` would run ``firmware/__init__.py``, which puts
    the firmware folder (``main.py``, ``boot.py`` ...) at the front of the caller's sys.path.
    """
    path = REPO / "firmware" / "tests" / "harness.py"
    spec = importlib.util.spec_from_file_location("_heartbeat_iot_firmware_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
