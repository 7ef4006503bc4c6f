"""Fail unless every module of the integration is covered at least MIN_PERCENT.

The quality scale's `test-coverage` rule is per module, so one total hides a module that is
barely tested. Reads coverage.py's JSON report (`pytest --cov-report=json:PATH`).
Usage: python scripts/coverage_gate.py PATH [MIN_PERCENT]
"""

from __future__ import annotations

import json
from pathlib import Path
import sys

DEFAULT_MIN = 95.0


def below(report: dict[str, object], minimum: float) -> list[tuple[str, float]]:
    """(file, percent) of every measured file under the minimum."""
    files = report["files"]
    assert isinstance(files, dict)
    low = []
    for name, data in sorted(files.items()):
        percent = float(data["summary"]["percent_covered"])
        if percent < minimum:
            low.append((name, percent))
    return low


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    minimum = float(argv[2]) if len(argv) == 3 else DEFAULT_MIN
    files = report["files"]
    if not files:
        print("coverage gate: the report measured no file", file=sys.stderr)
        return 1
    low = below(report, minimum)
    for name, percent in low:
        print(f"coverage gate: {name} is at {percent:.1f} % (< {minimum:g} %)", file=sys.stderr)
    if low:
        return 1
    print(f"coverage gate: all {len(files)} modules >= {minimum:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
