"""The OTA agent: one update at a time, as its own task, reported on ``response/ota``.

Created by ``homesync/ota.py`` on first use (the whole flow is described there); the download
and unpack code (``homesync/otafetch.py``) is imported only while an update runs.
"""

import asyncio
import gc
import json
import sys

import otaboot

from homesync.protocol import iso_utc

MAX_BUNDLE = 1048576
LOAD_ATTEMPTS = 4  # tries to import the download code (see OtaAgent.load_fetch)
LOAD_PAUSE_S = 0.5


def _import_fetch():
    from homesync import otafetch

    return otafetch


# --------------------------------------------------------------------------- the agent


class OtaAgent:
    """Runs updates for an ``App``: one at a time, as its own task, reporting on response/ota."""

    def __init__(self, app):
        self.app = app
        self.hal = app.hal
        self.node = app.node
        self.root = getattr(self.hal, "fs_root", None)
        self.task = None
        self.current = None
        self.answered = {}  # request_id -> last response of a finished update (small, bounded)
        self.import_fetch = _import_fetch  # tests replace it to simulate a fragmented heap
        self.load_pause_s = LOAD_PAUSE_S
        self.retry_delays = (1, 2, 4, 8, 8)
        self.progress_step = 10
        self.on_probation = self.supported() and otaboot.on_probation(self.root)

    def supported(self):
        return self.root is not None and bool(getattr(self.hal, "ota_supported", False))

    def busy(self):
        return self.task is not None and not self.task.done()

    # ----------------------------------------------------------------- messages

    def message(self, request_id, status, version=None, progress=None, error=None):
        obj = {"request_id": request_id, "status": status}
        if version is not None:
            obj["version"] = version
        if progress is not None:
            obj["progress"] = int(progress)
        if error is not None:
            obj["error"] = error
        now = self.node.now()
        if now is not None:
            obj["timestamp"] = iso_utc(now)
        return (self.node.topic("response", "ota"), json.dumps(obj).encode(), 1, False)

    async def say(self, request_id, status, version=None, progress=None, error=None):
        msg = self.message(request_id, status, version, progress, error)
        if status in ("success", "error"):
            self._remember(request_id, msg)
        await self.app._publish(msg)

    def _remember(self, request_id, msg):
        self.answered[request_id] = msg
        while len(self.answered) > 8:
            for key in self.answered:
                del self.answered[key]
                break

    # ----------------------------------------------------------------- command entry

    def command(self, cmd):
        """Handle a validated, unexpired ``command/ota``; returns messages to publish now."""
        rid = cmd["request_id"]
        version = cmd["version"]
        if not self.supported():
            return [self.message(rid, "error", version, error="ota not supported by this node")]
        if rid in self.answered:
            return [self.answered[rid]]
        if self.busy():
            if rid == self.current:
                return []  # a re-delivery of the update that is running
            return [self.message(rid, "error", version, error="busy")]
        if self.on_probation:
            return [self.message(rid, "error", version, error="busy")]
        if version == self.node.firmware:
            msg = self.message(rid, "success", version)
            self._remember(rid, msg)
            return [msg]
        size = cmd.get("size")
        if size is not None and (not 0 < size <= MAX_BUNDLE):
            msg = self.message(rid, "error", version, error="bundle too large")
            self._remember(rid, msg)
            return [msg]
        self.current = rid
        self.task = asyncio.create_task(self.run(cmd))
        self.app.tasks["ota"] = self.task  # a reset (App.kill) cancels it with the others
        return []

    async def run(self, cmd):
        rid = cmd["request_id"]
        version = cmd["version"]
        otafetch = await self.load_fetch()
        if otafetch is None:
            await self.say(rid, "error", version, error="out of memory")
            return
        try:
            await self.install(otafetch, cmd)
        except otafetch.OtaError as err:
            self.hal.log("ota: {} failed: {}".format(version, err.reason))
            await self.say(rid, "error", version, error=err.reason)
        except MemoryError:
            self.hal.log("ota: out of memory")
            await self.say(rid, "error", version, error="out of memory")
        except Exception as err:
            self.hal.log("ota: {} failed: {!r}".format(version, err))
            await self.say(rid, "error", version, error="install failed")

    async def load_fetch(self):
        """Import the download code, only while updating (it costs heap).

        Compiling it needs large contiguous blocks; right after a command the heap can be too
        fragmented for that although enough is free (seen in 1 of 7 updates on a 256 KiB heap),
        so a failed import is retried after a collection and a pause, in which the buffers of
        the command that started the update and of other tasks are released.
        """
        for attempt in range(LOAD_ATTEMPTS):
            try:
                return self.import_fetch()
            except MemoryError:
                sys.modules.pop("homesync.otafetch", None)  # a half-made module would stay
                gc.collect()
                if attempt + 1 < LOAD_ATTEMPTS:
                    self.hal.log("ota: out of memory loading the download code, retrying")
                    await asyncio.sleep(self.load_pause_s)
        self.hal.log("ota: out of memory loading the download code")
        return None

    async def install(self, fetch, cmd):
        rid = cmd["request_id"]
        version = cmd["version"]
        root = self.root
        part = fetch.join(root, fetch.PART)
        await self.say(rid, "downloading", version, progress=0)
        await fetch.download(self, cmd, part)
        await self.say(rid, "verifying", version)
        state = otaboot.load_state(root)
        slot = otaboot.staging_slot(state)
        if state["previous"] == slot:  # that old copy is about to be overwritten
            state["previous"] = otaboot.FACTORY
            state["previous_version"] = None
            otaboot.save_state(root, state)
        dest = otaboot.slot_path(root, slot)
        fetch.remove_tree(dest)
        try:
            await fetch.unpack(part, dest, version)
        except BaseException:
            fetch.remove_tree(dest)
            raise
        await self.say(rid, "installing", version)
        otaboot.commit(root, slot, version, rid)
        fetch.discard_download(root)
        self.hal.log("ota: {} installed in slot {}, rebooting".format(version, slot))
        await self.say(rid, "rebooting", version)
        await self.app.stop("ota")
        self.hal.reset()

    # ----------------------------------------------------------------- probation hooks

    async def on_connected(self):
        """Publish a pending rollback report (the old version is running again)."""
        if not self.supported():
            return
        report = otaboot.take_report(self.root)
        if report is not None and report.get("request_id"):
            self.hal.log("ota: reporting rollback of {}".format(report.get("version")))
            await self.say(
                report["request_id"], "error", report.get("version"), error="rolled back"
            )

    async def heartbeat_sent(self):
        """After a healthy cycle (connected, heartbeat published): end probation, confirm."""
        if not self.on_probation:
            return
        self.on_probation = False
        trial = otaboot.mark_good(self.root)
        if trial is not None:
            self.hal.log("ota: {} proved healthy, marked good".format(trial.get("version")))
            if trial.get("request_id"):
                await self.say(trial["request_id"], "success", trial.get("version"))
