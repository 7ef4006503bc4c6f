"""Run every benchmark of ``suite.BENCHMARKS`` and write ``benchmarks/RESULTS.md``.

Called by ``./scripts/bench`` (see benchmarks/README.md):

- ``./scripts/bench``: every benchmark, full sizes, one after the other (never in parallel: they
  measure CPU time on a shared 2-core machine); results into ``benchmarks/results/`` and the
  summary into ``benchmarks/RESULTS.md`` (both committed).
- ``./scripts/bench --quick``: ``BENCH_SMOKE=1`` (tiny sizes, one rep): proves every benchmark
  still runs and the summary can be written; measures nothing; writes only into ``--out``
  (default: a fresh temporary folder), never into the committed results.
- ``./scripts/bench --only bench_hub bench_relay``: run these, then compose RESULTS.md from
  every result file present (the others keep the numbers, date and commit of their last run).
- ``./scripts/bench --compose``: no run, only rewrite RESULTS.md from the result files.

Exit status 1 when a benchmark failed or did not write its results.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any

from _benchlib import BENCH_DIR, ROOT, environment_facts, fmt, table
from suite import BENCHMARKS, TARGETS, Benchmark


def run_one(bench: Benchmark, results: Path, logs: Path, *, quick: bool) -> tuple[bool, float]:
    """Run one benchmark in a subprocess; (succeeded, wall seconds). Output goes to its log."""
    env = {**os.environ, "BENCH_RESULTS_DIR": str(results), "PYTHONDONTWRITEBYTECODE": "1"}
    if quick:
        env["BENCH_SMOKE"] = "1"
    else:
        env.pop("BENCH_SMOKE", None)
    log_path = logs / f"{bench.name}.log"
    timeout = bench.quick_timeout_s if quick else bench.timeout_s
    print(f"== {bench.name}: {' '.join(bench.argv[1:])} (log: {log_path})", flush=True)
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                bench.argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
            ok = proc.returncode == 0
            status = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            ok = False
            status = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    written = (results / f"{bench.name}.json").is_file() and (
        results / f"{bench.name}.md"
    ).is_file()
    if ok and not written:
        ok = False
        status = f"wrote no {bench.name}.json / .md into {results}"
    print(f"   {'ok' if ok else 'FAILED'} ({status}, {wall:.0f} s)", flush=True)
    if not ok:
        print(log_path.read_text(encoding="utf-8", errors="replace")[-4000:], flush=True)
    return ok, wall


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    """name -> the JSON summary each benchmark wrote (missing benchmarks are absent)."""
    found = {}
    for bench in BENCHMARKS:
        path = results / f"{bench.name}.json"
        if path.is_file():
            found[bench.name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _demote(markdown: str) -> str:
    """A benchmark's own report, its headings one level down, its title dropped."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(("#" + line) if line.startswith("#") else line for line in lines).strip()


def compose(results: Path, out: Path, failed: Sequence[str], command: str) -> str:
    """Write ``out`` (RESULTS.md) from the result files in ``results``; returns the text."""
    found = load_results(results)
    facts = environment_facts(("pytest-homeassistant-custom-component", "paho-mqtt"))
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{command}` from `benchmarks/results/*.json` and `*.md`. Each benchmark's "
        "section carries the date and commit it was measured at; compare rows within one "
        "table (measured side by side in one run), not numbers across runs or machines.",
        "",
        *(f"- {key} (of this summary): {value}" for key, value in facts.items()),
        "",
        "## Targets (issue 14)",
        "",
    ]
    rows = []
    by_target: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, data in found.items():
        for target in data.get("targets", []):
            by_target.setdefault(target["target_id"], []).append((name, target))
    for target_id, text in TARGETS.items():
        checks = by_target.pop(target_id, [])
        if not checks:
            rows.append([text, "not measured yet", "–", "–", "–", "no benchmark reports it"])
        for name, t in checks:
            verdict = ("**met**" if t["met"] else "**missed**") + t["verdict"].removeprefix(
                "met" if t["met"] else "missed"
            )
            rows.append(
                [
                    text,
                    verdict,
                    f"{fmt(t['measured'])} {t['unit']}",
                    f"{fmt(t['limit'])} {t['unit']}",
                    name,
                    t["why"] or "–",
                ]
            )
    for target_id, checks in by_target.items():  # an id the catalogue does not know
        for name, t in checks:
            rows.append([target_id, t["verdict"], t["measured"], t["limit"], name, t["why"]])
    parts += [table(["target", "verdict", "measured", "limit", "benchmark", "why"], rows), ""]
    notes = BENCH_DIR / "NOTES.md"
    if notes.is_file():
        # Written by hand from the tables below (what a miss is made of, what would close it).
        parts += [_demote(notes.read_text(encoding="utf-8")), ""]

    bench_rows = []
    for bench in BENCHMARKS:
        data = found.get(bench.name)
        if data is None:
            bench_rows.append([bench.name, "no results", "–", "–", "–"])
            continue
        status = "FAILED in this run (older results below)" if bench.name in failed else "ok"
        if data.get("smoke"):
            status += " (BENCH_SMOKE: sizes too small to mean anything)"
        bench_rows.append(
            [bench.name, status, data["date"], data["code"], f"{data['wall_seconds']:.0f} s"]
        )
    parts += [
        "## Benchmarks",
        "",
        table(["benchmark", "status", "measured at", "code", "wall time"], bench_rows),
        "",
    ]
    for bench in BENCHMARKS:
        md = results / f"{bench.name}.md"
        if bench.name in found and md.is_file():
            title = found[bench.name]["title"]
            parts += [f"## {title}", "", _demote(md.read_text(encoding="utf-8")), ""]
    text = "\n".join(parts).rstrip() + "\n"
    out.write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one rep")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--compose", action="store_true", help="only rewrite RESULTS.md")
    parser.add_argument("--out", type=Path, help="folder for results, logs and RESULTS.md")
    args = parser.parse_args(argv)

    known = {bench.name: bench for bench in BENCHMARKS}
    selected = list(BENCHMARKS)
    if args.only:
        unknown = [
            name.removesuffix(".py") for name in args.only if name.removesuffix(".py") not in known
        ]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(known)}")
        selected = [known[name.removesuffix(".py")] for name in args.only]
    if args.compose:
        selected = []

    if args.out is not None:
        out_dir = args.out.resolve()
        results = out_dir / "results"
        summary = out_dir / "RESULTS.md"
    elif args.quick:
        out_dir = Path(tempfile.mkdtemp(prefix="heartbeat_iot-bench-"))
        results = out_dir / "results"
        summary = out_dir / "RESULTS.md"
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="heartbeat_iot-bench-"))  # logs only
        results = BENCH_DIR / "results"
        summary = BENCH_DIR / "RESULTS.md"
    logs = out_dir / "logs"
    results.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)

    failed = []
    for bench in selected:
        ok, _ = run_one(bench, results, logs, quick=args.quick)
        if not ok:
            failed.append(bench.name)
    command = "./scripts/bench" + (" --quick" if args.quick else "")
    if args.only:
        command += " --only " + " ".join(bench.name for bench in selected)
    compose(results, summary, failed, command)
    print(f"written: {summary}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
