"""A real mosquitto on a loopback port, with persistence so a restart keeps sessions.

``persistence true`` with ``autosave_interval`` writes the sessions and the queued QoS 1
messages to disk every second, and on a clean stop: a broker restart (even after SIGKILL, up
to the last autosave) keeps the nodes' persistent sessions and a command queued for a node.
Without an autosave interval mosquitto writes only at exit, and a crash loses them.
``set_tcp_nodelay true`` sends small MQTT packets at once instead of waiting for Nagle's
algorithm (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
import shutil
import subprocess
import time

from .ports import HOST, free_port, port_in_use, wait_listening
from .procs import PartError, Proc

AUTOSAVE_INTERVAL_S = 1
HA_USER = "homeassistant"

# The HomeSync ACL (docs/security.md, examples/mosquitto/acl). Home Assistant's user reads
# every HomeSync topic and writes only commands and the hub announcement; every node logs in
# with its node id as user name and writes only below its own node id (``%u``), so no client
# can forge another node's status, will, readings or answers.
HOMESYNC_ACL = f"""\
# Home Assistant (its MQTT integration logs in as "{HA_USER}")
user {HA_USER}
topic read homesync/#
topic write homesync/+/nodes/+/command/#
topic write homesync/+/hub/status
topic readwrite homeassistant/#

# Every node: user name = node id
pattern write homesync/+/nodes/%u/status/#
pattern write homesync/+/nodes/%u/telemetry/#
pattern write homesync/+/nodes/%u/response/#
pattern read homesync/+/nodes/%u/command/#
pattern read homesync/+/nodes/%u/status/online
pattern read homesync/+/hub/status
"""


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    raise PartError("mosquitto", "not installed (./scripts/setup installs Debian's mosquitto)")


def write_password_file(path: Path, passwords: Mapping[str, str]) -> None:
    """A mosquitto password file of salted hashes: ``user:password`` lines written 0600,
    then hashed in place by ``mosquitto_passwd -U`` (passwords never appear in an argv)."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        raise PartError("mosquitto", "mosquitto_passwd not found (Debian package mosquitto)")
    for user in passwords:
        if not user or ":" in user or "\n" in user:
            raise ValueError(f"user name {user!r} cannot go in a password file")
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{user}:{password}\n" for user, password in passwords.items())
    done = subprocess.run([tool, "-U", str(path)], capture_output=True, check=False, timeout=30)
    if done.returncode != 0:
        path.unlink(missing_ok=True)
        raise PartError("mosquitto", "mosquitto_passwd -U could not hash the password file")


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
        passwords: Mapping[str, str] | None = None,
    ) -> None:
        """``acl``: acl_file text (e.g. ``HOMESYNC_ACL``); ``passwords``: user -> password,
        hashed into a password file with ``mosquitto_passwd`` (anonymous clients refused)."""
        self.workdir = Path(workdir)
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.persistence = persistence
        self.acl = acl
        self.passwords = dict(passwords) if passwords is not None else None
        self.password_path = self.workdir / "passwd"
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc: Proc | None = None

    def config_lines(self) -> list[str]:
        """The broker configuration (brokers with ACLs or passwords extend it)."""
        lines = [
            f"listener {self.port} {self.host}",
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
        if self.passwords is None:
            lines.insert(1, "allow_anonymous true")
        else:
            lines[1:1] = ["allow_anonymous false", f"password_file {self.password_path}"]
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
        """(Re)write ``mosquitto.conf`` (and the password file, when there are passwords)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.passwords is not None:
            write_password_file(self.password_path, self.passwords)
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
