"""OTA: bundle manifest, chunked download + verify, slots, probation and rollback (both runtimes).

Real files in a scratch directory and a real HTTP server on a loopback port; no mocks of the
code under test.
"""

import asyncio
import os

import otaboot
from otafakes import (
    FakeApp,
    HttpServer,
    cleanup,
    make_bundle,
    sample_files,
    scratch_dir,
    sha256_hex,
)

from homesync import ota, otaagent, otafetch


def _raises(fn, text=None):
    """The ``OtaError`` that ``fn()`` raises, checked for ``text`` (no pytest on MicroPython)."""
    caught = None
    try:
        fn()
    except otafetch.OtaError as err:
        caught = err
    assert caught is not None, "no OtaError"
    if text is not None:
        assert text in caught.reason, caught.reason
    return caught


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- manifest


def _manifest(files=None, **over):
    obj = {
        "format": 1,
        "version": "2.0.0",
        "files": files
        if files is not None
        else [{"path": "homesync/__init__.mpy", "size": 3, "sha256": "ab" * 32}],
    }
    for key, value in over.items():
        obj[key] = value
    return obj


def test_manifest_accepts_a_valid_file_list():
    files = [
        {"path": "homesync/__init__.mpy", "size": 10, "sha256": "0" * 64},
        {"path": "hal_esp32.mpy", "size": 0, "sha256": "f" * 64},
    ]
    assert otafetch.check_manifest(_manifest(files)) == [
        ("homesync/__init__.mpy", 10, "0" * 64),
        ("hal_esp32.mpy", 0, "f" * 64),
    ]


def test_manifest_rejects_unsafe_or_inconsistent_entries():
    good = {"path": "homesync/__init__.mpy", "size": 1, "sha256": "0" * 64}

    def entry(**over):
        out = {}
        for key, value in good.items():
            out[key] = value
        for key, value in over.items():
            out[key] = value
        return out

    bad_lists = [
        [good, entry(path="../boot.py")],
        [good, entry(path="/main.py")],
        [good, entry(path="homesync//x.mpy")],
        [good, entry(path="homesync/.hidden.mpy")],
        [good, entry(path="manifest.json")],
        [good, entry(path="otaboot.sh")],
        [good, entry(path="homesync/a b.mpy")],
        [good, good],
        [good, entry(path="x.mpy", size=-1)],
        [good, entry(path="x.mpy", size=True)],
        [good, entry(path="x.mpy", sha256="A" * 64)],
        [good, entry(path="x.mpy", sha256="0" * 63)],
        [entry(path="other/__init__.mpy")],
        [],
    ]
    for files in bad_lists:
        _raises(lambda files=files: otafetch.check_manifest(_manifest(files)), "bad bundle")
    _raises(lambda: otafetch.check_manifest(_manifest(format=2)), "format")
    _raises(lambda: otafetch.check_manifest(_manifest(version="")), "version")
    _raises(lambda: otafetch.check_manifest("x"), "format")


def test_bundle_header_line():
    assert otafetch.parse_magic(b"HSFW1 123\n") == 123
    for line in (b"HSFW2 123\n", b"HSFW1 12x\n", b"HSFW1 123", b"HSFW1 \n", b"HSFW1 9999999\n"):
        _raises(lambda line=line: otafetch.parse_magic(line), "bad bundle")


def test_free_flash_is_known():
    free = otafetch.free_bytes("/tmp")
    assert free is None or free > 0


def test_http_helpers():
    url = "http://127.0.0.1:8123/api/x?t=1"
    assert otafetch.parse_url(url) == ("127.0.0.1", 8123, "/api/x?t=1")
    assert otafetch.parse_url("http://host") == ("host", 80, "/")
    for url in ("https://h/x", "ftp://h", "http://:80/x", "http://u:p@h/x", "http://h:99999/"):
        _raises(lambda url=url: otafetch.parse_url(url), "download failed")
    assert otafetch.parse_status(b"HTTP/1.1 206 Partial Content\r\n") == 206
    assert otafetch.parse_status(b"garbage\r\n") == 0
    assert otafetch.parse_content_range(b"bytes 100-199/1000") == (100, 1000)
    assert otafetch.parse_content_range(b"items 1-2/3") is None


# --------------------------------------------------------------------------- unpack


def test_unpack_writes_every_file_and_the_manifest_last():
    root = scratch_dir()
    try:
        files = sample_files()
        path = root + "/b.hsfw"
        with open(path, "wb") as handle:
            handle.write(make_bundle(files))
        manifest = asyncio.run(otafetch.unpack(path, root + "/slot", "2.0.0"))
        assert manifest["version"] == "2.0.0"
        for rel, data in files:
            assert _read(root + "/slot/" + rel) == data
        assert otaboot.slot_complete(root + "/slot")
    finally:
        cleanup(root)


def test_unpack_rejects_a_file_that_does_not_match_the_manifest():
    root = scratch_dir()
    try:
        data = bytearray(make_bundle(sample_files()))
        data[-3] ^= 0x01  # flip a bit in the last file: same size, other content
        path = root + "/b.hsfw"
        with open(path, "wb") as handle:
            handle.write(bytes(data))
        _raises(
            lambda: asyncio.run(otafetch.unpack(path, root + "/slot")),
            "hal_esp32.py does not match its sha256",
        )
        assert not otaboot.slot_complete(root + "/slot")
        with open(path, "wb") as handle:
            handle.write(make_bundle(sample_files()) + b"x")
        _raises(lambda: asyncio.run(otafetch.unpack(path, root + "/slot2")), "size does not match")
        with open(path, "wb") as handle:
            handle.write(make_bundle(sample_files("3.0.0"), "3.0.0"))
        _raises(
            lambda: asyncio.run(otafetch.unpack(path, root + "/slot3", "2.0.0")),
            "version mismatch",
        )
    finally:
        cleanup(root)


# --------------------------------------------------------------------------- probation


def _fake_slot(root, slot):
    path = otaboot.slot_path(root, slot)
    otaboot.ensure_dir(path)
    with open(path + "/manifest.json", "w") as handle:
        handle.write("{}")
    return path


def test_fresh_node_runs_the_factory_modules():
    root = scratch_dir()
    try:
        assert otaboot.boot(root, lambda text: None) is None
        state = otaboot.load_state(root)
        assert state["active"] == "factory"
        assert otaboot.staging_slot(state) == "a"
        assert otaboot.installed_version(root) is None
    finally:
        cleanup(root)


def test_probation_passed_keeps_the_new_version():
    root = scratch_dir()
    try:
        path = _fake_slot(root, "a")
        otaboot.commit(root, "a", "2.0.0", "req-1")
        assert otaboot.on_probation(root)
        assert otaboot.boot(root, lambda text: None) == path  # the trial boot
        trial = otaboot.mark_good(root)
        assert trial["request_id"] == "req-1"
        assert trial["version"] == "2.0.0"
        assert otaboot.mark_good(root) is None
        for _ in range(3):  # later resets are ordinary
            assert otaboot.boot(root, lambda text: None) == path
        state = otaboot.load_state(root)
        assert state["active"] == "a"
        assert state["previous"] == "factory"
        assert otaboot.staging_slot(state) == "b"
        assert otaboot.installed_version(root) == "2.0.0"
        assert otaboot.take_report(root) is None
    finally:
        cleanup(root)


def test_reset_on_probation_rolls_back_and_leaves_a_report():
    root = scratch_dir()
    try:
        path_a = _fake_slot(root, "a")
        otaboot.commit(root, "a", "2.0.0", "req-1")
        otaboot.boot(root, lambda text: None)
        otaboot.mark_good(root)
        _fake_slot(root, "b")
        otaboot.commit(root, "b", "3.0.0", "req-2")
        logs = []
        assert otaboot.boot(root, logs.append).endswith("/ota/b")  # trial boot of 3.0.0
        # It crashed or the watchdog fired before its first healthy cycle: next boot.
        assert otaboot.boot(root, logs.append) == path_a
        assert "rolled back" in logs[-1]
        state = otaboot.load_state(root)
        assert (state["active"], state["version"], state["probation"]) == ("a", "2.0.0", None)
        assert state["previous"] == "factory"  # a failed version is never a rollback target
        report = otaboot.take_report(root)
        assert report == {
            "request_id": "req-2",
            "status": "error",
            "error": "rolled back",
            "version": "3.0.0",
        }
        assert otaboot.take_report(root) is None
        assert otaboot.boot(root, logs.append) == path_a
    finally:
        cleanup(root)


def test_incomplete_slot_falls_back_to_factory():
    root = scratch_dir()
    try:
        otaboot.commit(root, "a", "2.0.0", "req-1")  # no manifest.json in ota/a
        assert otaboot.boot(root, lambda text: None) is None
        assert otaboot.load_state(root)["active"] == "factory"
    finally:
        cleanup(root)


def test_unreadable_state_file_means_factory():
    root = scratch_dir()
    try:
        otaboot.ensure_dir(root + "/ota")
        with open(root + "/ota/state.json", "w") as handle:
            handle.write("{not json")
        assert otaboot.boot(root, lambda text: None) is None
        with open(root + "/ota/state.json", "w") as handle:
            handle.write('{"active": "../../etc", "probation": 5}')
        assert otaboot.boot(root, lambda text: None) is None
    finally:
        cleanup(root)


# --------------------------------------------------------------------------- the agent


def _command(server, data, version="2.0.0", rid="req-1", sha=None):
    return {
        "name": "ota",
        "action": "update",
        "request_id": rid,
        "url": server.url(),
        "version": version,
        "sha256": sha or sha256_hex(data),
        "size": len(data),
        "timestamp": None,
        "ttl": 60,
    }


async def _run(app, cmd, setup=None):
    agent = otaagent.OtaAgent(app)
    agent.retry_delays = (0, 0, 0)
    if setup is not None:
        setup(agent)
    for msg in agent.command(cmd):
        await app._publish(msg)
    if agent.task is not None:
        await agent.task
    return agent


def _with_server(body, fn):
    async def main():
        server = await HttpServer(body).start()
        try:
            return await fn(server)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_update_downloads_verifies_installs_and_reboots():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)

        async def go(server):
            await _run(app, _command(server, data), lambda a: setattr(a, "progress_step", 25))
            return server.ranges

        assert _with_server(data, go) == [None]
        assert app.statuses() == [
            "downloading",
            "downloading",
            "downloading",
            "downloading",
            "downloading",
            "verifying",
            "installing",
            "rebooting",
        ]
        assert [m.get("progress") for m in app.ota()[:5]] == [0, 25, 50, 75, 100]
        assert all(m["request_id"] == "req-1" and m["version"] == "2.0.0" for m in app.ota())
        assert app.stopped == "ota"
        assert app.hal.resets == 1
        state = otaboot.load_state(root)
        assert (state["active"], state["version"]) == ("a", "2.0.0")
        assert state["probation"]["request_id"] == "req-1"
        assert _read(root + "/ota/a/homesync/extra.py") == sample_files()[1][1]
        assert not _exists(root + "/" + otafetch.PART)

        # The reboot: the new version on probation confirms after its first heartbeat.
        otaboot.boot(root, lambda text: None)
        after = FakeApp(root, firmware="2.0.0")
        agent = otaagent.OtaAgent(after)
        assert agent.on_probation
        busy = agent.command(_command_stub("req-9", "3.0.0"))
        assert "busy" in busy[0][1].decode()
        asyncio.run(agent.heartbeat_sent())
        asyncio.run(agent.heartbeat_sent())  # only once
        assert after.ota() == [{"request_id": "req-1", "status": "success", "version": "2.0.0"}]
        assert otaboot.load_state(root)["probation"] is None
    finally:
        cleanup(root)


def test_a_heap_too_fragmented_to_load_the_download_code_is_retried():
    """Importing the download code can fail right after the command although enough heap is
    free (fragmentation): the node retries after a collection instead of failing the update."""
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        failures = [otaagent.LOAD_ATTEMPTS - 1]

        def fragmented():
            if failures[0]:
                failures[0] -= 1
                raise MemoryError
            return otafetch

        def setup(agent):
            agent.import_fetch = fragmented
            agent.load_pause_s = 0

        app = FakeApp(root)
        _with_server(data, lambda server: _run(app, _command(server, data), setup))
        assert app.statuses()[-1] == "rebooting"
        assert failures == [0]

    finally:
        cleanup(root)
    root = scratch_dir()
    try:
        failures[0] = otaagent.LOAD_ATTEMPTS  # it never fits: the update fails and says why
        app = FakeApp(root)
        asyncio.run(_run(app, _command_stub("req-2", "3.0.0"), setup))
        assert app.ota()[-1] == {
            "request_id": "req-2",
            "status": "error",
            "version": "3.0.0",
            "error": "out of memory",
        }
        assert otaboot.load_state(root)["active"] == "factory"
    finally:
        cleanup(root)


def _command_stub(rid, version):
    return {
        "name": "ota",
        "action": "update",
        "request_id": rid,
        "url": "http://127.0.0.1:9/x",
        "version": version,
        "sha256": "0" * 64,
        "size": 10,
    }


def test_wrong_sha256_is_rejected_and_the_old_version_keeps_running():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)

        async def go(server):
            await _run(app, _command(server, data, sha="0" * 64))

        _with_server(data, go)
        last = app.ota()[-1]
        assert (last["status"], last["error"]) == ("error", "sha256 mismatch")
        assert "installing" not in app.statuses()
        assert app.hal.resets == 0
        assert app.stopped is None
        assert otaboot.load_state(root)["active"] == "factory"
        assert not _exists(root + "/" + otafetch.PART)  # a corrupt download is not kept
    finally:
        cleanup(root)


def test_download_cut_halfway_resumes_with_a_range_request():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)
        half = len(data) // 2

        async def go(server):
            server.cut_after = half
            await _run(app, _command(server, data))
            return server.ranges

        assert _with_server(data, go) == [None, "bytes={}-".format(half)]
        assert app.statuses()[-1] == "rebooting"
        assert otaboot.load_state(root)["active"] == "a"
    finally:
        cleanup(root)


def test_server_without_range_support_restarts_the_download():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)

        async def go(server):
            server.cut_after = len(data) // 3
            server.ignore_range = True
            await _run(app, _command(server, data))
            return server.ranges

        ranges = _with_server(data, go)
        assert len(ranges) == 2
        assert app.statuses()[-1] == "rebooting"
    finally:
        cleanup(root)


def test_interrupted_update_resumes_on_the_next_command():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)
        third = len(data) // 3

        async def first(server):
            server.cut_after = third

            def no_retries(agent):
                agent.retry_delays = ()

            await _run(app, _command(server, data), no_retries)

        _with_server(data, first)
        assert app.ota()[-1]["error"] == "download failed"
        assert app.hal.resets == 0

        async def second(server):
            await _run(app, _command(server, data, rid="req-2"))
            return server.ranges

        assert _with_server(data, second) == ["bytes={}-".format(third)]
        assert app.ota()[-1]["status"] == "rebooting"
    finally:
        cleanup(root)


def test_http_error_and_unreachable_server_fail_cleanly():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)

        async def go(server):
            server.status = 404
            await _run(app, _command(server, data))

        _with_server(data, go)
        assert app.ota()[-1]["error"] == "download failed: HTTP 404"

        async def unreachable():
            server = await HttpServer(data).start()
            await server.stop()  # nothing listens there any more
            await _run(app, _command(server, data, rid="req-2"))

        asyncio.run(unreachable())
        assert app.ota()[-1] == {
            "request_id": "req-2",
            "status": "error",
            "version": "2.0.0",
            "error": "download failed",
        }
        assert otaboot.load_state(root)["active"] == "factory"
    finally:
        cleanup(root)


def test_same_version_succeeds_without_download_and_duplicates_are_answered_again():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root, firmware="2.0.0")

        async def go(server):
            agent = await _run(app, _command(server, data))
            for msg in agent.command(_command(server, data)):  # the broker re-delivers it
                await app._publish(msg)
            return server.ranges

        assert _with_server(data, go) == []
        assert app.statuses() == ["success", "success"]
        assert app.hal.resets == 0
    finally:
        cleanup(root)


def test_second_update_while_one_runs_is_busy():
    root = scratch_dir()
    try:
        data = make_bundle(sample_files())
        app = FakeApp(root)

        async def go(server):
            server.stall = True
            agent = otaagent.OtaAgent(app)
            assert agent.command(_command(server, data)) == []
            await asyncio.sleep(0.05)
            assert agent.command(_command(server, data)) == []  # same request: running
            other = agent.command(_command(server, data, rid="req-2", version="2.0.1"))
            agent.task.cancel()
            try:
                await agent.task
            except asyncio.CancelledError:
                pass
            return other

        other = _with_server(data, go)
        assert '"busy"' in other[0][1].decode()
    finally:
        cleanup(root)


def test_node_without_ota_support_says_so():
    root = scratch_dir()
    try:
        app = FakeApp(root, supported=False)
        agent = otaagent.OtaAgent(app)
        out = agent.command(_command_stub("req-1", "2.0.0"))
        assert "ota not supported by this node" in out[0][1].decode()
        asyncio.run(agent.on_connected())
        asyncio.run(agent.heartbeat_sent())
        assert app.sent == []
    finally:
        cleanup(root)


def test_rolled_back_version_is_reported_once_connected():
    root = scratch_dir()
    try:
        _fake_slot(root, "a")
        otaboot.commit(root, "a", "2.0.0", "req-7")
        otaboot.boot(root, lambda text: None)
        otaboot.boot(root, lambda text: None)  # the trial boot crashed
        app = FakeApp(root, firmware="1.0.0")
        agent = otaagent.OtaAgent(app)
        asyncio.run(agent.on_connected())
        asyncio.run(agent.on_connected())
        assert app.ota() == [
            {"request_id": "req-7", "status": "error", "error": "rolled back", "version": "2.0.0"}
        ]
    finally:
        cleanup(root)


def test_hooks_load_the_agent_only_when_there_is_work():
    root = scratch_dir()
    try:
        app = FakeApp(root)
        hooks = ota.OtaHooks(app)
        asyncio.run(hooks.on_connected())
        asyncio.run(hooks.heartbeat_sent())
        assert hooks.agent is None  # a node that is not updating does not pay for the agent
        _fake_slot(root, "a")
        otaboot.commit(root, "a", "2.0.0", "req-3")
        otaboot.boot(root, lambda text: None)
        after = FakeApp(root, firmware="2.0.0")
        hooks = ota.OtaHooks(after)
        asyncio.run(hooks.on_connected())
        asyncio.run(hooks.heartbeat_sent())
        assert after.ota() == [{"request_id": "req-3", "status": "success", "version": "2.0.0"}]
        fresh = ota.OtaHooks(FakeApp(scratch_dir()))
        out = fresh.command(_command_stub("req-4", "1.0.0"))  # already installed
        assert "success" in out[0][1].decode()
        cleanup(fresh.app.hal.fs_root)
    finally:
        cleanup(root)
