"""The simulated fleet: ``python -m firmware.sim`` (the real firmware on the host HAL).

One process runs every in-process node (CPython); ``micropython`` > 0 runs the last K nodes
under the real MicroPython unix port in a child process. Stopping sends SIGINT: every node
publishes its retained ``online: false, reason: shutdown`` before the process exits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import signal
import sys
from typing import Any

from .ports import HOST
from .procs import Proc

REPO = Path(__file__).resolve().parents[1]
# A household: fridge and freezer cycling, a TV mostly on standby, a kettle in short bursts...
DEMO_LOADS = ("fridge", "tv", "kettle", "lamp", "washer", "charger", "heater", "idle")


def micropython_available() -> bool:
    """True when the venv has the real MicroPython unix port."""
    return os.access(Path(sys.executable).with_name("micropython"), os.X_OK)


PASSWORD_ENV = "HOMESYNC_NODE_PASSWORD"


@dataclass
class Fleet:
    """``nodes`` simulated plugs on the broker at ``port``; state and log under ``workdir``."""

    workdir: Path
    port: int
    home: str = "demo"
    nodes: int = 12
    prefix: str = "plug"
    heartbeat: int = 10
    telemetry: int = 5
    measure_ms: int = 1000
    keepalive: int = 30
    watchdog: float = 30
    load_scale: float = 0.1
    loads: tuple[str, ...] = DEMO_LOADS
    micropython: int = 0
    faults: list[str] = field(default_factory=list)
    node_config: list[str] = field(default_factory=list)
    seed: int | None = 7
    firmware: str | None = None  # version the plugs report until an OTA update
    quiet: bool = False
    host: str = HOST
    # Broker logins (an ACL'd broker): every node logs in with its node id as user name;
    # the password reaches the simulator through its environment, never its argv.
    password: str | None = None
    proc: Proc | None = None

    name = "simulator"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)

    @property
    def log_path(self) -> Path:
        """Where the simulator's output goes."""
        return self.workdir / "sim.log"

    @property
    def control_dir(self) -> Path:
        """Where ``NODE.control`` files are read."""
        return self.workdir / "control"

    @property
    def state_dir(self) -> Path:
        """Each node's persisted state (``NODE/state.json``, ``NODE/config.json``)."""
        return self.workdir / "state"

    @property
    def node_ids(self) -> list[str]:
        """Node ids, in order (the last ``micropython`` of them run under MicroPython)."""
        return [f"{self.prefix}-{i + 1:02d}" for i in range(self.nodes)]

    @property
    def pid(self) -> int | None:
        """Real PID of the simulator."""
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        """The ``python -m firmware.sim`` command line."""
        cmd = [sys.executable, "-m", "firmware.sim", "--host", self.host, "--port", str(self.port)]
        cmd += ["--home", self.home, "--nodes", str(self.nodes), "--prefix", self.prefix]
        cmd += ["--heartbeat", str(self.heartbeat), "--telemetry", str(self.telemetry)]
        cmd += ["--measure-ms", str(self.measure_ms), "--keepalive", str(self.keepalive)]
        cmd += ["--watchdog", str(self.watchdog), "--load-scale", str(self.load_scale)]
        cmd += ["--loads", ",".join(self.loads), "--micropython", str(self.micropython)]
        cmd += ["--state-dir", str(self.state_dir), "--control-dir", str(self.control_dir)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.firmware:
            cmd += ["--firmware", self.firmware]
        if self.quiet:
            cmd.append("--quiet")
        for fault in self.faults:
            cmd += ["--fault", fault]
        for item in self.node_config:
            cmd += ["--node-config", item]
        if self.password is not None:
            cmd += ["--password-env", PASSWORD_ENV]
        return cmd

    def start(self) -> None:
        """Start the simulator (returns at once; nodes connect within a second or two)."""
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        if self.password is not None:
            env[PASSWORD_ENV] = self.password
        self.proc = Proc(
            self.name, self.command(), self.log_path, cwd=REPO, env=env, stop_signal=signal.SIGINT
        )
        self.proc.start()

    def running(self) -> bool:
        """True while the simulator lives."""
        return self.proc is not None and self.proc.running()

    def check(self) -> None:
        """Raise ``PartError`` when the simulator exited."""
        if self.proc is not None:
            self.proc.check()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT: every node says goodbye (retained ``shutdown``), then the process exits."""
        if self.proc is not None:
            self.proc.stop(timeout)

    def control(self, node_id: str, *actions: dict[str, Any]) -> None:
        """Act on a running node: ``{"fault": "freeze"}``, ``{"clear": "all"}``, ``{"reboot": 1}``.

        The simulator polls the control file every 50 ms and removes it once applied.
        """
        path = self.control_dir / f"{node_id}.control"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(actions)))
        os.replace(tmp, path)

    def node_state(self, node_id: str) -> dict[str, Any]:
        """What the node persisted (``relay``, energy counters...): the plug's own truth."""
        path = self.state_dir / node_id / "state.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data
