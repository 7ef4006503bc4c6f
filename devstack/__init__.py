"""Launch the whole HomeSync system on one machine: broker, a real Home Assistant, the fleet.

Used by ``./scripts/demo``, the end-to-end tests under ``e2e/``, ``./scripts/screenshots`` and
the benchmarks.
Everything binds 127.0.0.1 on a free port; every process keeps its real PID and its own log
file, and is stopped in order (see docs/architecture.md).
"""
