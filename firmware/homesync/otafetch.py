"""OTA download and unpack: the code an update needs only while it runs.

Imported by ``homesync/ota.py`` when an update starts (it costs ~15 KiB of heap on the 64-bit
unix port, about half on an ESP32, so a node that is not updating does not pay for it).  Bundle
format, streamed HTTP GET with ``Range`` resume, sha256 while streaming, verified unpack into a
slot; see ``homesync/ota.py`` for the whole flow and docs/protocol.md for the wire format.
"""

import asyncio
import binascii
import hashlib
import json
import os

import otaboot

MAGIC = b"HSFW1 "
MAX_MANIFEST = 8192
MAX_FILES = 64
MAX_BUNDLE = 1048576  # the same limit as homesync/ota.py's
CHUNK = 1024
FLASH_MARGIN = 16384  # left free after download + unpack (config and state writes)
IO_TIMEOUT = 15
MAX_HEADER_LINES = 40
PART = "ota/download.part"
PART_META = "ota/download.json"
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
_EXTENSIONS = (".mpy", ".py", ".json")


class OtaError(Exception):
    """A failed update; ``reason`` is what ``response/ota`` carries in ``error``."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- bundle format


def parse_magic(line):
    """``b"HSFW1 123\\n"`` -> 123 (the manifest's length); raises ``OtaError``."""
    if not line.startswith(MAGIC) or not line.endswith(b"\n"):
        raise OtaError("bad bundle: not a HomeSync firmware bundle")
    digits = line[len(MAGIC) : -1]
    if not digits or len(digits) > 6 or not all(48 <= c <= 57 for c in digits):
        raise OtaError("bad bundle: bad header")
    length = int(digits)
    if not 2 <= length <= MAX_MANIFEST:
        raise OtaError("bad bundle: manifest too large")
    return length


def valid_path(path):
    """Relative, ``/``-separated, no ``..``, safe characters, a module or data extension."""
    if not isinstance(path, str) or not 1 <= len(path) <= 96 or path[0] == "/":
        return False
    for part in path.split("/"):
        if not part or part[0] == "." or not all(ch in _PATH_CHARS for ch in part):
            return False
    for ext in _EXTENSIONS:
        if path.endswith(ext):
            return path != "manifest.json"
    return False


def _hex(value):
    if not isinstance(value, str) or len(value) != 64:
        return False
    return all(c in "0123456789abcdef" for c in value)


def check_manifest(manifest):
    """Validate a decoded manifest; returns the list of ``(path, size, sha256)``."""
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise OtaError("bad bundle: unsupported format")
    version = manifest.get("version")
    if not isinstance(version, str) or not 1 <= len(version) <= 32:
        raise OtaError("bad bundle: no version")
    files = manifest.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise OtaError("bad bundle: bad file list")
    out = []
    seen = {}
    for entry in files:
        if not isinstance(entry, dict):
            raise OtaError("bad bundle: bad file entry")
        path = entry.get("path")
        size = entry.get("size")
        digest = entry.get("sha256")
        if not valid_path(path) or path in seen:
            raise OtaError("bad bundle: bad file path")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BUNDLE:
            raise OtaError("bad bundle: bad file size")
        if not _hex(digest):
            raise OtaError("bad bundle: bad file sha256")
        seen[path] = True
        out.append((path, size, digest))
    if "homesync/__init__.mpy" not in seen and "homesync/__init__.py" not in seen:
        raise OtaError("bad bundle: no homesync package")
    return out


def hexdigest(hasher):
    return binascii.hexlify(hasher.digest()).decode()


# --------------------------------------------------------------------------- file helpers


def join(root, rel):
    return root + "/" + rel if root else "/" + rel


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def remove_tree(path):
    """``rm -rf`` for a slot directory (files and sub-directories)."""
    try:
        names = os.listdir(path)
    except OSError:
        _remove(path)
        return
    for name in names:
        child = path + "/" + name
        if os.stat(child)[0] & 0x4000:
            remove_tree(child)
        else:
            _remove(child)
    try:
        os.rmdir(path)
    except OSError:
        pass


def free_bytes(path):
    """Free space of the file system holding ``path`` (``None`` when unknown)."""
    try:
        st = os.statvfs(path)
    except (AttributeError, OSError):
        return None
    return st[1] * st[4]  # f_frsize * f_bavail, the same order on MicroPython and CPython


def discard_download(root):
    _remove(join(root, PART))
    _remove(join(root, PART_META))


def _load_json(path):
    try:
        with open(path) as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(obj))
    os.rename(tmp, path)


async def hash_file(path, hasher, limit=None):
    """Feed the first ``limit`` bytes (all when ``None``) of ``path`` to ``hasher``."""
    done = 0
    with open(path, "rb") as handle:
        while limit is None or done < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - done)
            data = handle.read(want)
            if not data:
                break
            hasher.update(data)
            done += len(data)
            await asyncio.sleep(0)
    return done


async def unpack(bundle_path, dest, expected_version=None):
    """Unpack a verified bundle into the empty directory ``dest``, checking every file's sha256
    against the manifest.  ``manifest.json`` is written last: it marks the slot complete."""
    with open(bundle_path, "rb") as src:
        length = parse_magic(src.readline(16))
        raw = src.read(length)
        if len(raw) != length:
            raise OtaError("bad bundle: truncated manifest")
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise OtaError("bad bundle: manifest is not JSON")
        files = check_manifest(manifest)
        if expected_version is not None and manifest["version"] != expected_version:
            raise OtaError("version mismatch: bundle is {}".format(manifest["version"]))
        payload = _size(bundle_path) - len(MAGIC) - len(str(length)) - 1 - length
        if payload != sum(entry[1] for entry in files):
            raise OtaError("bad bundle: size does not match its manifest")
        otaboot.ensure_dir(dest)
        for path, size, digest in files:
            target = dest + "/" + path
            slash = target.rfind("/")
            otaboot.ensure_dir(target[:slash])
            hasher = hashlib.sha256()
            left = size
            with open(target, "wb") as out:
                while left:
                    data = src.read(min(CHUNK, left))
                    if not data:
                        raise OtaError("bad bundle: truncated")
                    hasher.update(data)
                    out.write(data)
                    left -= len(data)
                    await asyncio.sleep(0)
            if hexdigest(hasher) != digest:
                raise OtaError("bad bundle: {} does not match its sha256".format(path))
    _save_json(dest + "/manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- HTTP


def parse_url(url):
    """``http://host:port/path`` -> ``(host, port, path)``; only plain HTTP (a LAN server)."""
    if not isinstance(url, str) or not url.startswith("http://"):
        raise OtaError("download failed: only http:// URLs are supported")
    rest = url[7:]
    slash = rest.find("/")
    hostport = rest if slash < 0 else rest[:slash]
    path = "/" if slash < 0 else rest[slash:]
    port = 80
    if ":" in hostport:
        hostport, text = hostport.rsplit(":", 1)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise OtaError("download failed: bad port in url")
        port = int(text)
    if not hostport or "@" in hostport:
        raise OtaError("download failed: bad host in url")
    return hostport, port, path


def parse_status(line):
    """``b"HTTP/1.1 206 Partial Content\\r\\n"`` -> 206 (0 when unreadable)."""
    parts = line.split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return 0
    return int(parts[1])


def parse_content_range(value):
    """``b"bytes 100-199/1000"`` -> ``(100, 1000)``; ``None`` when unreadable."""
    if not value.startswith(b"bytes "):
        return None
    span, _, total = value[6:].partition(b"/")
    start, _, _end = span.partition(b"-")
    if not start.strip().isdigit():
        return None
    total = total.strip()
    return int(start.strip()), int(total) if total.isdigit() else None


def _close(writer):
    try:
        writer.close()
    except Exception:
        pass


async def http_get(url, offset, timeout=IO_TIMEOUT):
    """Open a GET (from byte ``offset``) -> ``(status, start, reader, writer)``; ``start`` is
    where the body begins in the file (``offset`` for a 206, 0 for a 200)."""
    host, port, path = parse_url(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        req = "GET {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n".format(path, host, port)
        req += "User-Agent: homesync-node\r\nAccept-Encoding: identity\r\n"
        if offset:
            req += "Range: bytes={}-\r\n".format(offset)
        writer.write((req + "\r\n").encode())
        await asyncio.wait_for(writer.drain(), timeout)
        status = parse_status(await asyncio.wait_for(reader.readline(), timeout))
        start = 0
        chunked = False
        for _ in range(MAX_HEADER_LINES):
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise OtaError("download failed: connection closed in headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-range":
                parsed = parse_content_range(value)
                if parsed is not None:
                    start = parsed[0]
            elif name == b"transfer-encoding" and value.lower() != b"identity":
                chunked = True
        else:
            raise OtaError("download failed: too many headers")
        if chunked:
            raise OtaError("download failed: chunked transfer encoding")
    except BaseException:
        _close(writer)
        raise
    if status != 206:
        start = 0
    return status, start, reader, writer


# --------------------------------------------------------------------------- download


async def download(agent, cmd, part):
    """Fill ``part`` with the bundle and check its sha256 (resuming what a previous
    attempt or command left behind for the same sha256)."""
    rid = cmd["request_id"]
    version = cmd["version"]
    want = cmd["sha256"].lower()
    size = cmd.get("size")
    otaboot.ensure_dir(join(agent.root, "ota"))
    meta_path = join(agent.root, PART_META)
    meta = _load_json(meta_path)
    if meta is None or meta.get("sha256") != want:
        _remove(part)
        _save_json(meta_path, {"sha256": want, "size": size})
    hasher = hashlib.sha256()
    have = _size(part)
    free = free_bytes(join(agent.root, "ota"))
    if size is not None and free is not None and free < 2 * size - max(have, 0) + FLASH_MARGIN:
        raise OtaError("not enough flash")  # the download plus the unpacked slot must fit
    if have < 0 or (size is not None and have > size):
        with open(part, "wb"):
            pass
        have = 0
    elif have:
        await hash_file(part, hasher, have)
        agent.hal.log("ota: resuming {} at byte {}".format(version, have))
    reported = -1
    attempt = 0
    while size is None or have < size:
        try:
            status, start, reader, writer = await http_get(cmd["url"], have)
        except (OSError, asyncio.TimeoutError) as err:
            attempt = await _retry(agent, attempt, "connect: {!r}".format(err))
            continue
        try:
            if status == 416 or (status == 200 and have):
                # The server cannot resume: start over.
                with open(part, "wb"):
                    pass
                hasher = hashlib.sha256()
                have = 0
                if status == 416:
                    raise OtaError("retry")
            elif status not in (200, 206):
                raise OtaError("download failed: HTTP {}".format(status))
            elif start != have:
                raise OtaError("download failed: server resumed at the wrong offset")
            with open(part, "ab") as out:
                while size is None or have < size:
                    want_n = CHUNK if size is None else min(CHUNK, size - have)
                    data = await asyncio.wait_for(reader.read(want_n), IO_TIMEOUT)
                    if not data:
                        break
                    hasher.update(data)
                    out.write(data)
                    have += len(data)
                    if size is not None:
                        step = have * 100 // size // agent.progress_step * agent.progress_step
                        if step > reported and step < 100:
                            reported = step
                            await agent.say(rid, "downloading", version, progress=step)
            if size is None:
                break
            if have < size:
                why = "connection closed at byte {}".format(have)
                attempt = await _retry(agent, attempt, why)
        except OtaError as err:
            if err.reason != "retry":
                raise
            attempt = await _retry(agent, attempt, "server could not resume")
        except (OSError, asyncio.TimeoutError) as err:
            attempt = await _retry(agent, attempt, "read: {!r}".format(err))
        finally:
            _close(writer)
    await agent.say(rid, "downloading", version, progress=100)
    if hexdigest(hasher) != want:
        _remove(part)
        _remove(meta_path)
        raise OtaError("sha256 mismatch")


async def _retry(agent, attempt, why):
    if attempt >= len(agent.retry_delays):
        agent.hal.log("ota: giving up: {}".format(why))
        raise OtaError("download failed")
    delay = agent.retry_delays[attempt]
    agent.hal.log("ota: download interrupted ({}), retrying in {} s".format(why, delay))
    await asyncio.sleep(delay)
    return attempt + 1
