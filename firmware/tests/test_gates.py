"""Device gates: mpy-cross syntax, the unit tests under real MicroPython, the compiled firmware
in a tight heap, and the fleet simulator's command line."""

import json
import os
import subprocess
import sys
import time

from harness import FIRMWARE_DIR, MICROPYTHON, MPY_CROSS, REPO_DIR, Peer
import pytest

DEVICE_FILES = (
    "boot.py",
    "main.py",
    "hal_esp32.py",
    "otaboot.py",
    "homesync/__init__.py",
    "homesync/app.py",
    "homesync/clock.py",
    "homesync/cse7766.py",
    "homesync/main.py",
    "homesync/mqtt.py",
    "homesync/node.py",
    "homesync/ota.py",
    "homesync/otaagent.py",
    "homesync/otafetch.py",
    "homesync/protocol.py",
    "homesync/store.py",
)


def firmware_sources():
    out = []
    for root, _dirs, files in os.walk(FIRMWARE_DIR):
        if "__pycache__" in root or "typings" in root:
            continue
        out.extend(os.path.join(root, name) for name in files if name.endswith(".py"))
    return sorted(out)


def test_mpy_cross_compiles_every_firmware_module(tmp_path):
    sources = firmware_sources()
    for name in DEVICE_FILES:
        assert os.path.join(FIRMWARE_DIR, name) in sources
    failures = []
    for path in sources:
        out = tmp_path / (os.path.basename(path) + ".mpy")
        proc = subprocess.run(
            [MPY_CROSS, "-o", str(out), path],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            failures.append("{}: {}".format(path, proc.stderr.strip()))
    assert not failures, "\n".join(failures)


def test_unit_tests_pass_under_real_micropython():
    proc = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=2048k", "firmware/tests/mp_runner.py"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    closing = lines[-1]
    passed, failed = closing.replace(" passed,", "").replace(" failed", "").split()
    assert int(failed) == 0, proc.stdout[-4000:]
    assert int(passed) >= 60, closing
    assert proc.returncode == 0


def _compile_device_tree(dest):
    os.makedirs(os.path.join(dest, "homesync"), exist_ok=True)
    for name in DEVICE_FILES + ("hal_host.py", "simnode.py"):
        if name in ("boot.py", "main.py", "hal_esp32.py"):
            continue
        target = os.path.join(dest, name[:-3] + ".mpy")
        subprocess.run(
            [MPY_CROSS, "-o", target, os.path.join(FIRMWARE_DIR, name)], check=True, timeout=30
        )


def test_compiled_firmware_runs_in_small_heap(broker, tmp_path):
    """The .mpy build a device would get, in a 176 KiB heap of 64-bit objects (about 88 KiB on
    an ESP32, whose heap offers ~110 KiB; the measured minimum is 160 KiB, see README "Tests")."""
    build = str(tmp_path / "build")
    _compile_device_tree(build)
    assert not [n for n in os.listdir(build) if n.endswith(".py")]
    spec = {
        "home_id": "h1",
        "broker": {"host": "127.0.0.1", "port": broker.port},
        "config": {"heartbeat_interval": 1, "telemetry_interval": 1, "measure_interval_ms": 100},
        "state_root": str(tmp_path / "state"),
        "duration": 4,
        "nodes": [{"node_id": "tiny", "load": "fridge"}],
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    peer = Peer(broker.port, "h1", "tiny")
    try:
        proc = subprocess.run(
            [
                MICROPYTHON,
                "-X",
                "heapsize=176k",
                "-c",
                "import simnode; simnode.main(['simnode', {!r}])".format(str(spec_path)),
            ],
            cwd=build,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "MemoryError" not in proc.stdout + proc.stderr
        peer.wait(lambda: len(peer.get("status/heartbeat")) >= 3, what="heartbeats")
        assert (
            peer.wait_for("status/online", lambda p: p["online"] is False)[2]["reason"]
            == "shutdown"
        )
    finally:
        peer.close()


def test_simulator_cli_runs_fleet_with_faults(broker, tmp_path):
    peers = {name: Peer(broker.port, "demo", name) for name in ("plug-01", "plug-02", "plug-03")}
    try:
        cmd = [
            sys.executable,
            "-m",
            "firmware.sim",
            "--port",
            str(broker.port),
            "--nodes",
            "3",
            "--micropython",
            "1",
            "--heartbeat",
            "1",
            "--telemetry",
            "1",
            "--measure-ms",
            "200",
            "--duration",
            "3",
            "--fault",
            "plug-02:freeze@0+30",
            "--state-dir",
            str(tmp_path / "state"),
            "--control-dir",
            str(tmp_path / "ctl"),
        ]
        started = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=40, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert time.monotonic() - started < 20
        assert "1 under MicroPython" in proc.stdout
        for name, peer in peers.items():
            births = peer.get("status/online")
            assert births, name
            assert births[0][2]["online"] is True
            assert peer.wait_for("status/online", lambda p: p["online"] is False)[2]["reason"] == (
                "shutdown"
            )
        assert len(peers["plug-01"].get("status/heartbeat")) >= 2
        assert len(peers["plug-03"].get("status/heartbeat")) >= 2  # the MicroPython node
        assert peers["plug-02"].get("status/heartbeat") == []  # frozen: online, yet silent
        assert peers["plug-01"].get("telemetry/power")
    finally:
        for peer in peers.values():
            peer.close()


def test_simulator_rejects_bad_fault_spec():
    proc = subprocess.run(
        [sys.executable, "-m", "firmware.sim", "--fault", "plug-01:explode"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown fault" in proc.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plug-02:freeze@20+30", ("plug-02", {"kind": "freeze", "at": 20.0, "duration": 30.0})),
        ("*:unsynced", ("*", {"kind": "unsynced", "at": 0.0})),
        ("p:delay=2.5", ("p", {"kind": "delay", "at": 0.0, "value": 2.5})),
        ("p:flap=5/2@1+9", ("p", {"kind": "flap", "at": 1.0, "duration": 9.0, "value": "5/2"})),
    ],
)
def test_fault_spec_parser(text, expected):
    from firmware.sim import parse_fault

    assert parse_fault(text) == expected
