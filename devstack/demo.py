"""``./scripts/demo``: mosquitto, a real Home Assistant and a simulated fleet, on 127.0.0.1.

    ./scripts/demo [--port 8123] [--nodes 12] [--fresh] [--broker mosquitto|rabbitmq]

``--acl`` gives mosquitto logins and the project's ACL (docs/security.md): Home Assistant logs
in as ``homeassistant``, every plug with its node id as user name, and may write only its own
topics. ``--broker rabbitmq`` runs a three-member RabbitMQ cluster instead of mosquitto: the plugs
connect to member 1 with every member in their broker list, Home Assistant to member 2
(docs/brokers.md).

State lives in ``.demo/`` (reused by the next run; ``--fresh`` starts over): ``config/`` is
Home Assistant's config dir, ``login.json`` the generated login, one log file per part.
Ctrl-C or SIGTERM stops everything in order: simulator, Home Assistant, broker.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import sys
import time
from types import FrameType
from typing import Any

from .firmware import PLUG_FIRMWARE, build_bundle
from .fleet import Fleet, micropython_available
from .hass import (
    Hass,
    HassClient,
    accept_discovery,
    add_mqtt_entry,
    onboard,
    onboarding_leftovers,
    patch_mqtt_port,
)
from .mosquitto import HA_USER, HOMESYNC_ACL, Mosquitto
from .ports import free_port, port_in_use
from .procs import PartError, Stack, tail
from .rabbitmq import UNAVAILABLE, RabbitCluster, RabbitError, available
from .ui import (
    DASHBOARD_TITLE,
    FleetEntities,
    configure_dashboard,
    configure_energy,
    fleet_entities,
)

REPO = Path(__file__).resolve().parents[1]
HOME = "demo"
USERNAME = "demo"
# Seconds each part gets to stop before SIGKILL: with the broker's 10 s, at most 30 s in all
# (usually 2-5 s: the nodes' goodbyes, hass saving its state, mosquitto its database).
STOP_BUDGET_S = {"simulator": 6.0, "hass": 14.0}


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


@dataclass
class Scenario:
    """Which node shows which promise, and when (seconds after the fleet starts)."""

    freeze: str
    flap: str
    reboot: str
    wifi: str

    def faults(self) -> list[str]:
        """``--fault`` arguments for the simulator."""
        return [
            f"{self.freeze}:freeze@60",  # and stays frozen: its watchdog is off
            f"{self.flap}:flap=20/8@20",  # Wi-Fi up 20 s, down 8 s, forever
            f"{self.reboot}:reboot@45%180",  # resets every three minutes
            f"{self.wifi}:wifi_down@80+25",  # loses Wi-Fi once, back 25 s later
        ]

    def node_config(self) -> list[str]:
        """``--node-config`` arguments: the frozen node has no watchdog to save it."""
        return [f"{self.freeze}:watchdog_s=0"]

    def story(self) -> list[str]:
        """What the user will see, for the banner."""
        return [
            f"  ~20 s  {self.flap} starts flapping (Wi-Fi up 20 s / down 8 s): a flapping event",
            f"  ~45 s  {self.reboot} reboots, then every 3 min: a rebooted event",
            f"  ~60 s  {self.freeze} freezes, watchdog off: its TCP session and pings stay up,",
            "         no will is sent, and it goes offline ~30 s later (reason: timeout)",
            f"  ~80 s  {self.wifi} loses Wi-Fi for 25 s: offline within ~2 s (its will), then back",
        ]


def scenario(nodes: int, prefix: str = "plug") -> Scenario | None:
    """The four fault nodes, spread over the fleet (None below four nodes)."""
    if nodes < 4:
        return None

    def name(i: int) -> str:
        return f"{prefix}-{i:02d}"

    return Scenario(freeze=name(3), flap=name(5 if nodes >= 5 else 1), reboot=name(2), wifi=name(4))


def say(text: str) -> None:
    """One line for the user."""
    print(f"[demo] {text}", flush=True)


def parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="./scripts/demo",
        description="mosquitto, a real Home Assistant and simulated HomeSync plugs on 127.0.0.1;"
        " Ctrl-C stops everything. State and logs in .demo/.",
    )
    p.add_argument("--port", type=int, default=8123, help="Home Assistant's HTTP port (8123)")
    p.add_argument("--nodes", type=int, default=12, help="simulated plugs (12)")
    p.add_argument("--fresh", action="store_true", help="forget .demo/ and start over")
    p.add_argument(
        "--broker",
        choices=("mosquitto", "rabbitmq"),
        default="mosquitto",
        help="mosquitto (default) or a 3-member RabbitMQ cluster (~20-60 s to start)",
    )
    p.add_argument(
        "--acl",
        action="store_true",
        help="mosquitto with logins and the HomeSync ACL (one login per plug, user = node id)",
    )
    p.add_argument(
        "--micropython",
        type=int,
        default=2,
        metavar="K",
        help="run the last K plugs under real MicroPython (2; 0 = all CPython)",
    )
    p.add_argument("--dir", type=Path, default=REPO / ".demo", help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help="debug log of the integration")
    p.add_argument(
        "--exit-after", type=float, help=argparse.SUPPRESS
    )  # tests: stop by itself after N s of running
    return p


def _signal_to_stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_pids(root: Path) -> dict[str, int]:
    """Parts of an earlier run that are still alive (its launcher was killed)."""
    pids = _load_json(root / "pids.json")
    out: dict[str, int] = {}
    for part, pid in pids.items():
        if isinstance(pid, int) and _alive(pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmdline or "firmware.sim" in cmdline:
                out[part] = pid
    return out


class Demo:
    """One run of the demo."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root: Path = args.dir.resolve()
        self.stack = Stack()
        self.pids: dict[str, int] = {}
        self.broker: Mosquitto | None = None
        self.cluster: RabbitCluster | None = None
        self.node_brokers: list[str] = []  # the plugs' mqtt.brokers list (cluster only)
        self.logins: dict[str, str] = {}  # --acl: HA's and the plugs' broker passwords
        self.hass: Hass | None = None
        self.fleet: Fleet | None = None
        self.client: HassClient | None = None

    def _record(self, part: str, pid: int | None) -> None:
        if pid is not None:
            self.pids[part] = pid
            _write_private(self.root / "pids.json", self.pids)

    def prepare(self) -> dict[str, Any]:
        """Check ports and leftovers; ``--fresh``; the login (generated on first run)."""
        left = leftover_pids(self.root)
        if left:
            raise PartError(
                "demo",
                "an earlier demo is still running ("
                + ", ".join(f"{k} pid {v}" for k, v in left.items())
                + "); stop it with Ctrl-C in its terminal or `kill "
                + " ".join(str(v) for v in left.values())
                + "`",
            )
        if self.args.fresh and self.root.exists():
            say(f"--fresh: removing {self.root}")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        if port_in_use(self.args.port):
            raise PartError(
                "home assistant",
                f"port {self.args.port} is already in use; pick another with --port",
            )
        url = f"http://127.0.0.1:{self.args.port}"
        login = _load_json(self.root / "login.json")
        if not login.get("password"):
            login = {"username": USERNAME, "password": secrets.token_urlsafe(12)}
        login["url"] = url
        login["username"] = login.get("username") or USERNAME
        _write_private(self.root / "login.json", {"url": url, **login})
        return login

    def rel(self, path: Path) -> str:
        """A path as the user would type it (relative to the repository when inside it)."""
        try:
            return str(path.relative_to(REPO))
        except ValueError:
            return str(path)

    def start(self) -> None:
        """Bring every part up, in order; configure what the user sees first."""
        t0 = time.monotonic()
        login = self.prepare()
        if self.args.acl and self.args.broker != "mosquitto":
            raise PartError("demo", "--acl is for mosquitto (docs/security.md for RabbitMQ)")
        if self.args.broker == "rabbitmq":
            ha_port, node_port = self.start_cluster()
        else:
            ha_port = node_port = self.start_broker()
        self.start_hass(ha_port)
        say(f"Home Assistant answers after {time.monotonic() - t0:.0f} s; onboarding")
        assert self.hass is not None
        self.client = onboard(self.hass, login["username"], login["password"], name="Demo")
        if self.logins:
            add_mqtt_entry(self.client, "127.0.0.1", ha_port, HA_USER, self.logins[HA_USER])
        else:
            add_mqtt_entry(self.client, "127.0.0.1", ha_port)
        leftovers = onboarding_leftovers(self.client)
        if leftovers:  # first run only: keep the first page clean
            say(f"restarting Home Assistant once to unload {', '.join(leftovers)} (onboarding)")
            self.client.close()
            self.hass.restart()
            self.client = onboard(self.hass, login["username"], login["password"])
        plot = scenario(self.args.nodes)
        self.start_fleet(node_port, plot)
        self.configure()
        say(f"ready after {time.monotonic() - t0:.0f} s")
        self.banner(login, plot)

    def start_broker(self) -> int:
        """mosquitto on the port of the last run when it is still free."""
        state = _load_json(self.root / "state.json")
        port = state.get("broker_port")
        if not isinstance(port, int) or port_in_use(port):
            port = free_port()
        _write_private(self.root / "state.json", {**state, "broker_port": port})
        if self.args.acl:
            self.logins = self.broker_logins()
            self.broker = Mosquitto(
                self.root / "mosquitto",
                port,
                acl=HOMESYNC_ACL,
                passwords={HA_USER: self.logins[HA_USER]}
                | dict.fromkeys(self.node_ids(), self.logins["plugs"]),
            )
        else:
            self.broker = Mosquitto(self.root / "mosquitto", port)
        say(
            f"starting mosquitto on 127.0.0.1:{port}"
            + (" with logins and the HomeSync ACL" if self.args.acl else "")
            + f" (log {self.rel(self.broker.log_path)})"
        )
        self.stack.add("mosquitto", self.broker.stop)  # SIGTERM; SIGKILL after 10 s
        self.broker.start()
        self._record("mosquitto", self.broker.pid)
        return port

    def node_ids(self) -> list[str]:
        """The plugs' node ids (the simulator's naming: plug-01, plug-02 ...)."""
        return [f"plug-{i + 1:02d}" for i in range(self.args.nodes)]

    def broker_logins(self) -> dict[str, str]:
        """--acl: passwords for Home Assistant and the plugs, generated once, kept 0600.

        The demo gives every plug the same password (each still logs in as its own node id,
        which is what the ACL checks); a real installation gives each plug its own.
        """
        path = self.root / "broker-logins.json"
        logins = _load_json(path)
        if not (isinstance(logins.get(HA_USER), str) and isinstance(logins.get("plugs"), str)):
            logins = {HA_USER: secrets.token_urlsafe(16), "plugs": secrets.token_urlsafe(16)}
            _write_private(path, logins)
        return {HA_USER: logins[HA_USER], "plugs": logins["plugs"]}

    def start_cluster(self) -> tuple[int, int]:
        """Three RabbitMQ members; returns (Home Assistant's MQTT port, the plugs' first)."""
        if not available():
            raise PartError("rabbitmq", UNAVAILABLE)
        cluster = RabbitCluster(self.root / "rabbitmq", nodes=3)
        self.cluster = cluster
        say(
            "starting a 3-member RabbitMQ cluster on 127.0.0.1 (MQTT ports "
            + ", ".join(str(m.mqtt_port) for m in cluster.members)
            + f"; logs {self.rel(cluster.dir)}/rabbit*/log/); this takes 20-60 s"
        )
        self.stack.add("rabbitmq", cluster.stop)
        try:
            cluster.start()
        except RabbitError as err:
            raise PartError("rabbitmq", str(err), cluster.log_path) from None
        for member in cluster.members:
            if member.proc is not None:
                self._record(member.name.split("@")[0], member.proc.pid)
        say(f"cluster up after {cluster.start_seconds or 0:.0f} s")
        self.node_brokers = cluster.brokers
        return cluster.members[1].mqtt_port, cluster.members[0].mqtt_port

    def start_hass(self, broker_port: int) -> None:
        """Home Assistant on --port, its MQTT entry pointed at this run's broker."""
        config_dir = self.root / "config"
        login = (HA_USER, self.logins[HA_USER]) if self.logins else None
        patch_mqtt_port(config_dir, broker_port, login)
        try:  # the update each plug's Firmware entity offers (devstack/firmware.py)
            bundle = build_bundle(config_dir)
            say(f"firmware {bundle['version']} bundle built for the plugs' update entities")
        except (OSError, RuntimeError, ValueError) as err:
            say(f"no firmware update in this demo: {err}")
        self.hass = Hass(config_dir, self.args.port, debug=self.args.debug)
        if not self.hass.frontend:
            raise PartError(
                "home assistant", "the frontend package is missing: run ./scripts/setup --demo"
            )
        say(
            f"starting Home Assistant on {self.hass.url} (logs {self.rel(self.hass.stdout_path)},"
            f" {self.rel(self.hass.log_path)})"
        )
        hass = self.hass
        self.stack.add("home assistant", lambda: hass.stop(STOP_BUDGET_S["hass"]))
        self.hass.start()
        self._record("hass", self.hass.pid)

    def start_fleet(self, broker_port: int, plot: Scenario | None) -> None:
        """The simulated plugs; the last few under real MicroPython."""
        mp = self.args.micropython if micropython_available() else 0
        mp = max(0, min(mp, self.args.nodes - 4 if plot else self.args.nodes))
        node_config = plot.node_config() if plot else []
        if self.node_brokers:  # a cluster: every plug gets every member, its own first
            node_config.append(f"*:mqtt={json.dumps({'brokers': self.node_brokers})}")
        if self.logins:  # user name = node id: the ACL's %u
            node_config += [f"{n}:mqtt={json.dumps({'username': n})}" for n in self.node_ids()]
        self.fleet = Fleet(
            self.root / "fleet",
            broker_port,
            home=HOME,
            nodes=self.args.nodes,
            micropython=mp,
            faults=plot.faults() if plot else [],
            node_config=node_config,
            password=self.logins.get("plugs"),
            firmware=PLUG_FIRMWARE,
        )
        say(
            f"starting {self.args.nodes} simulated plugs ({mp} under MicroPython;"
            f" log {self.rel(self.fleet.log_path)})"
        )
        fleet = self.fleet
        self.stack.add("simulator", lambda: fleet.stop(STOP_BUDGET_S["simulator"]))
        self.fleet.start()
        self._record("simulator", self.fleet.pid)

    def configure(self) -> None:
        """Accept the discovered home, wait for every plug, write both dashboards."""
        client = self.client
        fleet_proc = self.fleet
        assert client is not None
        assert fleet_proc is not None
        accept_discovery(client, "heartbeat_iot", timeout=60)

        def everyone() -> FleetEntities | None:
            fleet_proc.check()
            fleet = fleet_entities(client)
            complete = [n for n in fleet.nodes.values() if {"energy", "relay"} <= n.entities.keys()]
            return fleet if len(complete) >= self.args.nodes and fleet.hub else None

        fleet = client.wait(everyone, 90, f"all {self.args.nodes} plugs with their entities")
        if configure_dashboard(client, fleet):
            say(f'dashboard "{DASHBOARD_TITLE}" is the default dashboard')
        configure_energy(client, fleet)

    def banner(self, login: dict[str, Any], plot: Scenario | None) -> None:
        """URL, login, what to watch, where the logs are."""
        assert self.hass is not None
        lines = [
            "",
            f"  Open   {self.hass.url}",
            f"  Login  {login['username']} / {login['password']}"
            f"   (also in {self.rel(self.root / 'login.json')})",
            "",
        ]
        if plot:
            lines += ["  What to watch (seconds after the plugs started):", *plot.story(), ""]
        lines += [
            "  Any time: each plug's Firmware entity offers an update (plugs run "
            f"{PLUG_FIRMWARE}); Install it",
            "",
        ]
        logs = [self.hass.stdout_path, self.hass.log_path]
        if self.broker is not None:
            logs.append(self.broker.log_path)
        if self.cluster is not None:
            logs += [m.log_path for m in self.cluster.members]
        if self.fleet is not None:
            logs.append(self.fleet.log_path)
        lines += [
            "  Logs:",
            *(f"    {self.rel(p)}" for p in logs),
            "",
            "  Ctrl-C stops everything.",
            "",
        ]
        print("\n".join(lines), flush=True)

    def watch(self) -> None:
        """Until stopped: a part that dies ends the demo with its log."""
        started = time.monotonic()
        while True:
            for part in (self.broker, self.hass, self.fleet):
                if part is not None and part.proc is not None:
                    part.proc.check()
            if self.cluster is not None:
                for member in self.cluster.members:
                    if not member.running:
                        raise PartError("rabbitmq", f"{member.name} exited", member.log_path)
            if (
                self.args.exit_after is not None
                and time.monotonic() - started > self.args.exit_after
            ):
                return
            time.sleep(1)

    def stop(self) -> None:
        """Simulator first (goodbyes), then Home Assistant, then the broker."""
        t0 = time.monotonic()
        started = bool(self.stack.parts)
        if self.client is not None:
            with contextlib.suppress(Exception):  # never keep a process alive for the client
                self.client.close()
        self.stack.stop(say)
        (self.root / "pids.json").unlink(missing_ok=True)
        if started:
            say(f"stopped in {time.monotonic() - t0:.1f} s; state kept in {self.rel(self.root)}/")


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C / SIGTERM."""
    args = parser().parse_args(argv)
    demo = Demo(args)
    signal.signal(signal.SIGTERM, _signal_to_stop)
    signal.signal(signal.SIGINT, _signal_to_stop)
    code = 0
    try:
        demo.start()
        demo.watch()
    except (Stopped, KeyboardInterrupt) as why:
        print()
        say(f"{why or 'interrupted'}: stopping")
    except PartError as err:
        say(f"ERROR {err}")
        if err.log_path is not None and tail(err.log_path):
            print(f"---- last lines of {err.log_path}:\n{tail(err.log_path)}", file=sys.stderr)
        code = 1
    except TimeoutError as err:
        say(f"ERROR {err}; see the logs in {demo.root}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
