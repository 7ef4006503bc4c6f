"""The whole chain, nothing mocked: firmware node -> broker -> HA's MQTT -> heartbeat_iot.

A simulated node (the firmware's ``App`` on the host HAL, run by ``firmware/simnode.py`` under
the real ``micropython`` when installed, else CPython) talks to a real broker on loopback; Home
Assistant's real MQTT integration (a config entry pointing at that broker, not ``mqtt_mock``)
feeds our integration. A paho client on the same broker is the independent witness of what the
node really published.

Every scenario runs on two brokers (docs/brokers.md):

- ``mosquitto``: one broker on a free port, started per test (it starts in ~20 ms).
- ``rabbitmq``: a three-member RabbitMQ cluster (``devstack.rabbitmq``), started once per test
  session (~20 s) under the ``rabbitmq`` marker. The node connects to member 1, Home Assistant
  to member 2 and the witness to member 3, so every message crosses the cluster. RabbitMQ does
  not deliver retained messages to wildcard subscriptions (nor across members), so whatever HA
  needs must also arrive live: the hub announcement and the heartbeat's relay/LED state.

Each test has its own home id, so tests sharing the session's cluster cannot see each other's
retained messages or persistent sessions.

Real time throughout (no freezer): every wait is a bounded poll. Blocking harness calls (process
control, paho, rabbitmqctl) run in sync fixtures or in the executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import threading
import time
from typing import Any
import uuid

from homeassistant.components import mqtt
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util import dt as dt_util
from paho.mqtt import client as paho
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events

from custom_components.heartbeat_iot.const import (
    CONF_HEARTBEAT_INTERVAL,
    CONF_MIN_TIMEOUT,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
    DOMAIN,
    MANUFACTURER,
)
from devstack import rabbitmq
from devstack.firmware import load_test_harness

from .inprocess import homesync_on_broker, running_mosquitto, wait_until

REPO = Path(__file__).resolve().parents[2]
NODE = "plug1"
HEARTBEAT_S = 1  # the node's heartbeat and telemetry period
MIN_TIMEOUT_S = 5  # the options flow's minimum
TIMEOUT_S = max(MIN_TIMEOUT_S, 3 * HEARTBEAT_S)  # what the tracker must compute
KEEPALIVE_S = 4  # the node's MQTT keep-alive: the broker drops a silent client after 1.5x

BROKERS = ["mosquitto", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


harness = load_test_harness()
RUNTIME = "micropython" if os.access(harness.MICROPYTHON, os.X_OK) else "cpython"


# ---------------------------------------------------------------------------- brokers


@dataclass
class Site:
    """Where each party connects, and how to disturb the broker."""

    kind: str
    node_port: int  # the broker the node connects to first
    node_brokers: list[str]  # the node's mqtt.brokers list (its first entry is node_port)
    ha_port: int
    peer_port: int
    server: Any
    notes: list[str] = field(default_factory=list)

    @property
    def rabbit(self) -> bool:
        return self.kind == "rabbitmq"

    def restart(self) -> None:
        """Restart the broker: mosquitto stops and starts with its data; on the cluster the
        members HA and the node use restart one after the other, HA's first (a full stop of a
        RabbitMQ 3.10 cluster takes ~2 min to come back, see docs/brokers.md)."""
        if self.rabbit:
            self.server.rolling_restart([1, 0])
        else:
            self.server.stop()
            self.server.start()

    def client_connected(self, client_prefix: str) -> bool:
        """Whether the broker still holds a connection whose client id starts with the prefix."""
        if self.rabbit:
            out = self.server.ctl(1, "list_mqtt_connections", "client_id", "--quiet")
            return any(line.strip().startswith(client_prefix) for line in out.splitlines())
        log = self.server.log()
        return log.rfind(f"as {client_prefix}") > log.rfind(f"Client {client_prefix}")


@pytest.fixture(params=BROKERS)
def site(request: pytest.FixtureRequest, socket_enabled: None, tmp_path: Path) -> Iterator[Site]:
    """The broker under test: a fresh mosquitto, or the session's RabbitMQ cluster.

    The harness blocks creating any non-unix socket; ``socket_enabled`` lifts that for this
    test while its ``socket_allow_hosts(["127.0.0.1"])`` still limits connections to loopback.
    """
    if request.param == "rabbitmq":
        cluster: rabbitmq.RabbitCluster = request.getfixturevalue("rabbit_cluster")
        for index, member in enumerate(cluster.members):  # a failed test may have left one down
            if not member.running:
                cluster.start_member(index)
        ports = [m.mqtt_port for m in cluster.members]
        yield Site("rabbitmq", ports[0], cluster.brokers, ports[1], ports[2], cluster)
        return
    with running_mosquitto(tmp_path) as server:
        port = server.port
        yield Site("mosquitto", port, [f"127.0.0.1:{port}"], port, port, server)


@pytest.fixture
def home() -> str:
    """A home id of this test's own (the RabbitMQ cluster is shared by the session)."""
    return "e2e" + uuid.uuid4().hex[:8]


@pytest.fixture
def node_options() -> dict[str, Any]:
    """Extra firmware config of the node (a test parametrizes it to change one setting)."""
    return {}


@pytest.fixture
def node(site: Site, home: str, tmp_path: Path, node_options: dict[str, Any]) -> Iterator[Any]:
    """One firmware node, already booting; heartbeat and telemetry every second."""
    proc = harness.NodeProcess(
        str(tmp_path),
        site.node_port,
        NODE,
        home=home,
        runtime=RUNTIME,
        relay=False,
        heartbeat_interval=HEARTBEAT_S,
        telemetry_interval=HEARTBEAT_S,
        watchdog_s=0,  # a frozen node must stay frozen (no simulated watchdog reset)
        mqtt={"keepalive": KEEPALIVE_S, "brokers": site.node_brokers},
        **node_options,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(timeout=5)
        proc.close()


@pytest.fixture
def peer_factory(site: Site, home: str) -> Iterator[Callable[..., Any]]:
    """Independent paho witnesses subscribed to ``homesync/<home>/nodes/plug1/#``."""
    peers: list[Any] = []

    def make(port: int | None = None) -> Any:
        peer = harness.Peer(port or site.peer_port, home, NODE)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.close()  # joins paho's network thread (the harness checks for stray threads)


@pytest.fixture
def peer(peer_factory: Callable[..., Any]) -> Any:
    """A witness subscribed before the node connects (it sees every publication)."""
    return peer_factory()


class HubWitness:
    """Records what is published on ``homesync/<home>/hub/status`` (the hub announcement)."""

    def __init__(
        self, port: int, home: str, username: str | None = None, password: str | None = None
    ) -> None:
        self.topic = f"homesync/{home}/hub/status"
        self.messages: list[tuple[float, Any, bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="hubwitness-" + uuid.uuid4().hex[:8]
        )
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(self.topic, qos=1)
        if not subscribed.wait(5):
            raise AssertionError("hub witness could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        with self._lock:
            self.messages.append((time.monotonic(), payload, msg.retain))

    def get(self, since: float = 0.0) -> list[tuple[float, Any, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0] >= since]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def hub_witness(site: Site, home: str) -> Iterator[HubWitness]:
    witness = HubWitness(site.peer_port, home)
    try:
        yield witness
    finally:
        witness.close()


@pytest.fixture
def options() -> dict[str, Any]:
    """Integration options: short timeouts for real-time tests."""
    return {
        **DEFAULT_OPTIONS,
        CONF_HEARTBEAT_INTERVAL: HEARTBEAT_S,
        CONF_MIN_TIMEOUT: MIN_TIMEOUT_S,
        CONF_TIMEOUT_MULTIPLIER: 3.0,
    }


@dataclass
class Chain:
    """One running chain: HA + our entry, the node, the witnesses and the broker."""

    hass: HomeAssistant
    home: str
    site: Site
    node: Any
    peer: Any
    hub_witness: HubWitness
    entry: MockConfigEntry
    started: float

    # ---------------------------------------------------------------- entities

    def entity_id(self, platform: str, key: str) -> str | None:
        return er.async_get(self.hass).async_get_entity_id(
            platform, DOMAIN, f"{self.home}_{NODE}_{key}"
        )

    def state(self, platform: str, key: str) -> Any:
        eid = self.entity_id(platform, key)
        return None if eid is None else self.hass.states.get(eid)

    def is_state(self, platform: str, key: str, value: str) -> bool:
        current = self.state(platform, key)
        return current is not None and current.state == value

    def device(self) -> dr.DeviceEntry | None:
        eid = self.entity_id("binary_sensor", "connectivity")
        registry_entry = er.async_get(self.hass).async_get(eid) if eid else None
        if registry_entry is None or registry_entry.device_id is None:
            return None
        return dr.async_get(self.hass).async_get(registry_entry.device_id)

    # ---------------------------------------------------------------- waiting

    async def wait_online(self, timeout: float = 15) -> None:
        def online() -> bool:
            assert self.node.proc.poll() is None, "node exited:\n" + self.node.log()[-3000:]
            return self.is_state("binary_sensor", "connectivity", STATE_ON)

        await wait_until(online, timeout, "connectivity on")

    async def wait_announced(self, timeout: float = 10) -> None:
        """Wait until HA has sent its hub announcement (docs/protocol.md "Hub announcement").

        Nodes answer it by re-publishing their state, a re-published ``status/relay`` carrying
        the source of the last change; a test counting executions waits for it first, so
        that an answer is not counted as one (it comes up to ~5 s after HA's entry starts)."""

        def announced() -> bool:
            return any(
                isinstance(m[1], dict) and m[1].get("online") is True and not m[2]
                for m in self.hub_witness.get(self.started)
            )

        await wait_until(announced, timeout, "the hub announcement")

    async def wait_for_state(
        self, predicate: Callable[[], Any], timeout: float, what: str, needs: str
    ) -> None:
        """Wait for ``predicate``: state that, on RabbitMQ, only the live re-publication after
        the hub announcement brings (``needs``: relay state, firmware ...)."""
        await wait_until(predicate, timeout, what)

    async def call_switch(self, service: str) -> None:
        await self.hass.services.async_call(
            SWITCH_DOMAIN,
            service,
            {ATTR_ENTITY_ID: self.entity_id("switch", "relay")},
            blocking=True,
        )


@pytest.fixture
async def chain(
    hass: HomeAssistant,
    site: Site,
    home: str,
    peer: Any,
    hub_witness: HubWitness,
    node: Any,
    options: dict[str, Any],
) -> Any:
    """HA's real MQTT integration connected to the broker, then our entry; unloaded at the end.

    The node is already running when HA connects (HA restarting under a live fleet): what HA
    knows at start it knows from retained messages, or, where the broker keeps none for a
    wildcard subscriber (RabbitMQ), from the node's answer to the hub announcement.
    Depends on site, peer and node, so it is torn down first: HA disconnects while the broker
    is still there, then the node stops, then the broker.
    """
    started = time.monotonic()
    async with homesync_on_broker(
        hass,
        site.ha_port,
        home,
        options=options,
        # No "homeassistant/status" birth: its publish can still be pending when a test ends
        # right after a reconnect, and it is not part of what these tests look at.
        mqtt_options={"birth_message": {}},
    ) as entry:
        yield Chain(hass, home, site, node, peer, hub_witness, entry, started)


# ---------------------------------------------------------------------------- helpers


async def in_executor(hass: HomeAssistant, func: Callable[..., Any], *args: Any) -> Any:
    """Blocking harness calls (file polling, paho waits, rabbitmqctl) off the event loop."""
    return await hass.async_add_executor_job(func, *args)


def lwt_messages(peer: Any, since: float = 0.0) -> list[Any]:
    """``online: false`` publications (the LWT, or a graceful shutdown) seen on the broker."""
    return [
        m
        for m in peer.get("status/online", since)
        if not (isinstance(m[2], dict) and m[2].get("online") is True)
    ]


def relay_changes(peer: Any, since: float = 0.0) -> list[Any]:
    """``status/relay`` publications caused by a command (one per execution)."""
    return [
        m
        for m in peer.get("status/relay", since)
        if isinstance(m[2], dict) and m[2].get("source") == "command"
    ]


def track_states(hass: HomeAssistant, entity: str) -> tuple[list[tuple[float, Any]], Any]:
    """Every new state of ``entity`` with its monotonic time; returns (list, unsubscribe)."""
    seen: list[tuple[float, Any]] = []

    @callback
    def _changed(event: Event[EventStateChangedData]) -> None:
        if (new := event.data["new_state"]) is not None:
            seen.append((time.monotonic(), new))

    return seen, async_track_state_change_event(hass, [entity], _changed)


# ---------------------------------------------------------------------------- scenarios


async def test_node_appears_online_with_power(chain: Chain) -> None:
    """Birth and heartbeats from the real node make a device, connectivity on, and readings."""
    await chain.wait_online()
    conn = chain.state("binary_sensor", "connectivity")
    assert conn.attributes["timeout"] == TIMEOUT_S  # the announced 1 s interval was applied

    await wait_until(
        lambda: (s := chain.state("sensor", "power")) is not None
        and s.state not in ("unknown", "unavailable"),
        10,
        "a power reading",
    )
    power = float(chain.state("sensor", "power").state)
    # The value the node really sent (the witness may see it a moment after HA did).
    await wait_until(
        lambda: power in [m[2]["value"] for m in chain.peer.get("telemetry/power")],
        5,
        f"power {power} W among the node's publications",
    )

    device = chain.device()
    assert device is not None
    assert device.name == NODE
    assert device.manufacturer == MANUFACTURER
    assert chain.entry.entry_id in device.config_entries
    fw = chain.peer.wait_for("status/firmware", timeout=5)[2]
    assert fw["version"], fw
    # The firmware version: retained on mosquitto, re-published live after the announcement.
    await chain.wait_for_state(
        lambda: (d := chain.device()) is not None and d.sw_version == fw["version"],
        8,  # the node answers the announcement after a random 0-5 s (docs/protocol.md)
        "the device's firmware version",
        "firmware version",
    )


@pytest.mark.parametrize("node_options", [{"announce_spread_s": 0}])
async def test_a_node_answering_the_announcement_at_once_is_heard(chain: Chain) -> None:
    """Its firmware version reaches the device even when no retained copy does (RabbitMQ).

    The node answers the hub's announcement without its usual random delay: an announcement
    published at start races Home Assistant's own SUBSCRIBE (sent after a cooldown, a publish at
    once), so the hub announces only once it hears its probe come back (announce.py).
    """
    await chain.wait_online()
    fw = chain.peer.wait_for("status/firmware", timeout=5)[2]
    await chain.wait_for_state(
        lambda: (d := chain.device()) is not None and d.sw_version == fw["version"],
        8,
        "the device's firmware version",
        "firmware version",
    )


async def test_relay_command_confirmed_by_node(
    chain: Chain, peer_factory: Callable[..., Any]
) -> None:
    """switch.turn_on returns once the real node switched; its retained relay state says on."""
    await chain.wait_online()
    await chain.wait_for_state(
        lambda: chain.is_state("switch", "relay", STATE_OFF),
        8,
        "relay off (node's boot state)",
        "relay state",
    )
    since = time.monotonic()
    await chain.call_switch("turn_on")
    assert chain.is_state("switch", "relay", STATE_ON)  # confirmed, so no wait needed

    peer = chain.peer
    await wait_until(lambda: peer.get("command/relay", since), 5, "the command")
    await asyncio.sleep(0.2)
    command = peer.get("command/relay", since)
    assert len(command) == 1, command  # one attempt sufficed, no retry
    assert command[0][2]["action"] == "on"
    response = await in_executor(
        chain.hass,
        lambda: peer.wait_for(
            "response/command",
            lambda p: p.get("request_id") == command[0][2]["request_id"],
            since,
            5,
        ),
    )
    assert response[2]["status"] == "success", response

    # A fresh subscriber gets the retained state where the broker keeps it for it: on
    # mosquitto through any subscription, on RabbitMQ only on an exact topic on the member
    # the node published to (docs/brokers.md).
    if chain.site.rabbit:
        late = await in_executor(chain.hass, lambda: _exact_subscriber(chain))
    else:
        late = await in_executor(chain.hass, peer_factory)
    relay = await in_executor(chain.hass, lambda: late.wait_for("status/relay", timeout=5))
    assert relay[3] is True  # delivered as retained
    assert relay[2]["state"] == "on"
    assert relay[2]["source"] != "boot"


def _exact_subscriber(chain: Chain) -> Any:
    """A paho client on the node's member, subscribed to the exact status/relay topic."""
    topic = f"homesync/{chain.home}/nodes/{NODE}/status/relay"

    class Exact:
        def __init__(self) -> None:
            self.got: list[Any] = []
            self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
            self.client.on_message = lambda c, u, m: self.got.append(
                (time.monotonic(), "status/relay", json.loads(m.payload), m.retain)
            )
            self.client.connect("127.0.0.1", chain.site.node_port, 30)
            self.client.loop_start()
            self.client.subscribe(topic, 1)

        def wait_for(self, suffix: str, timeout: float) -> Any:
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline:
                    if self.got:
                        return self.got[0]
                    time.sleep(0.02)
                raise AssertionError(f"no retained {suffix} on {topic}")
            finally:
                self.client.disconnect()
                self.client.loop_stop()

    return Exact()


async def test_frozen_node_times_out_without_lwt(chain: Chain) -> None:
    """App loop frozen, TCP alive: no LWT on the broker, yet offline ("timeout") on time."""
    hass, peer, node = chain.hass, chain.peer, chain.node
    await chain.wait_online()
    # A few heartbeats in, so the tracker uses the node's announced 1 s interval.
    await wait_until(lambda: len(peer.get("status/heartbeat")) >= 2, 10, "two heartbeats")
    conn_id = chain.entity_id("binary_sensor", "connectivity")
    assert conn_id is not None
    assert hass.states.get(conn_id).attributes["timeout"] == TIMEOUT_S

    seen, unsub = track_states(hass, conn_id)
    try:
        frozen_at = time.monotonic()
        await in_executor(hass, node.control, {"fault": "freeze"})
        await wait_until(
            lambda: [s for _, s in seen if s.state == STATE_OFF], TIMEOUT_S + 3, "offline"
        )
    finally:
        unsub()

    off_at, off_state = next((t, s) for t, s in seen if s.state == STATE_OFF)
    elapsed = off_at - frozen_at
    assert off_state.attributes["reason"] == "timeout", off_state.attributes
    # The last heartbeat came before the freeze, so the deadline is at most TIMEOUT_S away;
    # and it is not early: at most one heartbeat period (+ pick-up) was lost before the freeze.
    assert TIMEOUT_S - HEARTBEAT_S - 0.5 <= elapsed <= TIMEOUT_S + 1.0, elapsed
    last_seen = dt_util.parse_datetime(off_state.attributes["last_seen"])
    assert last_seen is not None
    silence = (off_state.last_changed - last_seen).total_seconds()
    assert TIMEOUT_S <= silence <= TIMEOUT_S + 1.0, silence

    # The session really stayed up. Wait until the broker would have dropped a silent client
    # (1.5 x keep-alive after the freeze), then: no LWT / online:false, the broker still holds
    # the node's connection (it kept pinging), no heartbeat after the freeze, the process is
    # alive and HA still says "timeout".
    await asyncio.sleep(max(0.0, frozen_at + 1.5 * KEEPALIVE_S + 0.5 - time.monotonic()))
    assert lwt_messages(peer) == []
    final = hass.states.get(conn_id)
    assert final.state == STATE_OFF
    assert final.attributes["reason"] == "timeout"
    assert await in_executor(hass, chain.site.client_connected, f"homesync_{chain.home}_{NODE}_")
    if not chain.site.rabbit:
        assert "exceeded timeout" not in chain.site.server.log()
        assert f"Received PINGREQ from homesync_{chain.home}_{NODE}_" in chain.site.server.log()
    assert node.proc.poll() is None
    beats_after = [m for m in peer.get("status/heartbeat") if m[0] > frozen_at + 0.2]
    assert beats_after == [], beats_after
    assert mqtt.is_connected(hass)


async def test_lwt_marks_node_offline_long_before_its_timeout(chain: Chain) -> None:
    """A node that dies (process killed, socket closed by the OS): the broker's will, offline
    with reason ``unexpected_disconnect`` long before the heartbeat timeout (after the will's 1 s
    hold, docs/availability.md)."""
    hass, peer, node = chain.hass, chain.peer, chain.node
    await chain.wait_online()
    conn_id = chain.entity_id("binary_sensor", "connectivity")
    assert conn_id is not None
    seen, unsub = track_states(hass, conn_id)
    offline_events = async_capture_events(hass, f"{DOMAIN}_node_offline")
    try:
        killed_at = time.monotonic()
        await in_executor(hass, node.kill)
        await wait_until(
            lambda: [s for _, s in seen if s.state == STATE_OFF], TIMEOUT_S, "offline by LWT"
        )
    finally:
        unsub()
    off_at, off_state = next((t, s) for t, s in seen if s.state == STATE_OFF)
    assert off_state.attributes["reason"] == "unexpected_disconnect", off_state.attributes
    assert off_at - killed_at < TIMEOUT_S / 2, off_at - killed_at  # the will, not the timeout
    will = lwt_messages(peer, killed_at)
    assert len(will) == 1, will
    assert will[0][2]["reason"] == "unexpected_disconnect"
    await hass.async_block_till_done()
    assert len(offline_events) == 1
    assert offline_events[0].data["reason"] == "unexpected_disconnect"


async def test_broker_restart_keeps_node_and_commands_working(
    chain: Chain, peer_factory: Callable[..., Any]
) -> None:
    """The broker restarts (a cluster: every member in turn): entities are unavailable while
    HA's link is down, the node is not declared offline, it is online again after, and
    commands work."""
    hass = chain.hass
    await chain.wait_online()
    await chain.call_switch("turn_on")
    assert chain.is_state("switch", "relay", STATE_ON)
    conn_id = chain.entity_id("binary_sensor", "connectivity")
    assert conn_id is not None
    seen, unsub = track_states(hass, conn_id)
    offline_events = async_capture_events(hass, f"{DOMAIN}_node_offline")
    restart_at = time.monotonic()
    try:
        await in_executor(hass, chain.site.restart)
        await wait_until(lambda: mqtt.is_connected(hass), 30, "HA's MQTT link back")
        await wait_until(
            lambda: (s := hass.states.get(conn_id)) is not None and s.state == STATE_ON,
            TIMEOUT_S + 15,
            "connectivity on after the restart",
        )
    finally:
        unsub()
    states = [(s.state, s.attributes.get("reason")) for _, s in seen]
    assert (STATE_UNAVAILABLE, None) in states, states  # HA's link was down: we could not know
    assert (STATE_OFF, "timeout") not in states, states
    # The node reconnected with its session and is heard live again (a new witness: paho's
    # clean session lost its subscription with the broker's restart).
    peer = await in_executor(hass, peer_factory)
    await wait_until(lambda: peer.get("status/heartbeat"), 10, "a heartbeat after the restart")
    assert chain.is_state("switch", "relay", STATE_ON)  # the last confirmed state is kept
    since = time.monotonic()
    await chain.call_switch("turn_off")
    assert chain.is_state("switch", "relay", STATE_OFF)
    # The node's retained status/relay follows its answer (a moment later under load).
    await wait_until(lambda: relay_changes(peer, since), 5, "the node's status/relay")
    await asyncio.sleep(0.5)
    # Every status/relay since says "off": the answer's, and maybe the same state again when
    # the node answers HA's hub announcement after the reconnect (docs/protocol.md).
    assert {m[2]["state"] for m in relay_changes(peer, since)} == {"off"}
    await hass.async_block_till_done()
    if chain.site.kind == "mosquitto":
        # mosquitto published the node's will as it shut down, a few ms before it closed HA's
        # link (the witness heard it too); the integration must not believe it
        # (docs/availability.md, wills and broker shutdowns). RabbitMQ sends no will here.
        assert lwt_messages(chain.peer, restart_at), "the broker sent no shutdown will"
    assert offline_events == [], [e.data for e in offline_events]
    assert (STATE_OFF, "unexpected_disconnect") not in states, states


# Spread 0: the node answers the hub announcement at once, so an answer falls inside the window
# where a second execution would be counted if the test did not wait for the announcement.
@pytest.mark.parametrize("node_options", [{"announce_spread_s": 0}])
async def test_queued_command_reaches_offline_node_once(chain: Chain) -> None:
    """A command queued for an offline node (``send_command`` with ``queue: true``) is
    delivered once when the node is back, and confirmed."""
    hass, peer, node = chain.hass, chain.peer, chain.node
    await chain.wait_online()
    # The node stops before it could answer; the one started below connects after the
    # announcement, so no re-published status/relay is counted as a second execution.
    await chain.wait_announced()
    device = chain.device()
    assert device is not None
    completed = async_capture_events(hass, f"{DOMAIN}_command_completed")

    await in_executor(hass, node.stop)  # graceful: online:false "shutdown", offline at once
    node._log.close()  # start() below opens the log again
    await wait_until(
        lambda: chain.is_state("binary_sensor", "connectivity", STATE_OFF), 10, "offline"
    )
    response = await hass.services.async_call(
        DOMAIN,
        "send_command",
        {"device_id": device.id, "command": "relay", "action": "on", "queue": True},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["status"] == "queued", response

    since = time.monotonic()
    await in_executor(hass, node.start)  # same state dir: same client id, same session
    await chain.wait_online(20)
    await wait_until(lambda: completed, 15, "the queued command completed")
    await wait_until(lambda: chain.is_state("switch", "relay", STATE_ON), 5, "relay on")
    await asyncio.sleep(1.0)  # room for a duplicate to show up
    commands = peer.get("command/relay", since)
    assert len({m[2]["request_id"] for m in commands}) == 1, commands
    assert len(relay_changes(peer, since)) == 1, peer.get("status/relay", since)
    assert len(completed) == 1


@pytest.mark.rabbitmq
@pytest.mark.parametrize("site", ["rabbitmq"], indirect=True)
async def test_member_stop_moves_node_to_another_member(chain: Chain) -> None:
    """Stop the cluster member the node is connected to: the node moves to another member
    (its broker list), HA never declares it offline (the gap stays within the timeout), and a
    command sent while it is between members is executed exactly once."""
    hass, peer, node = chain.hass, chain.peer, chain.node
    cluster: rabbitmq.RabbitCluster = chain.site.server
    await chain.wait_online()
    await wait_until(lambda: len(peer.get("status/heartbeat")) >= 2, 10, "two heartbeats")
    conn_id = chain.entity_id("binary_sensor", "connectivity")
    assert conn_id is not None
    first = cluster.members[0]
    connects_before = node.log().count("mqtt: connected to")
    assert f"mqtt: connected to 127.0.0.1:{first.mqtt_port}" in node.log()

    seen, unsub = track_states(hass, conn_id)
    offline_events = async_capture_events(hass, f"{DOMAIN}_node_offline")
    try:
        stopping = hass.async_add_executor_job(cluster.stop_member, 0)
        # Toggle while the node is between members: the command waits in the node's
        # persistent session (a quorum queue, replicated on the members still up). A toggle
        # executed twice would leave the relay where it was.
        await wait_until(lambda: not first.running or stopping.done(), 30, "member 1 stopping")
        since = time.monotonic()
        await chain.call_switch("toggle")
        await stopping
        await wait_until(
            lambda: node.log().count("mqtt: connected to") > connects_before,
            TIMEOUT_S,
            "the node reconnected",
        )
        await wait_until(lambda: chain.is_state("switch", "relay", STATE_ON), 10, "relay on")
        await asyncio.sleep(2 * HEARTBEAT_S + 1)  # room for a duplicate or a late timeout
    finally:
        unsub()
    log = node.log()
    tail = log[log.rfind("mqtt: connected to") :]
    assert f":{first.mqtt_port} " not in tail.splitlines()[0], tail[:200]  # another member
    assert [s.state for _, s in seen if s.state != STATE_ON] == [], [
        (s.state, s.attributes.get("reason")) for _, s in seen
    ]
    assert offline_events == []
    # One toggle, from off: every status/relay since says "on" (the node re-publishes the same
    # state when it connects to the next member; a second execution would say "off").
    assert {m[2]["state"] for m in relay_changes(peer, since)} == {"on"}, peer.get(
        "status/relay", since
    )
    commands = peer.get("command/relay", since)
    assert len({m[2]["request_id"] for m in commands}) == 1, commands
    responses = [m for m in peer.get("response/command", since) if m[2].get("status") == "success"]
    assert responses, peer.get("response/command", since)
    assert chain.is_state("switch", "relay", STATE_ON)
