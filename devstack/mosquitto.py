"""A real mosquitto on a loopback port, with persistence so a restart keeps sessions.

``persistence true`` with ``autosave_interval`` writes the sessions and the queued QoS 1
messages to disk every second, and on a clean stop: a broker restart (even after SIGKILL, up
to the last autosave) keeps the nodes' persistent sessions and a command queued for a node.
Without an autosave interval mosquitto writes only at exit, and a crash loses them.
``set_tcp_nodelay true`` sends small MQTT packets at once instead of waiting for Nagle's
algorithm (see docs/architecture.md).
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import time

from .ports import HOST, free_port, port_in_use, wait_listening
from .procs import PartError, Proc

AUTOSAVE_INTERVAL_S = 1


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    raise PartError("mosquitto", "not installed (./scripts/setup installs Debian's mosquitto)")


class Mosquitto:
    """One broker: config, data and log under ``workdir``."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        *,
        persistence: bool = True,
        acl: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.persistence = persistence
        self.acl = acl
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: Proc | None = None

    def config_lines(self) -> list[str]:
        """The broker configuration (brokers with ACLs or passwords extend it)."""
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            # $SYS/broker/clients/connected every second: tests read who is connected.
            "sys_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to `mosquitto` and cannot write here
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            ]
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        return lines

    def write_config(self) -> None:
        """(Re)write ``mosquitto.conf``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it accepts connections."""
        if self.proc is not None and self.proc.running():
            return
        if port_in_use(self.port):
            raise PartError(self.name, f"port {self.port} is already in use", self.log_path)
        self.write_config()
        self.proc = Proc(self.name, [find_mosquitto(), "-c", str(self.config_path)], self.log_path)
        self.proc.start()
        self.proc.wait_until(
            lambda: wait_listening(self.port, 0.2), timeout, f"listening on port {self.port}"
        )

    @property
    def pid(self) -> int | None:
        """Real PID of the broker."""
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        """True while the broker process lives."""
        return self.proc is not None and self.proc.running()

    def stop(self) -> None:
        """Clean stop (SIGTERM: it saves its database and exits)."""
        if self.proc is not None:
            self.proc.stop(10)

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, nothing saved beyond the last autosave."""
        if self.proc is not None:
            self.proc.kill()

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port (after :meth:`stop` or :meth:`kill`)."""
        self.stop()
        deadline = time.monotonic() + timeout
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start(timeout)
