"""One real system for the end-to-end tests: mosquitto, a real ``hass`` and simulated nodes.

The same ``devstack`` code as ``./scripts/demo`` starts it once for the whole run (about 10 s);
the tests drive Home Assistant through its REST and WebSocket APIs only. A paho client on the
broker is the independent witness of what the nodes really published. Run without the
pytest-homeassistant plugin (it would block sockets): ``pytest e2e -p no:homeassistant``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import json
from pathlib import Path
import threading
import time
from typing import Any
import uuid

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
import pytest

from devstack.fleet import Fleet, micropython_available
from devstack.hass import Hass, HassClient, accept_discovery, add_mqtt_entry, onboard, set_options
from devstack.mosquitto import Mosquitto
from devstack.ui import FleetEntities, configure_dashboard, configure_energy, fleet_entities

HOME = "e2e"
USERNAME = "e2e"
PASSWORD = "e2e-" + uuid.uuid4().hex[:12]
HEARTBEAT_S = 2
# Integration options: offline after max(min_timeout, multiplier x heartbeat) = 6 s of silence;
# a command is tried 2 times, 1 s each.
OPTIONS = {"min_timeout": 5, "timeout_multiplier": 3, "command_timeout": 1, "command_retries": 2}
TIMEOUT_S = max(OPTIONS["min_timeout"], OPTIONS["timeout_multiplier"] * HEARTBEAT_S)
# Roles: which node each test uses (tests must not disturb each other's nodes).
RELAY = "e2e-01"
FROZEN = "e2e-02"
OUTAGE = "e2e-03"
RESTART = "e2e-04"
MUTE = "e2e-05"  # under real MicroPython when installed
NODES = [RELAY, FROZEN, OUTAGE, RESTART, MUTE]


class Witness:
    """A paho client recording every HomeSync message and the broker's client count."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[float, str, Any, bool]] = []  # (time.time(), topic, json, retain)
        self.connected_clients: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="e2e-witness-" + uuid.uuid4().hex[:6]
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(
            [(f"homesync/{HOME}/#", 1), ("$SYS/broker/clients/connected", 0)]
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError("witness could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        if msg.topic == "$SYS/broker/clients/connected":
            with self._lock:
                self.connected_clients.append((now, int(msg.payload)))
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        with self._lock:
            self.messages.append((now, msg.topic, payload, bool(msg.retain)))

    def node(self, node: str, suffix: str | None = None, since: float = 0.0) -> list[Any]:
        """Messages of one node (``suffix`` like ``status/heartbeat``) after ``since``."""
        base = f"homesync/{HOME}/nodes/{node}/"
        with self._lock:
            items = list(self.messages)
        return [
            m
            for m in items
            if m[1].startswith(base)
            and (suffix is None or m[1] == base + suffix)
            and m[0] >= since
            and not m[3]
        ]

    def clients_connected(self) -> int | None:
        """The broker's latest count of connected clients (it publishes it when it changes)."""
        with self._lock:
            return self.connected_clients[-1][1] if self.connected_clients else None

    def clients_after(self, since: float) -> list[int]:
        """``$SYS/broker/clients/connected`` values published after ``since``."""
        with self._lock:
            return [n for t, n in self.connected_clients if t >= since]

    def close(self) -> None:
        """Stop paho's network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class System:
    """The running system and helpers the tests share."""

    workdir: Path
    broker: Mosquitto
    hass: Hass
    fleet: Fleet
    client: HassClient
    witness: Witness
    entry_id: str = ""
    extra_fleets: list[Fleet] = field(default_factory=list)

    def entities(self) -> FleetEntities:
        """The integration's devices and entities, from the registries."""
        return fleet_entities(self.client)

    def entity(self, node: str, key: str) -> str:
        """Entity id of one node's entity (``relay``, ``connectivity``, ``energy``...)."""
        for item in self.entities().nodes.values():
            if item.name == node and key in item.entities:
                return item.entities[key]
        raise AssertionError(f"{node} has no {key} entity")

    def device_id(self, node: str) -> str:
        """Device id of a node."""
        for item in self.entities().nodes.values():
            if item.name == node:
                return item.device_id
        raise AssertionError(f"no device for {node}")

    def state(self, entity_id: str) -> dict[str, Any]:
        """Current state object (REST)."""
        state = self.client.state(entity_id)
        assert state is not None, f"{entity_id} unknown to Home Assistant"
        return state

    def wait_state(self, entity_id: str, value: str, timeout: float) -> dict[str, Any]:
        """Poll until ``entity_id`` has state ``value``."""

        def check() -> dict[str, Any] | None:
            state = self.client.state(entity_id)
            return state if state is not None and state["state"] == value else None

        result: dict[str, Any] = self.client.wait(check, timeout, f"{entity_id} == {value}")
        return result

    def sim_log(self) -> str:
        """Everything the simulator printed so far."""
        return self.fleet.log_path.read_text(errors="replace")

    def all_online(self, nodes: list[str], timeout: float = 30) -> None:
        """Wait until every node's connectivity is on."""
        for node in nodes:
            self.wait_state(self.entity(node, "connectivity"), "on", timeout)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """mosquitto + hass + five nodes; onboarded, MQTT entry, our entry, short options."""
    workdir = tmp_path_factory.mktemp("system")
    broker = Mosquitto(workdir / "mosquitto")
    hass = Hass(workdir / "config", title="HomeSync e2e", debug=True)
    fleet = Fleet(
        workdir / "fleet",
        broker.port,
        home=HOME,
        nodes=len(NODES),
        prefix="e2e",
        heartbeat=HEARTBEAT_S,
        telemetry=HEARTBEAT_S,
        keepalive=10,
        micropython=1 if micropython_available() else 0,
        node_config=[f"{FROZEN}:watchdog_s=0"],  # frozen stays frozen
    )
    started: list[Any] = []
    witness: Witness | None = None
    client: HassClient | None = None
    system: System | None = None
    try:
        broker.start()
        started.append(broker)
        witness = Witness(broker.port)
        hass.start()
        started.append(hass)
        client = api = onboard(hass, USERNAME, PASSWORD, name="E2E")
        add_mqtt_entry(api, broker.host, broker.port)
        fleet.start()
        started.append(fleet)
        entry = accept_discovery(api, "heartbeat_iot", timeout=60)
        system = System(workdir, broker, hass, fleet, api, witness, entry["entry_id"])
        set_options(api, system.entry_id, OPTIONS)

        def complete() -> FleetEntities | None:
            fleet.check()
            found = fleet_entities(api)
            names = {
                n.name for n in found.nodes.values() if {"energy", "relay"} <= n.entities.keys()
            }
            return found if set(NODES) <= names and found.hub else None

        found = api.wait(complete, 60, "every node with its entities")
        configure_dashboard(api, found, force=True)
        configure_energy(api, found)
        system.all_online(NODES)
        yield system
        for extra in system.extra_fleets:
            extra.stop()
    finally:
        if system is not None:
            client = system.client  # a test that restarts hass logs in again
        if client is not None:
            client.close()
        for part in reversed(started):  # simulator, hass, broker
            part.stop()
        if witness is not None:
            witness.close()
