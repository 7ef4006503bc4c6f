"""``python -m homeassistant`` with every thread's OS name set to its Python name.

bench_system starts hass through this so /proc/<pid>/task/<tid>/comm tells the recorder's
thread and the executors apart (CPython 3.13 leaves every thread named after the program). It
only names threads: Home Assistant runs as ``python -m homeassistant`` would run it. Not a
benchmark itself (no ``bench_`` prefix).
"""

from __future__ import annotations

import ctypes
import runpy
import sys
import threading
from typing import Any

PR_SET_NAME = 15  # prctl(2); the kernel keeps the first 15 bytes
_LIBC = ctypes.CDLL(None, use_errno=True)
_bootstrap_inner: Any = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named_bootstrap(self: threading.Thread) -> None:
    """Name the OS thread, then run the thread as CPython would."""
    _LIBC.prctl(PR_SET_NAME, self.name.encode()[:15], 0, 0, 0)
    _bootstrap_inner(self)


threading.Thread._bootstrap_inner = _named_bootstrap  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.argv = ["homeassistant", *sys.argv[1:]]
    runpy.run_module("homeassistant", run_name="__main__", alter_sys=True)
