"""The launcher itself, without Home Assistant: configs, the dashboard, clear errors."""

from __future__ import annotations

from pathlib import Path
import socket
import subprocess
import sys

from devstack.demo import scenario
from devstack.mosquitto import Mosquitto
from devstack.ui import DASHBOARD_TITLE, FleetEntities, NodeEntities, dashboard_config

REPO = Path(__file__).resolve().parents[1]


def test_broker_config_keeps_sessions_and_sends_at_once(tmp_path: Path) -> None:
    """TCP_NODELAY, persistence with an autosave interval (a restart keeps queued commands)."""
    lines = Mosquitto(tmp_path).config_lines()
    assert "set_tcp_nodelay true" in lines
    assert "persistence true" in lines
    assert any(line.startswith("autosave_interval ") for line in lines)
    assert lines[lines.index("persistence true") + 1].startswith("persistence_location ")
    assert any(line.startswith("listener ") and line.endswith(" 127.0.0.1") for line in lines)


def test_dashboard_fleet_first_then_every_node() -> None:
    """Fleet health on top, then one section per node: connectivity, relay, power, energy."""
    nodes = {
        f"d{i}": NodeEntities(
            f"d{i}",
            f"plug-0{i}",
            {k: f"x.plug_0{i}_{k}" for k in ("connectivity", "relay", "power", "energy", "rssi")},
        )
        for i in (2, 1)
    }
    hub = {"nodes_online": "sensor.on", "fleet_degraded": "binary_sensor.degraded"}
    config = dashboard_config(FleetEntities("hub", hub, nodes))
    assert config["title"] == DASHBOARD_TITLE
    sections = config["views"][0]["sections"]
    assert [c.get("entity") for c in sections[0]["cards"][1:]] == list(hub.values())
    assert [s["cards"][0]["heading"] for s in sections[1:]] == ["plug-01", "plug-02"]
    assert [c["name"] for c in sections[1]["cards"][1:]] == [
        "Connectivity",
        "Relay",
        "Power",
        "Energy",
    ]


def test_demo_scenario_covers_every_promise() -> None:
    """Four different nodes freeze, flap, reboot and lose Wi-Fi; the frozen one has no watchdog."""
    plot = scenario(12)
    assert plot is not None
    assert len({plot.freeze, plot.flap, plot.reboot, plot.wifi}) == 4
    kinds = {f.split(":", 1)[1].split("@")[0].split("=")[0] for f in plot.faults()}
    assert kinds == {"freeze", "flap", "reboot", "wifi_down"}
    assert plot.node_config() == [f"{plot.freeze}:watchdog_s=0"]
    assert scenario(3) is None


def test_demo_names_the_part_when_its_port_is_taken(tmp_path: Path) -> None:
    """A taken --port: a clear error naming Home Assistant and the port; nothing started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "devstack.demo", "--port", str(port), "--dir", str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"home assistant: port {port} is already in use" in done.stdout
    assert "stopping" not in done.stdout  # nothing had been started
