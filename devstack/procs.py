"""Processes with a name, a log file and their real PID, stopped in order.

Every child runs in its own session (``start_new_session``): a Ctrl-C in the terminal reaches
only the launcher, which then stops the parts itself in the right order (simulator first, so
the nodes publish their retained ``shutdown``; then Home Assistant; then the broker).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import os
from pathlib import Path
import shutil
import signal
import subprocess
import time

SETPRIV = shutil.which("setpriv")  # util-linux: sets the parent-death signal, then execs


def _die_with_parent(cmd: list[str], sig: int) -> list[str]:
    """``cmd`` prefixed so the child gets ``sig`` if the launcher dies, even by SIGKILL.

    ``setpriv --pdeathsig`` execs the program itself: the PID stays the program's. (A
    ``preexec_fn`` would do the same but is unsafe once the launcher runs threads.) Linux
    sends the signal when the *thread* that started the child ends: start parts from the
    main thread (or a thread that lives as long as they should).
    """
    if SETPRIV is None:
        return cmd
    return [SETPRIV, "--pdeathsig", signal.Signals(sig).name, "--", *cmd]


class PartError(RuntimeError):
    """A part of the stack failed to start or stopped unexpectedly; names its log file."""

    def __init__(self, part: str, message: str, log_path: Path | None = None) -> None:
        self.part = part
        self.log_path = log_path
        where = f" (log: {log_path})" if log_path is not None else ""
        super().__init__(f"{part}: {message}{where}")


def tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file ('' when there is none)."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 16384))
        data = handle.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


class Proc:
    """One child process: started with its output in ``log_path``, stopped by signal."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The real PID of the running program (no wrapper shell)."""
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        """Start the program, appending its output to the log file."""
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"---- {time.strftime('%H:%M:%S')} start: {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                _die_with_parent(self.cmd, self.stop_signal),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )

    def running(self) -> bool:
        """True while the process lives."""
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        """Exit code once it ended."""
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: int) -> None:
        """Send a signal (ignored when it already ended)."""
        if self.running():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to stop (its stop signal), SIGKILL after ``timeout`` seconds; reap it."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.popen.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would; reaps it."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        self.popen.wait()

    def check(self) -> None:
        """Raise :class:`PartError` when the process ended."""
        code = self.returncode()
        if self.popen is not None and code is not None:
            raise PartError(self.name, f"exited with code {code}", self.log_path)

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
    ) -> None:
        """Poll ``ready()`` until true; a :class:`PartError` on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if ready():
                return
            if time.monotonic() > deadline:
                raise PartError(self.name, f"not {what} after {timeout:.0f} s", self.log_path)
            time.sleep(interval)


class Stack:
    """Parts in start order; :meth:`stop` stops them in reverse order."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, stop: Callable[[], None]) -> None:
        """Register how to stop a part that was started."""
        self.parts.append((name, stop))

    def stop(self, report: Callable[[str], None] | None = None) -> None:
        """Stop every part, last started first; one failing stop does not skip the others."""
        while self.parts:
            name, stop = self.parts.pop()
            if report is not None:
                report(f"stopping {name}")
            try:
                stop()
            except Exception as err:
                if report is not None:
                    report(f"stopping {name} failed: {err}")
