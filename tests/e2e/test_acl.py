"""The HomeSync ACL on a real mosquitto, with the real node and Home Assistant's real client.

mosquitto runs with a password file and the project's acl_file (``devstack.mosquitto``
``HOMESYNC_ACL``, the same text as ``examples/mosquitto/acl``, docs/security.md): every node
logs in with its node id as user name and may write only below its own node id, Home
Assistant's user reads everything and writes commands. An attacker holding *another* node's
valid credentials (the worst case short of stealing the broker) then tries every forgery that
works on an open broker: a will, a status, a reading, an answer and a command for our node.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import secrets
import threading
import time
from typing import Any

from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from paho.mqtt import client as paho
import pytest

from devstack.mosquitto import HA_USER, HOMESYNC_ACL, Mosquitto

from .inprocess import homesync_on_broker, wait_until
from .test_real_chain import (
    HEARTBEAT_S,
    KEEPALIVE_S,
    NODE,
    REPO,
    RUNTIME,
    Chain,
    HubWitness,
    Site,
    harness,
    in_executor,
    lwt_messages,
    relay_changes,
    track_states,
)

HOME = "acl"
OTHER = "plug2"  # the attacker: a real user of this broker, but another node


def test_example_acl_file_is_the_tested_one() -> None:
    """examples/mosquitto/acl is exactly what this test runs (minus its header comment)."""
    example = (REPO / "examples" / "mosquitto" / "acl").read_text()
    body = "".join(line for line in example.splitlines(keepends=True) if not line.startswith("##"))
    assert body.strip() == HOMESYNC_ACL.strip()


@pytest.fixture
def passwords() -> dict[str, str]:
    return {HA_USER: secrets.token_urlsafe(16), NODE: secrets.token_urlsafe(16), OTHER: "x" * 12}


@pytest.fixture
def secured(socket_enabled: None, tmp_path: Path, passwords: dict[str, str]) -> Iterator[Any]:
    broker = Mosquitto(tmp_path / "broker", acl=HOMESYNC_ACL, passwords=passwords)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Attacker:
    """A paho client with the other node's credentials; records what the broker answers."""

    def __init__(self, port: int, user: str | None, password: str | None, **will: Any) -> None:
        self.rc: Any = None
        self.connected = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="attacker-" + secrets.token_hex(4)
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if will:
            self.client.will_set(**will)
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.rc = rc
        self.connected.set()

    def wait(self) -> Any:
        assert self.connected.wait(5), "no CONNACK"
        return self.rc

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        info.wait_for_publish(5)  # mosquitto acknowledges a refused publish and drops it

    def cut(self) -> None:
        """Drop the TCP connection without DISCONNECT (the broker then sends the will)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def acl_chain(
    hass: HomeAssistant, secured: Any, passwords: dict[str, str], tmp_path: Path
) -> Any:
    """Witness (HA's user), node plug1 with its credentials, HA's MQTT and our entry."""
    peer = harness.Peer(secured.port, HOME, NODE, username=HA_USER, password=passwords[HA_USER])
    hub_witness = HubWitness(secured.port, HOME, username=HA_USER, password=passwords[HA_USER])
    node = harness.NodeProcess(
        str(tmp_path),
        secured.port,
        NODE,
        home=HOME,
        runtime=RUNTIME,
        relay=False,
        heartbeat_interval=HEARTBEAT_S,
        telemetry_interval=HEARTBEAT_S,
        mqtt={"keepalive": KEEPALIVE_S, "username": NODE, "password": passwords[NODE]},
    )
    node.start()
    site = Site("mosquitto", secured.port, [], secured.port, secured.port, secured)
    try:
        async with homesync_on_broker(
            hass,
            secured.port,
            HOME,
            mqtt_data={"username": HA_USER, "password": passwords[HA_USER]},
            mqtt_options={"birth_message": {}},
        ) as entry:
            yield Chain(hass, HOME, site, node, peer, hub_witness, entry, time.monotonic())
    finally:
        await hass.async_add_executor_job(node.stop, 5)
        node.close()
        peer.close()
        hub_witness.close()


def _topic(node: str, suffix: str) -> str:
    return f"homesync/{HOME}/nodes/{node}/{suffix}"


async def test_node_with_credentials_writes_only_its_own_topics(
    acl_chain: Chain, secured: Any, passwords: dict[str, str]
) -> None:
    """Our node works (HA sees everything, its commands arrive); another node's credentials
    cannot forge a will, status, reading, answer or command for it: the broker drops them."""
    hass, peer, node = acl_chain.hass, acl_chain.peer, acl_chain.node
    await acl_chain.wait_online()
    await acl_chain.call_switch("turn_on")  # HA writes a command, the node answers
    assert acl_chain.is_state("switch", "relay", STATE_ON)
    await wait_until(
        lambda: (s := acl_chain.state("sensor", "power")) is not None
        and s.state not in ("unknown", "unavailable"),
        10,
        "a power reading",
    )
    conn_id = acl_chain.entity_id("binary_sensor", "connectivity")
    assert conn_id is not None
    seen, unsub = track_states(hass, conn_id)
    other = await in_executor(
        hass, lambda: harness.Peer(secured.port, HOME, OTHER, **_ha(passwords))
    )
    since = time.monotonic()
    forged_will = {"online": False, "reason": "unexpected_disconnect"}
    try:
        # 1. A will for our node, registered by a client with the other node's login.
        attacker = await in_executor(
            hass,
            lambda: Attacker(
                secured.port,
                OTHER,
                passwords[OTHER],
                topic=_topic(NODE, "status/online"),
                payload=json.dumps(forged_will),
                qos=1,
                retain=True,
            ),
        )
        will_rc = await in_executor(hass, attacker.wait)
        if not will_rc.is_failure:
            await in_executor(hass, attacker.cut)  # the broker would now send the will

        # 2. Live forgeries on our node's topics, with the other node's valid login.
        liar = await in_executor(hass, lambda: Attacker(secured.port, OTHER, passwords[OTHER]))
        assert not (await in_executor(hass, liar.wait)).is_failure
        for suffix, payload, retain in (
            ("status/online", forged_will, True),
            ("telemetry/power", {"value": 9999.0, "unit": "W"}, False),
            ("response/command", {"request_id": "forged", "status": "success"}, False),
            ("command/relay", {"action": "off", "request_id": "forged-cmd"}, False),
        ):
            await in_executor(hass, liar.publish, _topic(NODE, suffix), payload, retain)
        # Control: the same client may write its own node's topics, and that arrives.
        await in_executor(
            hass,
            liar.publish,
            _topic(OTHER, "status/heartbeat"),
            {"seq": 1, "uptime": 5, "interval": 30},
        )
        await in_executor(hass, lambda: other.wait_for("status/heartbeat", since=since, timeout=5))
        await hass.async_add_executor_job(time.sleep, 2 * HEARTBEAT_S)
        await in_executor(hass, liar.close)
    finally:
        unsub()
        await in_executor(hass, other.close)

    # Nothing forged reached a subscriber (the witness reads with HA's login: everything).
    forged = [
        m
        for m in peer.get(since=since)
        if m[1] in ("telemetry/power", "response/command", "command/relay")
        and isinstance(m[2], dict)
        and (m[2].get("value") == 9999.0 or "forged" in str(m[2].get("request_id")))
    ]
    assert forged == [], forged
    assert lwt_messages(peer, since) == []
    # HA saw no offline, no 9999 W, and the relay stayed on; the node never got the "off".
    assert [s.state for _, s in seen if s.state != STATE_ON] == []
    assert acl_chain.is_state("binary_sensor", "connectivity", STATE_ON)
    assert float(acl_chain.state("sensor", "power").state) != 9999.0
    assert acl_chain.is_state("switch", "relay", STATE_ON)
    assert [m for m in relay_changes(peer, since) if m[2]["state"] != "on"] == []
    assert "forged-cmd" not in node.log()
    assert f"u'{OTHER}'" in secured.log_path.read_text()  # the forgers really were connected
    # A fresh subscriber with HA's login gets our node's retained birth, not the forgery.
    late = await in_executor(hass, lambda: harness.Peer(secured.port, HOME, NODE, **_ha(passwords)))
    try:
        birth = await in_executor(hass, lambda: late.wait_for("status/online", timeout=5))
        assert birth[2]["online"] is True, birth
    finally:
        await in_executor(hass, late.close)


def _ha(passwords: dict[str, str]) -> dict[str, str]:
    return {"username": HA_USER, "password": passwords[HA_USER]}


async def test_anonymous_and_wrong_password_are_refused(
    hass: HomeAssistant, secured: Any, passwords: dict[str, str]
) -> None:
    """No login, or a wrong password: CONNACK refuses the connection."""
    for user, password in ((None, None), (NODE, "wrong-password"), ("nobody", "x")):
        client = await in_executor(hass, lambda u=user, p=password: Attacker(secured.port, u, p))
        try:
            rc = await in_executor(hass, client.wait)
            assert rc.is_failure, (user, rc)
        finally:
            await in_executor(hass, client.close)
