"""Nodes under real MicroPython (and CPython) against a real mosquitto, driven by paho.

Each test starts its own broker on a free loopback port and its own node process(es).
"""

import os
import shutil
import subprocess
import time

from harness import Broker, NodeProcess, Peer
import pytest

from homesync import protocol


def iso_ago(seconds):
    return protocol.iso_utc(int(time.time()) - seconds)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_node_connects_and_publishes_birth_heartbeat_telemetry(
    broker, node_factory, peer_factory, runtime
):
    peer = peer_factory("n1")
    node = node_factory("n1", runtime=runtime, relay=True).start()
    birth = peer.wait_for("status/online")[2]
    assert birth["online"] is True
    assert birth["reason"] == "boot"
    assert birth["firmware"] == "0.1.0"
    assert isinstance(birth["uptime"], int)
    assert protocol.parse_iso(birth["timestamp"]) is not None
    relay = peer.wait_for("status/relay")[2]
    assert relay["state"] == "on"
    assert relay["source"] == "boot"
    assert peer.wait_for("status/firmware")[2]["version"] == "0.1.0"
    assert peer.wait_for("status/rssi")[2]["unit"] == "dBm"
    peer.wait(lambda: len(peer.get("status/heartbeat")) >= 3, what="3 heartbeats")
    seqs = [m[2]["seq"] for m in peer.get("status/heartbeat")]
    assert seqs[:3] == [0, 1, 2]
    assert peer.get("status/heartbeat")[0][2]["interval"] == 1
    units = {
        "power": "W",
        "voltage": "V",
        "current": "A",
        "energy": "kWh",
        "frequency": "Hz",
        "temperature": "\u00b0C",
    }
    for name, unit in units.items():
        value = peer.wait_for("telemetry/" + name)[2]
        assert value["unit"] == unit
        if name == "current" and value["value"] is None:
            # A load below the meter's current floor: no current, and it says why.
            assert value["reason"] in ("below_range", "no_load")
            continue
        assert isinstance(value["value"], (int, float))
        assert not peer.get("telemetry/" + name)[0][3]  # telemetry is not retained
    power = peer.wait_for("telemetry/power", lambda p: p["value"] > 5)[2]["value"]
    assert 7 < power < 10  # the simulated LED lamp, decoded from CSE7766 frames
    assert 220 < peer.get("telemetry/voltage")[-1][2]["value"] < 240
    # A late subscriber gets the retained birth (retained messages are not proof of life).
    late = peer_factory("n1")
    assert late.wait_for("status/online")[3] is True
    assert "homesync_h1_n1_" in broker.log()
    node.stop()
    shutdown = peer.wait_for("status/online", lambda p: p["online"] is False)[2]
    assert shutdown["reason"] == "shutdown"
    assert node.proc.wait(5) == 0


def test_duplicate_request_id_executes_once(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/relay", lambda p: p["state"] == "off")
    peer.command("relay", "toggle", "dup-1", timestamp=iso_ago(0), ttl=30)
    first = peer.wait_for("response/command", lambda p: p["request_id"] == "dup-1")[2]
    peer.command("relay", "toggle", "dup-1", timestamp=iso_ago(0), ttl=30)  # the retry
    peer.wait(lambda: len(peer.get("response/command")) == 2, what="second response")
    second = peer.get("response/command")[1][2]
    assert first == second
    assert first["status"] == "success"
    assert first["result"] == "on"
    time.sleep(0.3)
    switched = [m for m in peer.get("status/relay") if m[2]["source"] == "command"]
    assert len(switched) == 1  # toggled once: a second execution would have switched it off
    assert switched[0][2]["state"] == "on"
    node.wait_log("duplicate request dup-1")


def test_stale_queued_command_answered_expired(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    away = time.monotonic()
    node.control({"fault": "wifi_down"})
    peer.wait_for("status/online", lambda p: p["online"] is False, since=away)  # the LWT
    peer.command("relay", "on", "stale-1", timestamp=iso_ago(120), ttl=30)
    peer.command("relay", "on", "fresh-1", timestamp=iso_ago(0), ttl=60)
    time.sleep(0.3)
    assert peer.get("response/command") == []  # queued by the broker while the node is away
    node.control({"clear": "wifi_down"})
    stale = peer.wait_for("response/command", lambda p: p["request_id"] == "stale-1")[2]
    assert stale["status"] == "expired"
    fresh = peer.wait_for("response/command", lambda p: p["request_id"] == "fresh-1")[2]
    assert fresh["status"] == "success"
    node.wait_log("session_present=1")


def test_persistent_session_survives_broker_restart(broker, node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    node.wait_log("session_present=0")
    peer.close()
    broker.stop()
    node.wait_log("mqtt: link down")
    node.wait_log("mqtt: retry in", count=2)  # it keeps trying while the broker is gone
    broker.start()
    peer = peer_factory("n1")
    back = peer.wait_for("status/online", lambda p: p["reason"] == "reconnect", timeout=15)
    assert back[2]["online"] is True
    node.wait_log("session_present=1")
    # Away again; a QoS 1 command published meanwhile is delivered once on return.
    away = time.monotonic()
    node.control({"fault": "wifi_down"})
    peer.wait_for("status/online", lambda p: p["online"] is False, since=away)
    sent_at = time.monotonic()
    peer.command("relay", "on", "while-away", timestamp=iso_ago(0), ttl=60)
    time.sleep(0.3)
    node.control({"clear": "wifi_down"})
    resp = peer.wait_for("response/command", lambda p: p["request_id"] == "while-away")[2]
    assert resp["status"] == "success"
    assert resp["result"] == "on"
    time.sleep(1.0)
    assert len(peer.get("response/command", since=sent_at)) == 1
    assert node.log().count("hal: relay on") == 1  # executed once (the birth repeats the state)
    assert peer.get("status/relay")[-1][2]["state"] == "on"
    assert node.log().count("session_present=1") >= 2


def test_lwt_fires_when_socket_cut_without_disconnect(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    node.kill()  # SIGKILL: the socket dies, no DISCONNECT
    will = peer.wait_for("status/online", lambda p: p["online"] is False)
    assert will[2] == {"online": False, "reason": "unexpected_disconnect"}
    late = peer_factory("n1")  # and it is retained
    retained = late.wait_for("status/online")
    assert retained[3] is True
    assert retained[2]["reason"] == "unexpected_disconnect"


def test_wifi_drop_fires_lwt_then_node_recovers(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    node.control({"fault": "wifi_down", "duration": 1.5})
    will = peer.wait_for("status/online", lambda p: p["online"] is False)
    assert will[2]["reason"] == "unexpected_disconnect"
    back = peer.wait_for("status/online", lambda p: p["online"] is True, since=will[0])
    assert back[2]["reason"] == "reconnect"
    seq_before = [m[2]["seq"] for m in peer.get("status/heartbeat") if m[0] < will[0]]
    peer.wait_for("status/heartbeat", since=back[0])
    seq_after = peer.get("status/heartbeat", since=back[0])[0][2]["seq"]
    assert seq_after > max(seq_before)  # same boot: seq continues, the gap shows lost beats


def test_freeze_stops_heartbeats_while_tcp_stays_up(broker, node_factory, peer_factory):
    """The failure LWT misses: the app loop hangs, MQTT keep-alive keeps the session alive."""
    peer = peer_factory("n1")
    node = node_factory("n1", mqtt={"keepalive": 2}).start()
    peer.wait(lambda: len(peer.get("status/heartbeat")) >= 2, what="heartbeats")
    pings_before = broker.log().count("Received PINGREQ from homesync_h1_n1_")
    node.control({"fault": "freeze", "duration": 6})
    frozen_at = time.monotonic()
    time.sleep(0.5)
    last_seq = peer.get("status/heartbeat")[-1][2]["seq"]
    window_start = time.monotonic()
    time.sleep(4.5)  # > 2 keep-alive periods: the broker would have dropped a silent client
    assert peer.get("status/heartbeat", since=window_start) == []
    assert peer.get("telemetry/power", since=window_start) == []
    assert peer.get("status/online", since=frozen_at) == []  # no LWT: TCP + MQTT look fine
    assert broker.log().count("Received PINGREQ from homesync_h1_n1_") >= pings_before + 2
    assert "exceeded timeout" not in broker.log()
    resumed = peer.wait_for("status/heartbeat", since=window_start, timeout=5)
    assert resumed[2]["seq"] == last_seq + 1  # no reboot, the loop simply continues
    assert peer.get("status/online", since=frozen_at) == []


def test_freeze_with_watchdog_resets_node(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1", watchdog_s=1.5, stall_timeout_s=0.5).start()
    peer.wait(lambda: len(peer.get("status/heartbeat")) >= 2, what="heartbeats")
    t0 = time.monotonic()
    node.control({"fault": "freeze"})
    node.wait_log("not feeding the watchdog")
    node.wait_log("sim: reset (watchdog)")
    reboot = peer.wait_for(
        "status/online", lambda p: p["online"] and p["reason"] == "boot", since=t0
    )
    beat = peer.wait_for("status/heartbeat", since=reboot[0])
    assert beat[2]["seq"] == 0  # seq restarts on boot: the integration's reboot signal
    late = peer_factory("n1")  # the retained state ends up "online"
    time.sleep(1.0)
    assert late.wait_for("status/online")[2]["online"] is True


def test_sensor_loop_crash_stops_heartbeat_and_watchdog_recovers(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1", watchdog_s=1.5, stall_timeout_s=0.5).start()
    peer.wait_for("status/heartbeat")
    t0 = time.monotonic()
    node.control({"fault": "sensor_crash"})
    node.wait_log("not feeding the watchdog")
    node.wait_log("sim: reset (watchdog)")
    beat = peer.wait_for("status/heartbeat", lambda p: p["seq"] == 0, since=t0)
    assert beat[2]["uptime"] <= 2


def test_crash_mid_command_still_exactly_once(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/relay", lambda p: p["state"] == "off")
    peer.wait_for("status/heartbeat")
    node.control({"fault": "crash_command"})
    t0 = time.monotonic()
    peer.command("relay", "toggle", "crash-1", timestamp=iso_ago(0), ttl=60)
    node.wait_log("sim: reset (crash mid-command)")
    resp = peer.wait_for("response/command", lambda p: p["request_id"] == "crash-1", timeout=15)
    assert resp[2]["status"] == "success"
    assert resp[2]["result"] == "on"
    node.wait_log("duplicate request crash-1")  # the redelivery was answered from the cache
    time.sleep(0.5)
    assert len(peer.get("response/command", since=t0)) == 1
    assert peer.get("status/relay")[-1][2]["state"] == "on"  # toggled once, not twice
    assert node.log().count("hal: relay on") == 2  # switch before the crash + restore at boot


def test_delayed_response(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    node.control({"fault": "delay", "value": 1.5})
    t0 = time.monotonic()
    peer.command("led", "blink", "slow-1")
    resp = peer.wait_for("response/command", lambda p: p["request_id"] == "slow-1")
    assert resp[0] - t0 >= 1.4
    assert resp[2]["result"] == "blink"


def test_unsynced_clock_sends_no_timestamps_and_never_expires(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    node.control({"fault": "unsynced"})
    t0 = time.monotonic()
    peer.command("relay", "on", "old-but-unknown", timestamp=iso_ago(3600), ttl=30)
    resp = peer.wait_for("response/command", lambda p: p["request_id"] == "old-but-unknown")[2]
    assert resp["status"] == "success"  # cannot judge age without a synced clock
    assert "timestamp" not in resp
    power = peer.wait_for("telemetry/power", since=t0 + 0.2)[2]
    assert "timestamp" not in power


def test_flapping_link_reconnects_repeatedly(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1", mqtt={"backoff_min_s": 0.1, "backoff_max_s": 0.3}).start()
    peer.wait_for("status/heartbeat")
    node.control({"fault": "flap", "value": "0.8/0.6", "duration": 4.5})
    t0 = time.monotonic()
    peer.wait(
        lambda: len(peer.get("status/online", since=t0, retained=False)) >= 4,
        timeout=12,
        what="repeated will/birth",
    )
    node.wait_log("hal: fault flap ended", timeout=8)
    peer.wait(lambda: peer.get("status/online")[-1][2]["online"] is True, what="final birth")
    reasons = {m[2]["reason"] for m in peer.get("status/online", since=t0)}
    assert reasons <= {"unexpected_disconnect", "reconnect"}
    assert node.log().count("session_present=1") >= 2
    peer.wait_for("status/heartbeat", since=time.monotonic())


def _make_pki(workdir):
    """A throw-away CA and a server certificate for 127.0.0.1 (EC P-256, valid 2 days)."""

    def run(args):
        subprocess.run(args, cwd=workdir, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    run(["openssl", "req", "-x509", "-keyout", "ca.key", "-out", "ca.crt"] + ec
        + ["-subj", "/CN=homesync-test-ca"])  # fmt: skip
    run(["openssl", "req", "-keyout", "server.key", "-out", "server.csr"] + ec[:-2]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])  # fmt: skip
    sign = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-copy_extensions", "copy"]
    run(["openssl", "x509", "-req", "-in", "server.csr", "-out", "server.crt", "-days", "2"] + sign)
    run(["openssl", "req", "-x509", "-keyout", "other.key", "-out", "other-ca.crt"] + ec
        + ["-subj", "/CN=unrelated-ca"])  # fmt: skip
    run(["openssl", "req", "-keyout", "old.key", "-out", "old.csr"] + ec[:-2]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", "old.csr", "-out", "old.crt", "-days", "-1"] + sign)
    os.chmod(os.path.join(workdir, "old.key"), 0o644)
    run(["mosquitto_passwd", "-c", "-b", "passwd", "plug-user", "s3cret-Pw"])
    os.chmod(os.path.join(workdir, "passwd"), 0o644)
    os.chmod(os.path.join(workdir, "server.key"), 0o644)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl CLI needed to make test certs")
def test_tls_and_password_auth(tmp_path):
    pki = str(tmp_path / "pki")
    os.makedirs(pki)
    _make_pki(pki)
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    server = Broker(
        str(workdir),
        [
            "cafile {}/ca.crt".format(pki),
            "certfile {}/server.crt".format(pki),
            "keyfile {}/server.key".format(pki),
            "allow_anonymous false",
            "password_file {}/passwd".format(pki),
        ],
    )
    server.start()
    nodes = []
    try:
        peer = Peer(server.port, "h1", "tls1", pki + "/ca.crt", "plug-user", "s3cret-Pw")
        good = {"tls": True, "ca_file": pki + "/ca.crt", "username": "plug-user"}
        good["password"] = "s3cret-Pw"
        node = NodeProcess(str(tmp_path), server.port, "tls1", mqtt=good).start()
        nodes.append(node)
        peer.wait_for("status/heartbeat")
        node.wait_log("tls=1")
        peer.command("relay", "on", "tls-cmd")
        assert peer.wait_for("response/command")[2]["status"] == "success"
        wrong_pw = dict(good, password="wrong")
        bad = NodeProcess(str(tmp_path), server.port, "tls2", mqtt=wrong_pw).start()
        nodes.append(bad)
        bad.wait_log("not authorized", timeout=10)
        wrong_ca = dict(good, ca_file=pki + "/other-ca.crt")
        untrusted = NodeProcess(str(tmp_path), server.port, "tls3", mqtt=wrong_ca).start()
        nodes.append(untrusted)
        untrusted.wait_log("connect failed", timeout=10)
        assert "connected to" not in untrusted.log()
        # Issue 15.15: MicroPython's message spans lines; the log said only "ValueError:".
        untrusted.wait_log("TLS handshake refused: ValueError: The certificate is not correctly")
        wrong_host = dict(good, brokers=["localhost:{}".format(server.port)])
        mismatch = NodeProcess(str(tmp_path), server.port, "tls4", mqtt=wrong_host).start()
        nodes.append(mismatch)
        mismatch.wait_log("TLS handshake refused: ValueError: The certificate Common Name")
        old_dir = tmp_path / "expired-broker"
        old_dir.mkdir()
        expired_server = Broker(
            str(old_dir),
            [
                "cafile {}/ca.crt".format(pki),
                "certfile {}/old.crt".format(pki),
                "keyfile {}/old.key".format(pki),
                "allow_anonymous true",
            ],
        )
        expired_server.start()
        try:
            expired = NodeProcess(str(tmp_path), expired_server.port, "tls5", mqtt=good).start()
            nodes.append(expired)
            expired.wait_log("TLS handshake refused: ValueError: The certificate validity has")
        finally:
            expired_server.stop()
        for proc in nodes:
            assert "s3cret-Pw" not in proc.log()  # credentials never reach the logs
            assert "ValueError: \n" not in proc.log()
        peer.close()
    finally:
        for proc in nodes:
            proc.close()
        server.stop()


def test_garbage_commands_get_errors_and_node_keeps_working(node_factory, peer_factory):
    peer = peer_factory("n1")
    node = node_factory("n1").start()
    peer.wait_for("status/heartbeat")
    topic = peer.base + "command/"
    for sub, payload in (
        ("relay", b"{not json"),
        ("relay", b"[1, 2]"),
        ("relay", b'{"action": "on"}'),
        ("relay", b'{"action": "explode", "request_id": "bad-action"}'),
        ("teleport", b'{"action": "on", "request_id": "bad-command"}'),
        ("relay", b"\xff\xfe\x00"),
    ):
        peer.client.publish(topic + sub, payload, qos=1).wait_for_publish(5)
    errors = {"bad-action", "bad-command"}
    peer.wait(
        lambda: {m[2]["request_id"] for m in peer.get("response/command")} >= errors,
        what="error responses",
    )
    for msg in peer.get("response/command"):
        assert msg[2]["status"] == "error"
    peer.command("relay", "on", "good-after-garbage")
    assert peer.wait_for("response/command", lambda p: p["status"] == "success")
    assert node.proc.poll() is None


def test_hub_announcement_gets_birth_and_state_again(node_factory, peer_factory):
    """Retained state is an optimisation: a hub that (re)starts asks and gets it live."""
    peer = peer_factory("n1")
    node = node_factory("n1", relay=True, announce_spread_s=0.3).start()
    peer.wait_for("status/rssi")
    peer.wait_for("status/heartbeat", lambda p: p.get("relay") == "on" and p.get("led") == "on")
    t0 = time.monotonic()
    info = peer.client.publish("homesync/h1/hub/status", b'{"online": true}', qos=1)
    info.wait_for_publish(5)
    for name in ("status/online", "status/relay", "status/led", "status/firmware", "status/rssi"):
        msg = peer.wait_for(name, since=t0)
        assert msg[3] is False, name  # live, not the retained copy
    assert peer.get("status/led", since=t0)[0][2]["state"] == "on"
    assert peer.get("status/online", since=t0)[0][2]["online"] is True
    node.wait_log("session_present=0")


def test_node_rotates_to_next_broker_when_its_broker_dies(broker, tmp_path, peer_factory):
    other_dir = tmp_path / "broker2"
    other_dir.mkdir()
    second = Broker(str(other_dir))
    second.start()
    node = None
    try:
        brokers = ["127.0.0.1:{}".format(broker.port), "127.0.0.1:{}".format(second.port)]
        node = NodeProcess(str(tmp_path), broker.port, "n1", mqtt={"brokers": brokers}).start()
        peer = peer_factory("n1")
        peer.wait_for("status/heartbeat")
        node.wait_log("connected to 127.0.0.1:{}".format(broker.port))
        peer2 = peer_factory("n1", port=second.port)
        broker.stop()
        peer2.wait_for("status/online", lambda p: p["online"] is True, timeout=15)
        node.wait_log("connected to 127.0.0.1:{}".format(second.port))
        peer2.command("relay", "on", "on-second")
        assert peer2.wait_for("response/command")[2]["status"] == "success"
    finally:
        if node is not None:
            node.close()
        second.stop()
