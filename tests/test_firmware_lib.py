"""The pure firmware-update library (homesync/firmware.py): bundles, grants, jobs, queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_components.heartbeat_iot.homesync import firmware as fw

from .test_update import make_bundle


def test_read_bundle_checks_header_manifest_and_size(tmp_path: Path) -> None:
    good = tmp_path / "a.hsfw"
    good.write_bytes(make_bundle("1.2.3", "notes"))
    bundle = fw.read_bundle(good)
    assert (bundle.version, bundle.notes, bundle.size) == ("1.2.3", "notes", good.stat().st_size)
    for data, reason in (
        (b"PK\x03\x04zip", "not a HomeSync firmware bundle"),
        (b"HSFW1 xx\n{}", "bad bundle header"),
        (b"HSFW1 50\n{}", "truncated manifest"),
        (b"HSFW1 2\n{}", "unsupported bundle format"),
        (make_bundle("1.2.3") + b"!", "size does not match"),
        (make_bundle("1.2.3")[:-1], "size does not match"),
    ):
        bad = tmp_path / "bad.hsfw"
        bad.write_bytes(data)
        with pytest.raises(fw.BundleError, match=reason):
            fw.read_bundle(bad)
    with pytest.raises(fw.BundleError, match="unreadable"):
        fw.read_bundle(tmp_path / "missing.hsfw")


def test_find_bundle_prefers_the_newest_version(tmp_path: Path) -> None:
    for version in ("0.9.0", "0.10.0", "0.2.0"):
        (tmp_path / f"homesync-{version}.hsfw").write_bytes(make_bundle(version))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "homesync-99.hsfw").write_bytes(b"garbage")
    errors: dict[str, str] = {}
    best = fw.find_bundle([tmp_path, tmp_path / "nowhere"], errors)
    assert best is not None
    assert best.version == "0.10.0"  # 10 > 9 > 2, not string order
    assert list(errors) == [str(tmp_path / "homesync-99.hsfw")]
    assert fw.find_bundle([tmp_path / "homesync-0.2.0.hsfw"]).version == "0.2.0"  # type: ignore[union-attr]
    assert fw.find_bundle([]) is None
    assert fw.bundle_places(" ", [tmp_path]) == [tmp_path]
    assert fw.bundle_places("~/x", [tmp_path]) == [Path.home() / "x"]


def test_summary_fits_an_update_entity() -> None:
    bundle = fw.Bundle(Path("x"), "1", "## Title\n- " + "word " * 100, "0" * 64, 1, 0.0)
    assert len(bundle.summary) == 255
    assert bundle.summary.startswith("Title word")


def test_grants_are_random_bound_and_short_lived(tmp_path: Path) -> None:
    bundle = fw.Bundle(tmp_path / "b.hsfw", "1.0", "", "0" * 64, 10, 0.0)
    grants = fw.Grants()
    first = grants.issue("n1", bundle, now=1000.0)
    other = grants.issue("n2", bundle, now=1000.0)
    assert len(first.token) >= 43  # 256 random bits
    assert first.token != other.token
    assert grants.get(first.token, 1000.0 + fw.GRANT_TTL - 1) == first
    again = grants.issue("n1", bundle, now=1100.0)  # a new update ends the node's old grant
    assert grants.get(first.token, 1100.0) is None
    assert grants.get(again.token, 1100.0 + fw.GRANT_TTL) is None  # expired
    assert grants.get("nope", 0.0) is None
    grants.revoke_node("n2")
    assert grants.get(other.token, 1000.0) is None
    assert len(grants) == 0


def test_job_follows_the_node_and_needs_the_new_version() -> None:
    job = fw.UpdateJob("n1", "2.0", "rid")
    assert not job.on_response({"status": "downloading"}, "1.0", 0.0)  # still queued
    job.sent(0.0)
    assert not job.check(fw.ANSWER_TIMEOUT - 1)
    assert job.on_response({"status": "downloading", "progress": 150}, "1.0", 1.0)
    assert (job.phase, job.progress) == (fw.Phase.DOWNLOADING, 100)
    assert not job.on_response({"status": "weird"}, "1.0", 2.0)
    assert not job.on_firmware("2.0")  # not before the install
    job.on_response({"status": "rebooting"}, "1.0", 3.0)
    assert not job.on_firmware("1.0")  # the old version booting is not success
    assert job.on_firmware("2.0")
    assert job.phase is fw.Phase.DONE
    assert job.failure is None
    assert not job.on_response({"status": "error", "error": "late"}, "2.0", 4.0)


def test_job_timeouts_and_failures() -> None:
    job = fw.UpdateJob("n1", "2.0", "rid")
    job.sent(0.0)
    assert job.check(fw.ANSWER_TIMEOUT)
    assert job.failure == fw.Failure("update_no_answer")
    stalled = fw.UpdateJob("n1", "2.0", "rid")
    stalled.sent(0.0)
    stalled.on_response({"status": "verifying"}, None, 1.0)
    assert stalled.check(1.0 + fw.STALL_TIMEOUT)
    assert stalled.failure == fw.Failure("update_stalled", "verifying")
    failed = fw.UpdateJob("n1", "2.0", "rid")
    failed.sent(0.0)
    failed.on_response({"status": "error", "error": "download failed: HTTP 404"}, None, 1.0)
    assert failed.failure == fw.Failure("update_download_failed", "download failed: HTTP 404")
    confirmed = fw.UpdateJob("n1", "2.0", "rid")
    confirmed.sent(0.0)
    confirmed.on_response({"status": "success"}, "2.0", 1.0)
    assert confirmed.phase is fw.Phase.DONE


def test_queue_limits_concurrency_in_order() -> None:
    queue = fw.UpdateQueue(2)
    jobs = [fw.UpdateJob(f"n{i}", "2.0", f"r{i}") for i in range(4)]
    assert [queue.submit(job) for job in jobs] == [True, True, False, False]
    with pytest.raises(ValueError, match="already has an update"):
        queue.submit(fw.UpdateJob("n3", "2.0", "x"))
    assert queue.waiting() == jobs[2:]
    assert queue.finish("n0") == [jobs[2]]
    assert queue.finish("n3") == []  # a waiting job cancelled
    assert queue.running() == [jobs[1], jobs[2]]
    assert queue.job("n1") is jobs[1]
    assert fw.UpdateQueue(0).limit == 1
