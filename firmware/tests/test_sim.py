"""The fleet simulator (``python -m firmware.sim``): runs until stopped, whatever the mix."""

import os
import signal
import subprocess
import sys
import time

from harness import MICROPYTHON, REPO_DIR, Peer
import pytest

# The old wrapper waited 10 s for a child it did not need to wait for, then stopped it.
OLD_CHILD_WAIT_S = 10


def _online(payload):
    return payload.get("online") if isinstance(payload, dict) else None


def _sim(broker, tmp_path, *args):
    cmd = [sys.executable, "-m", "firmware.sim", "--port", str(broker.port), "--home", "s1"]
    cmd += ["--heartbeat", "1", "--telemetry", "1", "--quiet"]
    cmd += ["--state-dir", str(tmp_path / "state"), "--control-dir", str(tmp_path / "ctl")]
    log = open(str(tmp_path / "sim.log"), "wb")  # noqa: SIM115  (closed by the test)
    proc = subprocess.Popen(list(cmd) + list(args), cwd=REPO_DIR, stdout=log, stderr=log)
    return proc, log


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="micropython not installed")
def test_every_node_under_micropython_runs_until_stopped(broker, tmp_path):
    """``--nodes N --micropython N``: no in-process node, so nothing to wait for but SIGINT."""
    peer = Peer(broker.port, "s1", "plug-01")
    proc, log = _sim(broker, tmp_path, "--nodes", "2", "--micropython", "2")
    try:
        peer.wait_for("status/heartbeat", timeout=20)
        start = time.monotonic()
        time.sleep(OLD_CHILD_WAIT_S + 2)
        assert proc.poll() is None, "the simulator stopped by itself"
        peer.wait_for("status/heartbeat", since=time.monotonic(), timeout=5)
        assert not [m for m in peer.get("status/online") if _online(m[2]) is False], (
            "a node said goodbye though nobody stopped it"
        )
        assert time.monotonic() - start >= OLD_CHILD_WAIT_S
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        goodbye = peer.wait_for("status/online", check=lambda p: _online(p) is False, timeout=5)
        assert goodbye[2]["reason"] == "shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        peer.close()


def test_node_options_and_repeating_faults_parse():
    """``--node-config`` sets one node's config; ``%EVERY`` repeats a scheduled fault."""
    sys.path.insert(0, os.path.join(REPO_DIR))
    from firmware import sim

    args = sim.parser().parse_args(
        [
            "--nodes",
            "3",
            "--node-config",
            "plug-02:watchdog_s=0",
            "--fault",
            "plug-03:reboot@30%120",
        ]
    )
    spec = sim.build_spec(args, "/tmp/ctl", "/tmp/state")
    nodes = {n["node_id"]: n for n in spec["nodes"]}
    assert nodes["plug-02"]["config"] == {"watchdog_s": 0}
    assert "config" not in nodes["plug-01"] or not nodes["plug-01"]["config"]
    assert nodes["plug-03"]["faults"] == [{"at": 30.0, "every": 120.0, "kind": "reboot"}]
