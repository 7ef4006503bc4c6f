"""Helpers for the OTA unit tests, on CPython and MicroPython alike.

* ``scratch_dir()``: a fresh directory under /tmp (MicroPython has no ``tempfile``)
* ``make_bundle(files, version)``: bundle bytes in the format of ``firmware/bundle.py``
* ``HttpServer``: an asyncio HTTP/1.1 file server on a loopback port with ``Range`` support and
  fault injection (cut the connection after N body bytes, ignore ranges, fail with a status)
* ``FakeApp``: what ``OtaAgent`` needs from ``App`` (node, publish, stop, tasks)
"""

import asyncio
import binascii
import hashlib
import json
import os
import random

from fakes import FakeHAL, parsed

from homesync.node import Node
from homesync.otafetch import remove_tree

BASE = "homesync/home1/nodes/plug-1/"


def scratch_dir():
    path = "/tmp/hs-ota-test-{}".format(binascii.hexlify(os.urandom(6)).decode())
    os.mkdir(path)
    return path


def sha256_hex(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def make_bundle(files, version="2.0.0", notes=""):
    """``files``: list of ``(path, bytes)``; returns the bundle's bytes."""
    entries = []
    for path, data in files:
        entries.append({"path": path, "size": len(data), "sha256": sha256_hex(data)})
    manifest = json.dumps(
        {"format": 1, "version": version, "notes": notes, "files": entries}
    ).encode()
    out = b"HSFW1 " + str(len(manifest)).encode() + b"\n" + manifest
    for _path, data in files:
        out += data
    return out


def sample_files(version="2.0.0"):
    return [
        ("homesync/__init__.py", 'VERSION = "{}"\n'.format(version).encode()),
        ("homesync/extra.py", b"VALUE = 42\n" * 300),
        ("hal_esp32.py", b"# hal\n"),
    ]


class HttpServer:
    """Serves ``body`` at any path; records each request's ``Range`` header (or ``None``)."""

    def __init__(self, body):
        self.body = body
        self.port = None
        self.ranges = []
        self.cut_after = None  # body bytes sent before the first response is cut (once)
        self.ignore_range = False
        self.status = None  # e.g. 404 for every request
        self.stall = False  # send headers, then nothing (the client must time out)
        self._server = None

    async def start(self):
        self._release = asyncio.Event()
        for _ in range(40):
            port = 20000 + int(random.getrandbits(15)) % 40000
            try:
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
            except OSError:
                continue
            self.port = port
            return self
        raise OSError("no free port")

    def url(self, path="/fw/bundle.hsfw"):
        return "http://127.0.0.1:{}{}".format(self.port, path)

    async def stop(self):
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader, writer):
        try:
            await self._serve(reader, writer)
        except Exception:
            pass
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass

    async def _serve(self, reader, writer):
        await reader.readline()
        rng = None
        while True:
            line = await reader.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"range":
                rng = value.strip().decode()
        self.ranges.append(rng)
        if self.status is not None:
            head = "HTTP/1.1 {} Nope\r\nContent-Length: 0\r\n\r\n".format(self.status)
            writer.write(head.encode())
            await writer.drain()
            return
        body = self.body
        start = 0
        if rng is not None and not self.ignore_range:
            start = int(rng[len("bytes=") :].split("-")[0])
            head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{}\r\n".format(
                start, len(body) - 1, len(body)
            )
        else:
            head = "HTTP/1.1 200 OK\r\n"
        part = body[start:]
        head += "Content-Length: {}\r\nConnection: close\r\n\r\n".format(len(part))
        writer.write(head.encode())
        await writer.drain()
        if self.stall:
            await self._release.wait()
            return
        if self.cut_after is not None:
            cut = self.cut_after
            self.cut_after = None
            writer.write(part[:cut])
            await writer.drain()
            return
        pos = 0
        while pos < len(part):
            writer.write(part[pos : pos + 4096])
            await writer.drain()
            pos += 4096


class FakeApp:
    """The parts of ``App`` the OTA agent uses; published messages land in ``sent``."""

    def __init__(self, root, firmware="1.0.0", supported=True):
        hal = FakeHAL()
        hal.fs_root = root
        hal.ota_supported = supported
        hal.resets = 0

        def reset():
            hal.resets += 1

        hal.reset = reset
        self.hal = hal
        self.node = Node(hal, {"home_id": "home1", "node_id": "plug-1"}, {}, firmware)
        self.node.boot()
        self.sent = []
        self.tasks = {}
        self.stopped = None

    async def _publish(self, msg):
        self.sent.append(msg)
        return True

    async def stop(self, reason="shutdown"):
        self.stopped = reason

    def ota(self):
        """``response/ota`` payloads published so far, as dicts (without the timestamp)."""
        out = []
        for msg in self.sent:
            topic, obj, qos, retain = parsed(msg)
            if topic == BASE + "response/ota":
                assert (qos, retain) == (1, False)
                obj.pop("timestamp", None)
                out.append(obj)
        return out

    def statuses(self):
        return [obj["status"] for obj in self.ota()]


def cleanup(path):
    remove_tree(path)
