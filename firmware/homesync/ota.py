"""Application OTA, run-time half: download a firmware bundle, verify, install into a slot.

``App`` holds an ``OtaHooks``; it costs almost no heap.  The agent (``homesync/otaagent.py``)
is imported on the first ``command/ota``, or at boot when ``ota/state.json`` exists (a version
on probation to confirm, a rollback to report); the download code only while an update runs.

``command/ota`` (docs/protocol.md, "Firmware updates")::

    {"action": "update", "url": "http://…", "version": "0.2.0", "sha256": "<64 hex>",
     "size": 123456, "request_id": "…", "timestamp": "…", "ttl": 60}

What the node does, reporting each step on ``response/ota``:

1. ``downloading`` (``progress`` 0-100 in steps of 10): HTTP GET in 1 KiB chunks, appended to
   ``ota/download.part`` and hashed while streaming (memory stays bounded whatever the size).
   A dropped connection is resumed with ``Range: bytes=N-`` (the part file is re-hashed from
   flash first: MicroPython's sha256 cannot be copied); a server that ignores the range makes
   the download restart from zero.  ``RETRIES`` attempts, then ``error: download failed``; the
   part file stays, so the next command for the same sha256 resumes where this one stopped.
2. ``verifying``: the sha256 of the whole bundle must equal the command's (else
   ``error: sha256 mismatch``, the part is deleted, the running version is untouched); then the
   bundle is unpacked into the slot that is not running, each file checked against the sha256
   in the bundle's manifest.
3. ``installing``: ``otaboot.commit`` switches slots with one atomic rename of
   ``ota/state.json``; the old version stays in its slot.
4. ``rebooting``: graceful MQTT stop, reset.  The new version runs on probation (see
   ``otaboot``); after its first heartbeat it is marked good and answers ``success``.

An update to the version already running answers ``success`` at once without downloading; a
second update while one runs (or while the new version is still on probation) gets
``error: busy``; a late command gets ``expired`` (checked in ``Node.command``).

Bundle format (written by ``firmware/bundle.py``)::

    b"HSFW1 <manifest length>\\n" + manifest JSON + file contents in manifest order
    manifest: {"format": 1, "version": "0.2.0", "notes": "…",
               "files": [{"path": "homesync/app.mpy", "size": 1234, "sha256": "…"}, …]}
"""

import os


class OtaHooks:
    """What ``App`` calls; forwards to the agent, importing it only when there is work."""

    def __init__(self, app):
        self.app = app
        self.agent = None
        root = getattr(app.hal, "fs_root", None)
        self.pending = False  # True when a state file says something may be pending
        if root is not None:
            try:
                os.stat((root or "") + "/ota/state.json")
                self.pending = True
            except OSError:
                pass

    def get(self):
        if self.agent is None:
            from homesync.otaagent import OtaAgent

            self.agent = OtaAgent(self.app)
        return self.agent

    def command(self, cmd):
        """A validated, unexpired ``command/ota`` -> messages to publish now."""
        return self.get().command(cmd)

    async def on_connected(self):
        if self.pending or self.agent is not None:
            await self.get().on_connected()

    async def heartbeat_sent(self):
        if self.pending or self.agent is not None:
            await self.get().heartbeat_sent()
