"""OTA test harness (CPython only): a node that really reboots, and a bundle HTTP server.

* ``DeviceProcess``: ``firmware/device.py`` under real ``micropython``; every exit with status 75
  (reset) or 70 (crash) is followed by a new process after ``BOOT_DELAY_S``, like a board whose
  power stays on.  Each process is one boot: the OTA slot chosen by ``otaboot`` is imported.
* ``BundleServer``: a threaded HTTP server on a free loopback port serving one bundle with
  ``Range`` support; ``cut_after`` drops the first response's connection after N body bytes
  (a Wi-Fi drop mid-download).

Also loaded by path from the integration's end-to-end tests (``tests/e2e``).
"""

import http.server
import os
import subprocess
import sys
import threading
import time

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from harness import FIRMWARE_DIR, HEAPSIZE, MICROPYTHON, REPO_DIR, NodeProcess  # noqa: E402

EXIT_RESET = 75
EXIT_CRASH = 70
BOOT_DELAY_S = 0.3


class DeviceProcess(NodeProcess):
    """A simulated plug whose resets are real process restarts (see module docstring)."""

    def __init__(self, tmp, port, node_id, home="h1", relay=False, firmware=None, **config):
        super().__init__(
            tmp, port, node_id, home=home, runtime="micropython", relay=relay, **config
        )
        if firmware:
            self.spec["nodes"][0]["firmware"] = firmware
            self._write_spec()
        self.cmd = [
            MICROPYTHON,
            "-X",
            "heapsize=" + HEAPSIZE,
            os.path.join(FIRMWARE_DIR, "device.py"),
            self.spec_path,
        ]
        self.state_dir = self.spec["nodes"][0]["state_dir"]
        self.exits = []  # exit status of every boot that ended
        self._stopping = False
        self._thread = None
        self._lock = threading.Lock()

    def _write_spec(self):
        import json

        with open(self.spec_path, "w") as handle:
            json.dump(self.spec, handle)

    def start(self, cmd=None, cwd=None):
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()
        return self

    def _spawn(self):
        with self._lock:
            self.proc = subprocess.Popen(
                self.cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_DIR
            )

    def _supervise(self):
        while True:
            code = self.proc.wait()
            self.exits.append(code)
            if self._stopping or code not in (EXIT_RESET, EXIT_CRASH):
                return
            time.sleep(BOOT_DELAY_S)
            if self._stopping:
                return
            self._spawn()

    def boots(self):
        return len(self.exits) + (1 if self.proc is not None and self.proc.poll() is None else 0)

    def wait_log(self, text, timeout=10.0, count=1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return True
            time.sleep(0.02)
        raise AssertionError("{!r} not in node log:\n{}".format(text, self.log()[-3000:]))

    def stop(self, timeout=5.0):
        self._stopping = True
        super().stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self):
        self._stopping = True
        self.kill()
        if self._thread is not None:
            self._thread.join(5)
        if self._log is not None:
            self._log.close()
            self._log = None


class BundleServer:
    """Serves ``data`` at ``/fw.hsfw`` with Range support; records every request's range."""

    def __init__(self, data):
        self.data = data
        self.ranges = []
        self.cut_after = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                return

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                body = server.data
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", "bytes {}-{}/{}".format(start, len(body) - 1, len(body))
                    )
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Connection", "close")
                self.end_headers()
                cut, server.cut_after = server.cut_after, None
                if cut is not None:
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self):
        return "http://127.0.0.1:{}/fw.hsfw".format(self.port)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
