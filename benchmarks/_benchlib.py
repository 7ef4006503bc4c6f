"""Shared helpers of the benchmarks: statistics, markdown tables, results files.

Rules every benchmark here follows (see README.md): CPU time (``time.process_time``), the
median over >= 5 repetitions with the min-max spread, variants alternated rep by rep in one
run, results printed and written to ``benchmarks/results/<name>.md``. No timing assertions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
import json
import os
from pathlib import Path
import platform
import statistics
import subprocess

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

# BENCH_SMOKE=1: tiny sizes, one repetition; proves the code runs, measures nothing.
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
SMOKE_NOTE = " (BENCH_SMOKE=1: sizes too small to mean anything)"


def results_dir() -> Path | None:
    """Where results go: $BENCH_RESULTS_DIR, else benchmarks/results (never for smoke runs)."""
    override = os.environ.get("BENCH_RESULTS_DIR")
    if override:
        return Path(override)
    return None if SMOKE else BENCH_DIR / "results"


def reps(default: int = 5) -> int:
    """Repetitions: $BENCH_REPS, else `default` (1 in smoke mode)."""
    if value := os.environ.get("BENCH_REPS"):
        return max(1, int(value))
    return 1 if SMOKE else default


def summary(samples: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(samples), min(samples), max(samples)


def fmt(value: float, digits: int = 2) -> str:
    """A number with `digits` significant-looking decimals, scaled for readability."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def fmt_stat(samples: Sequence[float], digits: int = 2) -> tuple[str, str]:
    """('median', 'min–max') formatted."""
    med, lo, hi = summary(samples)
    return fmt(med, digits), f"{fmt(lo, digits)}–{fmt(hi, digits)}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table (numbers right-aligned is not possible in plain GFM)."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha} + uncommitted changes" if dirty else sha


def environment_facts(extra_dists: Sequence[str] = ()) -> dict[str, str]:
    """Machine, versions, date and commit of this run (also stored in <name>.json)."""
    dists = ", ".join(f"{d} {_version(d)}" for d in ("homeassistant", *extra_dists))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_model()}, "
        f"{os.cpu_count()} CPUs (shared, noisy)",
        "python": f"{platform.python_implementation()} {platform.python_version()}; {dists}",
        "code": f"git {_git()}",
    }


def environment(extra_dists: Sequence[str] = ()) -> list[str]:
    """Markdown bullet lines describing machine, versions and date."""
    return [f"- {key}: {value}" for key, value in environment_facts(extra_dists).items()]


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the project (issue 14) checked by a benchmark: met, or missed by how much.

    ``target_id`` names the target in ``suite.TARGETS`` (the runner lists every catalogued
    target, measured or not). ``measured`` and ``limit`` are in ``unit``; the target is met when
    ``measured <= limit`` (``higher_is_better``: ``>=``). ``why`` says what the number is made
    of, and for a miss, why it is missed (one or two sentences a reader can check).
    """

    target_id: str
    measured: float
    limit: float
    unit: str
    why: str = ""
    higher_is_better: bool = False

    @property
    def met(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.limit
        return self.measured <= self.limit

    @property
    def verdict(self) -> str:
        """'met (23 % headroom)' / 'missed by 35 %'."""
        if self.limit == 0:
            return "met" if self.met else f"missed by {fmt(abs(self.measured))} {self.unit}"
        gap = abs(self.measured - self.limit) / abs(self.limit) * 100
        if self.met:
            return f"met ({gap:.0f} % headroom)"
        return f"missed by {gap:.0f} %"

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "met": self.met, "verdict": self.verdict}


def targets_table(targets: Sequence[Target]) -> str:
    """The targets a benchmark checked, as a markdown table."""
    return table(
        ["target", "measured", "limit", "verdict", "why"],
        [
            [
                t.target_id,
                f"{fmt(t.measured)} {t.unit}",
                f"{fmt(t.limit)} {t.unit}",
                t.verdict,
                t.why,
            ]
            for t in targets
        ],
    )


def report(
    name: str,
    title: str,
    command: str,
    method: Sequence[str],
    sections: Sequence[tuple[str, str]],
    wall_seconds: float,
    extra_dists: Sequence[str] = (),
    targets: Sequence[Target] = (),
) -> str:
    """Print the report, write <results_dir>/<name>.md and <name>.json; returns the markdown.

    The JSON file (environment, targets, wall time) is what ``scripts/bench`` reads to write
    ``benchmarks/RESULTS.md``.
    """
    facts = environment_facts(extra_dists)
    parts = [f"# {title}", ""]
    parts += [f"- {key}: {value}" for key, value in facts.items()]
    parts += [
        f"- command: `{command}`" + (SMOKE_NOTE if SMOKE else ""),
        f"- wall time of the whole run: {wall_seconds:.0f} s",
        *method,
        "",
    ]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    if targets:
        parts += ["## Targets", "", targets_table(targets), ""]
    text = "\n".join(parts).rstrip() + "\n"
    print()
    print(text)
    if (out_dir := results_dir()) is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        summary_json = {
            "name": name,
            "title": title,
            "command": command,
            "smoke": SMOKE,
            "wall_seconds": round(wall_seconds, 1),
            **facts,
            "targets": [t.as_json() for t in targets],
        }
        (out_dir / f"{name}.json").write_text(
            json.dumps(summary_json, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"written: {path}")
    return text
