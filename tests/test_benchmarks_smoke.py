"""The benchmarks must not rot: ``./scripts/bench --quick`` runs every one of them (no timing).

``--quick`` sets BENCH_SMOKE=1 (tiny sizes, one rep) and writes into a temporary folder, never
into the committed ``benchmarks/results`` or ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
import subprocess

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def registered() -> list[str]:
    """Benchmark names listed in benchmarks/suite.py (read without importing it)."""
    tree = ast.parse((BENCH / "suite.py").read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("script", "harness")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value).removesuffix(".py"))
    return names


def test_every_benchmark_file_is_in_the_suite() -> None:
    files = sorted(path.stem for path in BENCH.glob("bench_*.py"))
    assert sorted(registered()) == files


@pytest.mark.timeout(900)
def test_scripts_bench_quick_runs_everything_and_writes_the_summary(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BENCH_", "COV_CORE_"))
    }
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    committed = (BENCH / "RESULTS.md").read_bytes() if (BENCH / "RESULTS.md").exists() else None
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]

    summary = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "## Targets (issue 14)" in summary
    assert "- machine (of this summary):" in summary
    for name in registered():
        data = json.loads((tmp_path / "results" / f"{name}.json").read_text(encoding="utf-8"))
        assert data["smoke"] is True
        assert data["date"]
        assert data["code"].startswith("git ")
        assert f"## {data['title']}" in summary
        for target in data["targets"]:
            assert target["verdict"].startswith(("met", "missed")), target
    # Each table a benchmark is known for made it into the summary.
    assert "naive: deadline dict + full scan every 1 s" in summary  # bench_tracker
    assert "floor: bare `mqtt.async_subscribe` wildcard + JSON decode" in summary  # bench_hub
    assert "raw paho request → node → response" in summary  # bench_relay
    assert "CPU share of the hass process" in summary  # bench_system
    # bench_system's floors ran in their own hass (its custom component loaded, its entities up).
    assert "Ours next to the floor (Home Assistant's own part)" in summary
    assert "floor: 20 devices restored, median of 1" in summary
    # ... and so did the kinds floor (its five platforms, its last update entity up).
    assert "kinds floor: 20 devices restored, median of 1" in summary
    assert "floor of our kinds (a node's 10 entity kinds, nothing behind them)" in summary
    assert "confirmed relay ≤ 1.5× the raw MQTT round trip, p50" in summary
    # The committed results are untouched by a smoke run.
    after = (BENCH / "RESULTS.md").read_bytes() if (BENCH / "RESULTS.md").exists() else None
    assert after == committed
