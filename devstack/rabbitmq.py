"""A RabbitMQ cluster (MQTT plugin) on loopback, for end-to-end tests, the demo and benchmarks.

``RabbitCluster(workdir, nodes=3)`` starts ``nodes`` Erlang VMs of Debian's ``rabbitmq-server``
on this machine, each with its own node name (``rabbit1@localhost`` ...), AMQP, MQTT and
Erlang-distribution port (all free ports on 127.0.0.1), data and log dir under ``workdir``, one
shared Erlang cookie, the ``rabbitmq_mqtt`` plugin, and joins them with
``rabbitmqctl join_cluster``. It brings its own ``epmd`` on a free loopback port (never the
well-known 4369) and stops it last, so nothing Erlang is left behind.

What the broker configuration chooses and why (docs/brokers.md explains every difference from
mosquitto that matters to HomeSync):

- ``mqtt.durable_queue_type = quorum``: a node's persistent session (its QoS 1 subscription
  queue) is replicated on every member, so a command queued while the node is away survives
  the loss of the member the node was connected to. With the default (classic) queue the
  session lives on one member only and is unreachable while that member is down.
- ``mqtt.tcp_listen_options.nodelay = true``: no Nagle stall on small MQTT packets (like
  ``set_tcp_nodelay true`` in the mosquitto configs this project ships).
- Persistence is built in (messages to durable queues and the retained-message store are on
  disk); there is no autosave interval to set, unlike mosquitto.
- ``+S 1:1`` and no scheduler busy-waiting: three VMs share a 2-core CI machine.

Interface (the same as ``devstack.mosquitto.Mosquitto``): ``.host``, ``.port`` (member 0's MQTT
port), ``.start()``, ``.stop()``, ``.kill()``, ``.restart()``, ``.log_path``; plus ``.members``
(each with ``.host``, ``.mqtt_port``, ``.name``), ``.stop_member(i)``, ``.start_member(i)``,
``.kill_member(i)``, ``.brokers`` (``["127.0.0.1:port", ...]``, the firmware's broker list).

``available()`` says whether ``rabbitmq-server`` is installed; callers skip with
``UNAVAILABLE`` as the reason when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
from dataclasses import dataclass, field
from functools import partial
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import IO, Any, Self

from .ports import HOST, free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_SERVER = RABBIT_BIN / "rabbitmq-server"
RABBITMQCTL = RABBIT_BIN / "rabbitmqctl"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
UNAVAILABLE = "rabbitmq-server is not installed (./scripts/setup installs Debian's package)"
START_TIMEOUT_S = 120.0  # one member boots in ~7 s idle, much slower when CI is busy
STOP_TIMEOUT_S = 30.0
ERL_ARGS = (
    "-kernel inet_dist_use_interface {127,0,0,1} "  # distribution on loopback only
    "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"  # one scheduler, no busy-waiting
)


def available() -> bool:
    """True when Debian's rabbitmq-server (and Erlang's epmd) can be run here."""
    return RABBITMQ_SERVER.exists() and RABBITMQCTL.exists() and os.path.exists(EPMD)


def _port_open(port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout):
        return True
    return False


class RabbitError(RuntimeError):
    """The cluster could not be started, joined or stopped; the message names the log to read."""


@dataclass
class Member:
    """One RabbitMQ node of the cluster."""

    index: int
    name: str  # Erlang node name, e.g. rabbit1@localhost
    dir: Path
    mqtt_port: int
    amqp_port: int
    dist_port: int
    host: str = HOST
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _out: IO[bytes] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.mqtt_port

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / f"{self.name}.log"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class RabbitCluster:
    """``nodes`` RabbitMQ members clustered on loopback; see the module docstring."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        nodes: int = 3,
        *,
        queue_type: str = "quorum",
        extra_config: Sequence[str] = (),
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one member")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.epmd_port = free_port()
        self._epmd: subprocess.Popen[bytes] | None = None
        self._cookie = secrets.token_hex(16)
        self._queue_type = queue_type  # "classic" only to show what quorum queues buy
        self._extra_config = list(extra_config)
        self.start_seconds: float | None = None  # how long the last start() took
        self.members: list[Member] = []
        taken: set[int] = {self.epmd_port}
        for index in range(nodes):
            ports: list[int] = []
            while len(ports) < 3:
                port = free_port()
                if port not in taken:
                    taken.add(port)
                    ports.append(port)
            self.members.append(
                Member(
                    index=index,
                    name=f"rabbit{index + 1}@localhost",
                    dir=self.dir / f"rabbit{index + 1}",
                    mqtt_port=ports[0],
                    amqp_port=ports[1],
                    dist_port=ports[2],
                )
            )
        self._write_files()

    # ------------------------------------------------------------------ interface

    @property
    def port(self) -> int:
        """Member 0's MQTT port (a single-broker client can use the cluster like one broker)."""
        return self.members[0].mqtt_port

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    @property
    def brokers(self) -> list[str]:
        """Every member as ``host:port``: the firmware's ``mqtt.brokers`` list."""
        return [f"{m.host}:{m.mqtt_port}" for m in self.members]

    def log(self) -> str:
        return "\n".join(f"==== {m.name}\n{m.log()}" for m in self.members)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Boot every member (in parallel), join them into one cluster, wait until all run."""
        began = time.monotonic()
        try:
            self._start_epmd()
            fresh = not (self.dir / ".clustered").exists()
            for member in self.members:
                self._spawn(member)
            self._parallel([partial(self._await_startup, m) for m in self.members])
            if fresh and len(self.members) > 1:
                for member in self.members[1:]:
                    self._join(member, self.members[0])
                (self.dir / ".clustered").write_text("1\n")
            self._await_cluster()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every member gracefully (SIGTERM, then SIGKILL after a timeout), then epmd."""
        self._parallel([partial(self._terminate, m) for m in reversed(self.members)])
        self._stop_epmd()

    def kill(self) -> None:
        """SIGKILL every member (no clean shutdown), then stop epmd."""
        for member in self.members:
            self._kill(member)
        self._stop_epmd()

    def restart(self) -> None:
        """Stop the whole cluster and start it again with the same data (durable state kept).

        Slow on RabbitMQ 3.8-3.11: the MQTT plugin's Raft client-id tracker needs a majority
        and, after a full stop, waits about 100 s for its peers (~2 min here). A cluster is
        normally restarted member by member: ``rolling_restart()``.
        """
        self.stop()
        self.start()

    def rolling_restart(self, order: Sequence[int] | None = None) -> None:
        """Restart the members one at a time (the cluster keeps serving throughout)."""
        for index in order if order is not None else range(len(self.members)):
            self.stop_member(index)
            self.start_member(index)

    def stop_member(self, index: int) -> None:
        """Stop one member gracefully; the others keep serving (quorum kept with 3 members)."""
        self._terminate(self.members[index])

    def kill_member(self, index: int) -> None:
        """SIGKILL one member: its TCP connections drop without a DISCONNECT."""
        self._kill(self.members[index])

    def start_member(self, index: int) -> None:
        """Start a stopped member again; it rejoins the cluster from its own data dir."""
        member = self.members[index]
        if member.running:
            return
        self._start_epmd()
        self._spawn(member)
        self._await_startup(member)
        self._await_cluster()

    def ctl(self, member: Member | int, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <member> ARGS``; raise RabbitError with its output on failure."""
        target = self.members[member] if isinstance(member, int) else member
        proc = subprocess.run(
            [str(RABBITMQCTL), "-n", target.name, *args],
            env=self._env(target),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {target.name} failed: {out}")
        return out

    def running_members(self) -> list[str]:
        """Node names the cluster reports as running (asked of the first running member)."""
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(RabbitError, subprocess.TimeoutExpired):
                status = json.loads(
                    self.ctl(member, "cluster_status", "--formatter", "json", timeout=30)
                )
                return sorted(status.get("running_nodes", []))
        return []

    # ------------------------------------------------------------------ internals

    def _write_files(self) -> None:
        (self.dir / ".erlang.cookie").write_text(self._cookie)
        os.chmod(self.dir / ".erlang.cookie", 0o400)
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.dir / "rabbitmq-env.conf").write_text("# intentionally empty: see rabbitmq.py\n")
        for member in self.members:
            member.dir.mkdir(parents=True, exist_ok=True)
            lines = [
                f"listeners.tcp.default = {HOST}:{member.amqp_port}",
                f"mqtt.listeners.tcp.default = {HOST}:{member.mqtt_port}",
                "mqtt.allow_anonymous = true",
                "mqtt.vhost = /",
                "mqtt.exchange = amq.topic",
                f"mqtt.durable_queue_type = {self._queue_type}",
                "mqtt.tcp_listen_options.nodelay = true",
                "loopback_users = none",
                "log.console = false",
                "log.file.level = info",
                # Nothing but loopback ever connects; a busy CI box must not trip the
                # free-disk alarm or the memory watermark in the middle of a test.
                "disk_free_limit.absolute = 50MB",
                "vm_memory_high_watermark.relative = 0.8",
                *self._extra_config,
            ]
            (member.dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def _env(self, member: Member) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            {
                "HOME": str(self.dir),  # the CLI and the server read $HOME/.erlang.cookie
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": HOST,
                "RABBITMQ_NODENAME": member.name,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(member.dir / "rabbitmq"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(member.dir / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(member.dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(member.dir / "log"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(member.dir / "plugins-expand"),
                "RABBITMQ_DIST_PORT": str(member.dist_port),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS,
                "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
        )
        return env

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd = subprocess.Popen(
            [EPMD, "-address", HOST, "-port", str(self.epmd_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait(lambda: _port_open(self.epmd_port), 10, "epmd listening")

    def _stop_epmd(self) -> None:
        proc, self._epmd = self._epmd, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _spawn(self, member: Member) -> None:
        if member.running:
            return
        member._out = member.stdout_path.open("ab")
        # A new session (process group) per member: kill_member() reaches beam.smp and its
        # erl_child_setup, not just the sh wrapper that rabbitmq-server is.
        member.proc = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self._env(member),
            cwd=member.dir,
            stdin=subprocess.DEVNULL,
            stdout=member._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _await_startup(self, member: Member) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if not member.running:
                raise RabbitError(f"{member.name} exited while starting: {self._tail(member)}")
            try:
                self.ctl(member, "await_startup", "--timeout", "30", timeout=40)
            except (RabbitError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise RabbitError(
                        f"{member.name} did not start in {START_TIMEOUT_S:.0f} s: "
                        + self._tail(member)
                    ) from None
                time.sleep(0.5)  # not yet registered with epmd
                continue
            break
        _wait(lambda: _port_open(member.mqtt_port), 30, f"{member.name} MQTT listener")

    def _join(self, member: Member, seed: Member) -> None:
        self.ctl(member, "stop_app")
        self.ctl(member, "join_cluster", seed.name)
        self.ctl(member, "start_app")
        self.ctl(member, "await_startup", "--timeout", "60", timeout=70)

    def _await_cluster(self) -> None:
        wanted = sorted(m.name for m in self.members if m.running)
        _wait(lambda: self.running_members() == wanted, 60, f"cluster of {wanted}")
        for member in self.members:
            if member.running:
                _wait(partial(_port_open, member.mqtt_port), 30, f"{member.name} MQTT")

    def _terminate(self, member: Member) -> None:
        proc = member.proc
        if proc is not None and proc.poll() is None:
            # SIGTERM to the wrapper: it forwards TERM to beam.smp, which shuts down cleanly.
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill(member)
        self._reap(member)

    def _kill(self, member: Member) -> None:
        proc = member.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._reap(member)

    def _reap(self, member: Member) -> None:
        proc, member.proc = member.proc, None
        if proc is not None:
            # Whatever is left in the member's process group (beam after a wrapper-only exit).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if member._out is not None:
            member._out.close()
            member._out = None

    def _tail(self, member: Member, size: int = 3000) -> str:
        text = ""
        with contextlib.suppress(OSError):
            text += member.stdout_path.read_text(errors="replace")[-size:]
        return text + member.log()[-size:]

    @staticmethod
    def _parallel(jobs: Sequence[Callable[[], None]]) -> None:
        errors: list[BaseException] = []

        def run(job: Callable[[], None]) -> None:
            try:
                job()
            except BaseException as err:  # re-raised below, in the caller's thread
                errors.append(err)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise RabbitError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
