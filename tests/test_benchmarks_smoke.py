"""The benchmark code must not rot: run bench_tracker in smoke mode (no timing assertions)."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent


def test_bench_tracker_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_SMOKE": "1", "BENCH_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_tracker.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = (tmp_path / "bench_tracker.md").read_text(encoding="utf-8")
    for text in (proc.stdout, written):
        assert "| N | variant | µs/msg (median) |" in text
        assert "tracker.on_heartbeat" in text
        assert "naive: deadline dict + full scan every 1 s" in text
        assert "k expiring at once" in text
    # Smoke runs never overwrite the committed results.
    assert "BENCH_SMOKE=1" in written
