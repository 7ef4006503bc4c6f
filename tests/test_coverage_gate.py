"""scripts/coverage_gate.py: the per-module coverage gate of ./scripts/test."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

SCRIPT = Path(__file__).parents[1] / "scripts" / "coverage_gate.py"


def gate(tmp_path: Path, percents: dict[str, float]) -> subprocess.CompletedProcess[str]:
    report = {"files": {n: {"summary": {"percent_covered": p}} for n, p in percents.items()}}
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "95"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_every_module_at_or_above_the_minimum_passes(tmp_path: Path) -> None:
    result = gate(tmp_path, {"a.py": 100.0, "b.py": 95.0})
    assert result.returncode == 0
    assert "all 2 modules >= 95 %" in result.stdout


def test_one_module_below_fails_and_is_named(tmp_path: Path) -> None:
    result = gate(tmp_path, {"a.py": 100.0, "blueprint.py": 91.0})
    assert result.returncode == 1
    assert "blueprint.py is at 91.0 % (< 95 %)" in result.stderr
    assert "a.py" not in result.stderr


def test_an_empty_report_fails(tmp_path: Path) -> None:
    assert gate(tmp_path, {}).returncode == 1
