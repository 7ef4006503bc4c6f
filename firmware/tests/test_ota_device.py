"""OTA end to end on the firmware side: a real MicroPython node that really reboots, a real
mosquitto, a real HTTP server, bundles built by ``firmware/bundle.py`` (CPython only).

The integration's side (update entity, HA's HTTP view) has its own end-to-end tests under
``tests/e2e``; here a paho peer plays Home Assistant.
"""

import hashlib
import json
import os
import time

import bundle
from harness import Peer
from ota_harness import EXIT_CRASH, BundleServer, DeviceProcess
import pytest

from homesync import VERSION

HOME = "h1"


@pytest.fixture
def device(broker, tmp_path):
    made = []

    def make(node_id="n1", **config):
        node = DeviceProcess(str(tmp_path), broker.port, node_id, home=HOME, **config)
        made.append(node)
        return node.start()

    yield make
    for node in made:
        node.close()


@pytest.fixture
def peer(broker):
    client = Peer(broker.port, HOME, "n1")
    yield client
    client.close()


def _bundle(tmp_path, version, **kwargs):
    info = bundle.build(str(tmp_path / "dist"), version=version, **kwargs)
    with open(info["path"], "rb") as handle:
        return info, handle.read()


def _update(peer, server, info, rid, sha256=None):
    return peer.command(
        "ota",
        "update",
        rid,
        url=server.url(),
        version=info["version"],
        sha256=sha256 or info["sha256"],
        size=info["size"],
    )


def _statuses(peer, rid):
    return [m[2]["status"] for m in peer.get("response/ota") if m[2]["request_id"] == rid]


def _final(peer, rid, timeout=30.0):
    return peer.wait_for(
        "response/ota",
        lambda p: p["request_id"] == rid and p["status"] in ("success", "error", "expired"),
        timeout=timeout,
    )[2]


def test_bundle_is_reproducible_and_matches_its_manifest(tmp_path):
    first = bundle.build(str(tmp_path / "a"), version="9.8.7", notes="n")
    second = bundle.build(str(tmp_path / "b"), version="9.8.7", notes="n")
    assert first["sha256"] == second["sha256"]
    with open(first["path"], "rb") as handle:
        data = handle.read()
    assert hashlib.sha256(data).hexdigest() == first["sha256"]
    with open(first["path"] + ".sha256") as handle:
        assert handle.read() == "{}  homesync-9.8.7.hsfw\n".format(first["sha256"])
    manifest = bundle.read_manifest(first["path"])
    assert manifest["version"] == "9.8.7"
    paths = [entry["path"] for entry in manifest["files"]]
    assert "homesync/__init__.mpy" in paths
    assert "homesync/ota.mpy" in paths
    assert "hal_esp32.mpy" in paths
    assert not [p for p in paths if p.endswith(".py")]  # compiled, as a device gets it
    assert "otaboot.mpy" not in paths  # the boot loader is never updated
    assert "main.mpy" not in paths
    header = len(b"HSFW1 ") + len(str(len(data))) + 1
    assert sum(entry["size"] for entry in manifest["files"]) < len(data) - header + 10
    notes = bundle.release_notes(VERSION)
    assert bundle.build(str(tmp_path / "c"))["notes"] == notes


def test_update_installs_reboots_and_confirms_the_new_version(device, peer, tmp_path):
    info, data = _bundle(tmp_path, "0.9.0")
    node = device()
    birth = peer.wait_for("status/online", lambda p: p["online"], timeout=15)
    assert birth[2]["firmware"] == VERSION
    peer.wait_for("status/heartbeat")
    with BundleServer(data) as server:
        t0 = time.monotonic()
        _update(peer, server, info, "ota-1")
        final = _final(peer, "ota-1")
        assert (final["status"], final["version"]) == ("success", "0.9.0")
        assert server.ranges == [None]
    statuses = _statuses(peer, "ota-1")
    assert statuses[0] == "downloading"
    assert statuses[-4:] == ["verifying", "installing", "rebooting", "success"]
    progress = [m[2]["progress"] for m in peer.get("response/ota") if "progress" in m[2]]
    assert progress == sorted(progress)
    assert progress[0] == 0
    assert progress[-1] == 100
    down = peer.wait_for("status/online", lambda p: p["online"] is False, since=t0)
    assert down[2]["reason"] == "shutdown"
    reborn = peer.wait_for("status/online", lambda p: p["online"] and p["firmware"] == "0.9.0")
    assert reborn[2]["reason"] == "boot"
    assert peer.wait_for("status/firmware", lambda p: p["version"] == "0.9.0", since=t0)
    node.wait_log("running slot")
    assert node.exits[0] == 75  # the OTA reset ended the first boot
    slot = os.path.join(node.state_dir, "ota", "a", "homesync")
    assert os.path.exists(os.path.join(slot, "ota.mpy"))


def test_wrong_sha256_is_rejected_and_nothing_reboots(device, peer, tmp_path):
    info, data = _bundle(tmp_path, "0.9.0")
    node = device()
    peer.wait_for("status/heartbeat", timeout=15)
    with BundleServer(data) as server:
        _update(peer, server, info, "ota-bad", sha256="0" * 64)
        final = _final(peer, "ota-bad")
    assert final["status"] == "error"
    assert final["error"] == "sha256 mismatch"
    assert "installing" not in _statuses(peer, "ota-bad")
    time.sleep(0.5)
    assert node.exits == []  # never rebooted
    assert [m[2]["firmware"] for m in peer.get("status/online") if m[2]["online"]] == [VERSION]


def test_download_cut_halfway_resumes_and_installs(device, peer, tmp_path):
    info, data = _bundle(tmp_path, "0.9.0")
    device()
    peer.wait_for("status/heartbeat", timeout=15)
    with BundleServer(data) as server:
        server.cut_after = len(data) // 2
        _update(peer, server, info, "ota-cut")
        final = _final(peer, "ota-cut", timeout=40)
        assert server.ranges == [None, "bytes={}-".format(len(data) // 2)]
    assert final["status"] == "success"
    assert peer.wait_for("status/online", lambda p: p["online"] and p["firmware"] == "0.9.0")


def test_bundle_whose_main_fails_to_import_is_rolled_back(device, peer, tmp_path):
    info, data = _bundle(
        tmp_path,
        "0.9.1",
        replace={"homesync/main.py": 'raise RuntimeError("broken build")\n'},
    )
    node = device()
    peer.wait_for("status/heartbeat", timeout=15)
    t0 = time.monotonic()
    with BundleServer(data) as server:
        _update(peer, server, info, "ota-broken")
        final = _final(peer, "ota-broken", timeout=40)
    assert final["status"] == "error"
    assert final["error"] == "rolled back"
    assert final["version"] == "0.9.1"
    assert "rebooting" in _statuses(peer, "ota-broken")
    back = peer.wait_for("status/online", lambda p: p["online"], since=t0 + 0.001)
    assert back[2]["firmware"] == VERSION
    node.wait_log("broken build")
    node.wait_log("rolled back to factory")
    assert EXIT_CRASH in node.exits
    peer.wait_for("status/heartbeat", since=time.monotonic())  # the old version runs healthy


def test_version_that_hangs_is_reset_by_the_watchdog_and_rolled_back(device, peer, tmp_path):
    with open(os.path.join(bundle.FIRMWARE_DIR, "homesync", "app.py")) as handle:
        source = handle.read()
    hung = source.replace("healthy = self._measure_once()", "healthy = False  # hangs")
    assert hung != source
    info, data = _bundle(tmp_path, "0.9.2", replace={"homesync/app.py": hung})
    node = device(watchdog_s=2)
    peer.wait_for("status/heartbeat", timeout=15)
    with BundleServer(data) as server:
        _update(peer, server, info, "ota-hang")
        final = _final(peer, "ota-hang", timeout=40)
    assert (final["status"], final["error"]) == ("error", "rolled back")
    node.wait_log("sim: reset (watchdog)")
    assert peer.wait_for("status/online", lambda p: p["online"] and p["firmware"] == "0.9.2")
    births = [m[2] for m in peer.get("status/online") if m[2]["online"]]
    assert births[-1]["firmware"] == VERSION


def test_same_version_is_success_without_download_and_stale_command_expires(device, peer, tmp_path):
    info, data = _bundle(tmp_path, VERSION)
    device()
    peer.wait_for("status/heartbeat", timeout=15)
    with BundleServer(data) as server:
        _update(peer, server, info, "ota-same")
        assert _final(peer, "ota-same")["status"] == "success"
        peer.command(
            "ota",
            "update",
            "ota-old",
            url=server.url(),
            version="0.9.9",
            sha256=info["sha256"],
            size=info["size"],
            timestamp="2020-01-01T00:00:00Z",
            ttl=60,
        )
        assert _final(peer, "ota-old")["status"] == "expired"
        assert server.ranges == []


def test_fleet_simulator_installs_in_process_and_reports_the_new_version(
    node_factory, peer, tmp_path
):
    """``python -m firmware.sim`` (the demo's fleet) reboots nodes inside its process: the update
    is downloaded, verified, unpacked and swapped for real, then the node reports it."""
    info, data = _bundle(tmp_path, "0.9.0")
    node = node_factory("n1", runtime="cpython")
    node.spec["nodes"][0]["firmware"] = "0.0.9"  # what --firmware of firmware.sim sets
    with open(node.spec_path, "w") as handle:
        json.dump(node.spec, handle)
    node.start()
    birth = peer.wait_for("status/online", lambda p: p["online"], timeout=15)
    assert birth[2]["firmware"] == "0.0.9"
    peer.wait_for("status/heartbeat")
    with BundleServer(data) as server:
        _update(peer, server, info, "ota-sim")
        final = _final(peer, "ota-sim")
    assert (final["status"], final["version"]) == ("success", "0.9.0")
    assert peer.wait_for("status/firmware", lambda p: p["version"] == "0.9.0")
    node.wait_log("sim: boot #2 firmware 0.9.0")
    slot = os.path.join(node.dir, "state", "ota", "a", "manifest.json")
    assert os.path.exists(slot)
