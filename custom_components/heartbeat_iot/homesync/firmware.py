"""Firmware updates, pure logic: bundles, one-time download grants, update jobs, the queue.

No Home Assistant import (tests/test_library_boundary.py). The wire format of `command/ota` and
`response/ota` and the bundle format are in docs/protocol.md ("Firmware updates"); the node side
is firmware/homesync/ota.py. Time is injected (`now` arguments, UNIX seconds).

- `read_bundle` / `find_bundle`: a bundle file's manifest (version, release notes) and sha256;
  the newest bundle among files and folders.
- `Grants`: one-time download tokens, each bound to one node, one version and one bundle file,
  valid for one update (until it ends) and never longer than `GRANT_TTL`.
- `UpdateJob`: what one node's update is doing, driven by `response/ota` and by the version the
  node reports; decides success (only once the node runs the new version), failure and timeouts.
- `UpdateQueue`: at most `limit` updates at a time, the others wait in order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
import hashlib
import json
import os
from pathlib import Path
import secrets
from typing import Any, Final

from awesomeversion import AwesomeVersion, AwesomeVersionException

BUNDLE_MAGIC: Final = b"HSFW1 "
BUNDLE_SUFFIX: Final = ".hsfw"
MAX_MANIFEST: Final = 8192
MAX_BUNDLE: Final = 1024 * 1024  # the node's limit too (firmware/homesync/ota.py)
GRANT_TTL: Final = 1800.0  # a download URL is never valid longer than this
ANSWER_TIMEOUT: Final = 30.0  # command/ota sent, no response/ota yet
STALL_TIMEOUT: Final = 120.0  # no progress while downloading / verifying / installing
REBOOT_TIMEOUT: Final = 180.0  # "rebooting" until the node reports the new version
OTA_TTL: Final = 60  # the command's ttl: a node that gets it later answers "expired"


class BundleError(Exception):
    """A file that is not a usable firmware bundle."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A firmware bundle on disk."""

    path: Path
    version: str
    notes: str
    sha256: str
    size: int
    mtime: float

    @property
    def summary(self) -> str:
        """The first lines of the notes, within the 255 characters an update entity shows."""
        text = " ".join(line.strip(" -*#") for line in self.notes.splitlines() if line.strip())
        return text if len(text) <= 255 else text[:254] + "…"


def read_manifest(data: bytes) -> dict[str, Any]:
    """The manifest from the start of a bundle (raises `BundleError`)."""
    line, sep, rest = data.partition(b"\n")
    if not sep or not line.startswith(BUNDLE_MAGIC):
        raise BundleError("not a HomeSync firmware bundle")
    digits = line[len(BUNDLE_MAGIC) :]
    if not digits.isdigit() or not 2 <= int(digits) <= MAX_MANIFEST:
        raise BundleError("bad bundle header")
    length = int(digits)
    if len(rest) < length:
        raise BundleError("truncated manifest")
    try:
        manifest = json.loads(rest[:length])
    except ValueError as err:
        raise BundleError("manifest is not JSON") from err
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise BundleError("unsupported bundle format")
    version = manifest.get("version")
    if not isinstance(version, str) or not 1 <= len(version) <= 32:
        raise BundleError("bundle without a version")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise BundleError("bundle without files")
    header = len(line) + 1 + length
    declared = 0
    for entry in files:
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError("bad file entry")
        declared += size
    manifest["_header_size"] = header
    manifest["_payload_size"] = declared
    return manifest


def read_bundle(path: Path) -> Bundle:
    """Read and hash one bundle file (blocking: run it in the executor)."""
    try:
        stat = path.stat()
        if stat.st_size > MAX_BUNDLE:
            raise BundleError("larger than 1 MiB")
        data = path.read_bytes()
    except OSError as err:
        raise BundleError(f"unreadable: {err.strerror or err}") from err
    manifest = read_manifest(data[: MAX_MANIFEST + 64])
    if manifest["_header_size"] + manifest["_payload_size"] != len(data):
        raise BundleError("size does not match its manifest")
    notes = manifest.get("notes")
    return Bundle(
        path=path,
        version=manifest["version"],
        notes=notes if isinstance(notes, str) else "",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mtime=stat.st_mtime,
    )


def _candidates(places: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for place in places:
        if place.is_file():
            out.append(place)
        elif place.is_dir():
            out.extend(
                sorted(p for p in place.iterdir() if p.name.endswith(BUNDLE_SUFFIX) and p.is_file())
            )
    return out


def version_key(version: str) -> tuple[int, AwesomeVersion | str]:
    """Sort key: comparable versions by AwesomeVersion, anything else below them."""
    try:
        parsed = AwesomeVersion(version)
        _ = parsed > AwesomeVersion("0")  # raises for versions it cannot compare
    except AwesomeVersionException:
        return (0, version)
    return (1, parsed)


def find_bundle(places: Iterable[Path], errors: dict[str, str] | None = None) -> Bundle | None:
    """The newest readable bundle among files and folders (blocking). Unreadable files are
    skipped and reported in `errors` (path -> reason)."""
    best: Bundle | None = None
    for path in _candidates(places):
        try:
            bundle = read_bundle(path)
        except BundleError as err:
            if errors is not None:
                errors[str(path)] = str(err)
            continue
        if best is None or _newer(bundle, best):
            best = bundle
    return best


def _newer(a: Bundle, b: Bundle) -> bool:
    ka, kb = version_key(a.version), version_key(b.version)
    if ka[0] != kb[0]:
        return ka[0] > kb[0]
    try:
        if ka[1] != kb[1]:
            return bool(ka[1] > kb[1])
    except (AwesomeVersionException, TypeError):
        pass
    return a.mtime > b.mtime


# --------------------------------------------------------------------------- grants


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission to download one bundle, for one node's update."""

    token: str
    node_id: str
    version: str
    path: Path
    expires: float


class Grants:
    """One-time download tokens (random, 256 bits), looked up by the HTTP view."""

    def __init__(self) -> None:
        """No grant yet."""
        self._grants: dict[str, Grant] = {}

    def issue(self, node_id: str, bundle: Bundle, now: float, ttl: float = GRANT_TTL) -> Grant:
        """A new token for `node_id` to fetch `bundle`; earlier tokens of the node end."""
        self.revoke_node(node_id)
        grant = Grant(
            token=secrets.token_urlsafe(32),
            node_id=node_id,
            version=bundle.version,
            path=bundle.path,
            expires=now + ttl,
        )
        self._grants[grant.token] = grant
        return grant

    def get(self, token: str, now: float) -> Grant | None:
        """The live grant of `token` (expired ones are dropped)."""
        grant = self._grants.get(token)
        if grant is None:
            return None
        if now >= grant.expires:
            del self._grants[token]
            return None
        return grant

    def revoke_node(self, node_id: str) -> None:
        """End every grant of `node_id` (its update finished)."""
        for token in [t for t, g in self._grants.items() if g.node_id == node_id]:
            del self._grants[token]

    def __len__(self) -> int:
        """Number of grants held (expired ones included until looked up)."""
        return len(self._grants)


# --------------------------------------------------------------------------- jobs


class Phase(StrEnum):
    """Where one node's update is."""

    QUEUED = "queued"  # waiting for a free slot (UpdateQueue)
    SENT = "sent"  # command/ota published, no answer yet
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    CONFIRMING = "confirming"  # the node said success; waiting for it to report the version
    DONE = "done"
    FAILED = "failed"


# response/ota error texts -> translation keys (strings.json "exceptions"); anything else is
# "update_failed" with the node's text as placeholder.
ERROR_KEYS: Final = {
    "sha256 mismatch": "update_sha256_mismatch",
    "rolled back": "update_rolled_back",
    "download failed": "update_download_failed",
    "busy": "update_busy",
    "not enough flash": "update_no_space",
    "ota not supported by this node": "update_not_supported",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an update failed: a translation key and its placeholders."""

    key: str
    reason: str = ""


@dataclass(slots=True)
class UpdateJob:
    """One node's update to `version`, identified on the wire by `request_id`."""

    node_id: str
    version: str
    request_id: str
    phase: Phase = Phase.QUEUED
    progress: int | None = None
    deadline: float | None = None
    failure: Failure | None = None
    _seen: set[str] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        """Done or failed."""
        return self.phase in (Phase.DONE, Phase.FAILED)

    def sent(self, now: float) -> None:
        """command/ota was published."""
        self.phase = Phase.SENT
        self.deadline = now + ANSWER_TIMEOUT

    def fail(self, key: str, reason: str = "") -> None:
        """End the job with a failure."""
        self.phase = Phase.FAILED
        self.failure = Failure(key, reason)
        self.deadline = None

    def _done(self) -> None:
        self.phase = Phase.DONE
        self.progress = 100
        self.deadline = None

    def on_response(self, payload: Mapping[str, Any], firmware: str | None, now: float) -> bool:
        """Apply a response/ota of this job; `firmware` is the version the node reports now.
        Returns True when the job changed."""
        if self.finished or self.phase is Phase.QUEUED:
            return False
        status = payload.get("status")
        if status == "downloading":
            progress = payload.get("progress")
            if isinstance(progress, int) and not isinstance(progress, bool):
                self.progress = max(0, min(100, progress))
            self.phase = Phase.DOWNLOADING
            self.deadline = now + STALL_TIMEOUT
        elif status in ("verifying", "installing"):
            self.phase = Phase(status)
            self.deadline = now + STALL_TIMEOUT
        elif status == "rebooting":
            self.phase = Phase.REBOOTING
            self.deadline = now + REBOOT_TIMEOUT
        elif status == "success":
            if firmware == self.version:
                self._done()
            else:
                self.phase = Phase.CONFIRMING
                self.deadline = now + REBOOT_TIMEOUT
        elif status == "error":
            reason = str(payload.get("error") or "unknown error")[:200]
            key = ERROR_KEYS.get(reason)
            if key is None and reason.startswith("download failed"):
                key = "update_download_failed"
            self.fail(key or "update_failed", reason)
        elif status == "expired":
            self.fail("update_expired")
        else:
            return False
        return True

    def on_firmware(self, firmware: str | None) -> bool:
        """The node reported its version; success once it is the new one after the reboot.
        Returns True when the job changed."""
        if self.finished or firmware != self.version:
            return False
        if self.phase in (Phase.REBOOTING, Phase.CONFIRMING, Phase.INSTALLING):
            self._done()
            return True
        return False

    def check(self, now: float) -> bool:
        """Fail the job if its current phase took too long; True when it did."""
        if self.finished or self.deadline is None or now < self.deadline:
            return False
        if self.phase is Phase.SENT:
            self.fail("update_no_answer")
        elif self.phase in (Phase.REBOOTING, Phase.CONFIRMING):
            self.fail("update_not_confirmed")
        else:
            self.fail("update_stalled", self.phase.value)
        return True


def ota_command(job: UpdateJob, url: str, bundle: Bundle, now: float) -> dict[str, Any]:
    """The `command/ota` payload of `job` (docs/protocol.md, "Firmware updates")."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "action": "update",
        "request_id": job.request_id,
        "timestamp": stamp,
        "ttl": OTA_TTL,
        "url": url,
        "version": bundle.version,
        "sha256": bundle.sha256,
        "size": bundle.size,
    }


# --------------------------------------------------------------------------- queue


class UpdateQueue:
    """At most `limit` updates run at once; the rest wait in submission order."""

    def __init__(self, limit: int) -> None:
        """`limit` >= 1 concurrent updates."""
        self.limit = max(1, limit)
        self._running: dict[str, UpdateJob] = {}
        self._waiting: OrderedDict[str, UpdateJob] = OrderedDict()

    def submit(self, job: UpdateJob) -> bool:
        """Queue `job`; True when it may start now. A node has at most one job."""
        if job.node_id in self._running or job.node_id in self._waiting:
            raise ValueError(f"{job.node_id} already has an update")
        if len(self._running) < self.limit:
            self._running[job.node_id] = job
            return True
        self._waiting[job.node_id] = job
        return False

    def finish(self, node_id: str) -> list[UpdateJob]:
        """`node_id`'s job ended (or was cancelled); returns the jobs that may start now."""
        self._running.pop(node_id, None)
        self._waiting.pop(node_id, None)
        started: list[UpdateJob] = []
        while self._waiting and len(self._running) < self.limit:
            _node, job = self._waiting.popitem(last=False)
            self._running[job.node_id] = job
            started.append(job)
        return started

    def job(self, node_id: str) -> UpdateJob | None:
        """The running or waiting job of `node_id`."""
        return self._running.get(node_id) or self._waiting.get(node_id)

    def running(self) -> list[UpdateJob]:
        """Jobs holding a slot."""
        return list(self._running.values())

    def waiting(self) -> list[UpdateJob]:
        """Jobs waiting for a slot, in order."""
        return list(self._waiting.values())


def bundle_places(option: str | None, defaults: Iterable[Path]) -> list[Path]:
    """Where to look for bundles: the user's option (a file or folder) wins over the defaults."""
    if option and option.strip():
        return [Path(os.path.expanduser(option.strip()))]
    return list(defaults)
