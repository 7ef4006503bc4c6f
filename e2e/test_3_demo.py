"""``./scripts/demo`` as a user runs it: up, Ctrl-C, nothing left; a rerun reuses the state."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from devstack.ports import free_port

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def _run_until_ready(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "[demo] ready after" in text:
            return proc
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the demo was not ready in 240 s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.timeout(400)
def test_demo_starts_stops_on_ctrl_c_and_reruns(tmp_path: Path) -> None:
    """Ready with a login; SIGINT stops simulator, hass, broker within 30 s; rerun logs in."""
    state = tmp_path / "demo"
    cmd = [sys.executable, "-m", "devstack.demo", "--nodes", "4", "--micropython", "0"]
    cmd += ["--port", str(free_port()), "--dir", str(state)]
    proc = _run_until_ready(cmd, tmp_path / "run1.log")
    login = json.loads((state / "login.json").read_text())
    assert set(login) == {"url", "username", "password"}
    assert login["username"] == "demo"
    assert (state / "login.json").stat().st_mode & 0o077 == 0
    pids = json.loads((state / "pids.json").read_text())
    assert set(pids) == {"mosquitto", "hass", "simulator"}
    out = (tmp_path / "run1.log").read_text()
    assert login["url"] in out
    assert login["password"] in out

    stop_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert time.monotonic() - stop_at < 30
    out = (tmp_path / "run1.log").read_text()
    order = [out.index(f"stopping {part}") for part in ("simulator", "home assistant", "mosquitto")]
    assert order == sorted(order), "stopped in the wrong order"
    assert [part for part, pid in pids.items() if _alive(pid)] == []
    assert not (state / "pids.json").exists()

    # A second run starts cleanly on the same state and logs in with the same password.
    proc = _run_until_ready(cmd, tmp_path / "run2.log")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert json.loads((state / "login.json").read_text())["password"] == login["password"]
    rerun = (tmp_path / "run2.log").read_text()
    assert "restarting Home Assistant once" not in rerun  # onboarded already: nothing to undo
    assert "[demo] stopped in" in rerun
