"""The whole chain, nothing mocked: firmware node -> mosquitto -> HA's MQTT -> heartbeat_iot.

A simulated node (the firmware's ``App`` on the host HAL, run by ``firmware/simnode.py`` under
the real ``micropython`` when installed, else CPython) talks to a real mosquitto on a free
loopback port; Home Assistant's real MQTT integration (a config entry pointing at that broker,
not ``mqtt_mock``) feeds our integration. A paho client on the same broker is the independent
witness of what the node really published.

Real time throughout (no freezer): every wait is a bounded poll. Blocking harness calls (process
control, paho) run in sync fixtures or in the executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
import importlib.util
import os
from pathlib import Path
import time
from types import ModuleType
from typing import Any

from homeassistant.components import mqtt
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import (
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MIN_TIMEOUT,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
    DOMAIN,
    MANUFACTURER,
)

REPO = Path(__file__).resolve().parents[2]
HOME = "e2e"
NODE = "plug1"
HEARTBEAT_S = 1  # the node's heartbeat and telemetry period
MIN_TIMEOUT_S = 5  # the options flow's minimum
TIMEOUT_S = max(MIN_TIMEOUT_S, 3 * HEARTBEAT_S)  # what the tracker must compute
KEEPALIVE_S = 4  # the node's MQTT keep-alive: mosquitto drops a silent client after 1.5x


def _load_harness() -> ModuleType:
    """The firmware tests' broker/node/peer harness, loaded by path.

    Importing it as ``firmware.tests.harness`` would run ``firmware/__init__.py``, which puts
    the firmware folder (``main.py``, ``boot.py`` ...) at the front of this process's sys.path.
    """
    path = REPO / "firmware" / "tests" / "harness.py"
    spec = importlib.util.spec_from_file_location("_heartbeat_iot_e2e_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
RUNTIME = "micropython" if os.access(harness.MICROPYTHON, os.X_OK) else "cpython"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def broker(socket_enabled: None, tmp_path: Path) -> Iterator[Any]:
    """A real mosquitto on a free loopback port (retried if the port was taken meanwhile).

    The harness blocks creating any non-unix socket; ``socket_enabled`` lifts that for this
    test while its ``socket_allow_hosts(["127.0.0.1"])`` still limits connections to loopback.
    """
    for attempt in range(3):
        workdir = tmp_path / f"broker{attempt}"
        workdir.mkdir()
        server = harness.Broker(str(workdir))
        server.start()
        time.sleep(0.1)
        if server.proc is not None and server.proc.poll() is None:
            break
        server.stop()  # lost the race for the port: another process listens there
    else:
        pytest.fail("mosquitto did not stay up on a free port")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def node(broker: Any, tmp_path: Path) -> Iterator[Any]:
    """One firmware node, already booting; heartbeat and telemetry every second."""
    proc = harness.NodeProcess(
        str(tmp_path),
        broker.port,
        NODE,
        home=HOME,
        runtime=RUNTIME,
        relay=False,
        heartbeat_interval=HEARTBEAT_S,
        telemetry_interval=HEARTBEAT_S,
        watchdog_s=0,  # a frozen node must stay frozen (no simulated watchdog reset)
        mqtt={"keepalive": KEEPALIVE_S},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(timeout=5)
        proc.close()


@pytest.fixture
def peer_factory(broker: Any) -> Iterator[Callable[[], Any]]:
    """Independent paho witnesses subscribed to ``homesync/e2e/nodes/plug1/#``."""
    peers: list[Any] = []

    def make() -> Any:
        peer = harness.Peer(broker.port, HOME, NODE)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.close()  # joins paho's network thread (the harness checks for stray threads)


@pytest.fixture
def peer(peer_factory: Callable[[], Any]) -> Any:
    """A witness subscribed before the node connects (it sees every publication)."""
    return peer_factory()


@pytest.fixture
def options() -> dict[str, Any]:
    """Integration options: short timeouts for real-time tests."""
    return {
        **DEFAULT_OPTIONS,
        CONF_HEARTBEAT_INTERVAL: HEARTBEAT_S,
        CONF_MIN_TIMEOUT: MIN_TIMEOUT_S,
        CONF_TIMEOUT_MULTIPLIER: 3.0,
    }


@pytest.fixture
async def chain(
    hass: HomeAssistant, broker: Any, peer: Any, node: Any, options: dict[str, Any]
) -> Any:
    """HA's real MQTT integration connected to the broker, then our entry; unloaded at the end.

    Depends on broker, peer and node, so it is torn down first: HA disconnects while the
    broker is still there, then the node stops, then the broker.
    """
    mqtt_entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={"broker": "127.0.0.1", "port": broker.port},
        version=1,
        minor_version=2,
    )
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"HomeSync {HOME}",
        data={CONF_HOME_ID: HOME},
        options=options,
        unique_id=HOME,
    )
    # MQTT reads configuration.yaml; conftest gives each test an empty config folder.
    config_yaml = Path(hass.config.path("configuration.yaml"))
    await hass.async_add_executor_job(config_yaml.write_text, "")
    try:
        mqtt_entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
        await wait_until(lambda: mqtt.is_connected(hass), 10, "HA's MQTT client connected")
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
        yield entry
    finally:
        for config_entry in (entry, mqtt_entry):
            if config_entry.state is ConfigEntryState.LOADED:
                await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()


# ---------------------------------------------------------------------------- helpers


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` on the event loop (real time) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def entity_id(hass: HomeAssistant, platform: str, key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{HOME}_{NODE}_{key}")


def state_of(hass: HomeAssistant, platform: str, key: str) -> Any:
    eid = entity_id(hass, platform, key)
    return None if eid is None else hass.states.get(eid)


def is_state(hass: HomeAssistant, platform: str, key: str, value: str) -> bool:
    current = state_of(hass, platform, key)
    return current is not None and current.state == value


async def in_executor(hass: HomeAssistant, func: Callable[..., Any], *args: Any) -> Any:
    """Blocking harness calls (file polling, paho waits) off the event loop."""
    return await hass.async_add_executor_job(func, *args)


async def wait_online(hass: HomeAssistant, node: Any) -> None:
    def online() -> bool:
        assert node.proc.poll() is None, "node exited:\n" + node.log()[-3000:]
        return is_state(hass, "binary_sensor", "connectivity", STATE_ON)

    await wait_until(online, 15, "connectivity on")


def lwt_messages(peer: Any, since: float = 0.0) -> list[Any]:
    """``online: false`` publications (the LWT, or a graceful shutdown) seen on the broker."""
    return [
        m
        for m in peer.get("status/online", since)
        if not (isinstance(m[2], dict) and m[2].get("online") is True)
    ]


# ---------------------------------------------------------------------------- tests


async def test_node_appears_online_with_power(
    hass: HomeAssistant, chain: MockConfigEntry, node: Any, peer: Any
) -> None:
    """Birth and heartbeats from the real node make a device, connectivity on, and readings."""
    await wait_online(hass, node)
    conn = state_of(hass, "binary_sensor", "connectivity")
    assert conn.attributes["timeout"] == TIMEOUT_S  # the announced 1 s interval was applied

    await wait_until(
        lambda: (s := state_of(hass, "sensor", "power")) is not None
        and s.state not in ("unknown", "unavailable"),
        10,
        "a power reading",
    )
    power = float(state_of(hass, "sensor", "power").state)
    # The value the node really sent (the witness may see it a moment after HA did).
    await wait_until(
        lambda: power in [m[2]["value"] for m in peer.get("telemetry/power")],
        5,
        f"power {power} W among the node's publications",
    )

    registry_entry = er.async_get(hass).async_get(entity_id(hass, "binary_sensor", "connectivity"))
    assert registry_entry is not None
    assert registry_entry.device_id is not None
    device = dr.async_get(hass).async_get(registry_entry.device_id)
    assert device is not None
    assert device.name == NODE
    assert device.manufacturer == MANUFACTURER
    assert chain.entry_id in device.config_entries
    fw = peer.wait_for("status/firmware", timeout=5)[2]
    assert fw["version"], fw


async def test_relay_command_confirmed_by_node(
    hass: HomeAssistant,
    chain: MockConfigEntry,
    node: Any,
    peer: Any,
    peer_factory: Callable[[], Any],
) -> None:
    """switch.turn_on returns once the real node switched; its retained relay state says on."""
    await wait_online(hass, node)
    await wait_until(
        lambda: is_state(hass, "switch", "relay", STATE_OFF), 10, "relay off (node's boot state)"
    )
    since = time.monotonic()
    await hass.services.async_call(
        SWITCH_DOMAIN,
        "turn_on",
        {ATTR_ENTITY_ID: entity_id(hass, "switch", "relay")},
        blocking=True,
    )
    assert is_state(hass, "switch", "relay", STATE_ON)  # confirmed, so no wait needed

    command = await wait_until(lambda: peer.get("command/relay", since), 5, "the command")
    await asyncio.sleep(0.2)
    command = peer.get("command/relay", since)
    assert len(command) == 1, command  # one attempt sufficed, no retry
    assert command[0][2]["action"] == "on"
    response = await in_executor(
        hass,
        lambda: peer.wait_for(
            "response/command",
            lambda p: p.get("request_id") == command[0][2]["request_id"],
            since,
            5,
        ),
    )
    assert response[2]["status"] == "success", response

    late = await in_executor(hass, peer_factory)  # a fresh subscriber gets the retained state
    relay = await in_executor(hass, lambda: late.wait_for("status/relay", timeout=5))
    assert relay[3] is True  # delivered as retained
    assert relay[2]["state"] == "on"
    assert relay[2]["source"] != "boot"


async def test_frozen_node_times_out_without_lwt(
    hass: HomeAssistant, chain: MockConfigEntry, node: Any, peer: Any, broker: Any
) -> None:
    """App loop frozen, TCP alive: no LWT on the broker, yet offline ("timeout") on time."""
    await wait_online(hass, node)
    # A few heartbeats in, so the tracker uses the node's announced 1 s interval.
    await wait_until(lambda: len(peer.get("status/heartbeat")) >= 2, 10, "two heartbeats")
    conn_id = entity_id(hass, "binary_sensor", "connectivity")
    assert conn_id is not None
    assert hass.states.get(conn_id).attributes["timeout"] == TIMEOUT_S

    went_off: list[tuple[float, Any]] = []

    @callback
    def _changed(event: Event[EventStateChangedData]) -> None:
        new = event.data["new_state"]
        if new is not None and new.state == STATE_OFF:
            went_off.append((time.monotonic(), new))

    unsub = async_track_state_change_event(hass, [conn_id], _changed)
    try:
        pings = f"Received PINGREQ from homesync_{HOME}_{NODE}_"
        pings_before = broker.log().count(pings)
        frozen_at = time.monotonic()
        await in_executor(hass, node.control, {"fault": "freeze"})
        await wait_until(lambda: went_off, TIMEOUT_S + 3, "connectivity off")
    finally:
        unsub()

    off_at, off_state = went_off[0]
    elapsed = off_at - frozen_at
    assert off_state.attributes["reason"] == "timeout", off_state.attributes
    # The last heartbeat came before the freeze, so the deadline is at most TIMEOUT_S away;
    # and it is not early: at most one heartbeat period (+ pick-up) was lost before the freeze.
    assert TIMEOUT_S - HEARTBEAT_S - 0.5 <= elapsed <= TIMEOUT_S + 1.0, elapsed
    last_seen = dt_util.parse_datetime(off_state.attributes["last_seen"])
    assert last_seen is not None
    silence = (off_state.last_changed - last_seen).total_seconds()
    assert TIMEOUT_S <= silence <= TIMEOUT_S + 1.0, silence

    # The session really stayed up. Wait until mosquitto would have dropped a silent client
    # (1.5 x keep-alive after the freeze), then: no LWT / online:false, the node kept pinging,
    # no heartbeat after the freeze, the process is alive and HA still says "timeout".
    await asyncio.sleep(max(0.0, frozen_at + 1.5 * KEEPALIVE_S + 0.5 - time.monotonic()))
    assert lwt_messages(peer) == []
    final = hass.states.get(conn_id)
    assert final.state == STATE_OFF
    assert final.attributes["reason"] == "timeout"
    assert broker.log().count(pings) > pings_before
    assert "exceeded timeout" not in broker.log()
    assert node.proc.poll() is None
    beats_after = [m for m in peer.get("status/heartbeat") if m[0] > frozen_at + 0.2]
    assert beats_after == [], beats_after
    assert mqtt.is_connected(hass)
