"""What the two brokers do differently, pinned (docs/brokers.md, "What differs").

Plain paho clients, no Home Assistant: each test states one row of the table in
docs/brokers.md for mosquitto 2.0 and for the RabbitMQ 3.10 cluster, so a broker upgrade that
changes a behaviour HomeSync copes with shows up here first. The cluster is the session's
(``rabbit_cluster`` in conftest.py); mosquitto is started per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
import threading
import time
from typing import Any
import uuid

from paho.mqtt import client as paho
import pytest

from devstack import rabbitmq
from devstack.mosquitto import Mosquitto


@dataclass
class Broker:
    kind: str
    ports: list[int]  # one per member (mosquitto: the same port three times)
    server: Any


@pytest.fixture(params=["mosquitto", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker(
    request: pytest.FixtureRequest, socket_enabled: None, tmp_path: Path
) -> Iterator[Broker]:
    if request.param == "rabbitmq":
        cluster: rabbitmq.RabbitCluster = request.getfixturevalue("rabbit_cluster")
        for index, member in enumerate(cluster.members):
            if not member.running:
                cluster.start_member(index)
        yield Broker("rabbitmq", [m.mqtt_port for m in cluster.members], cluster)
        return
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    try:
        yield Broker("mosquitto", [server.port] * 3, server)
    finally:
        server.stop()


class Client:
    """A paho client that records what it receives and its CONNACK."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        clean: bool = True,
        will: tuple[str, bytes] | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.messages: list[Any] = []
        self.session_present: bool | None = None
        self._connected = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id or "b-" + uuid.uuid4().hex[:8],
            clean_session=clean,
            manual_ack=manual_ack,
        )
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_connect = self._on_connect
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=False)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(10), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.session_present = flags.session_present
        self._connected.set()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def got(self, topic: str, wait: float = 1.0) -> list[Any]:
        time.sleep(wait)
        return [m for m in self.messages if m.topic == topic]

    def cut(self) -> None:
        """Close the socket without DISCONNECT."""
        self.client.loop_stop()
        if (sock := self.client.socket()) is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _topic() -> str:
    return f"homesync/b{uuid.uuid4().hex[:8]}/nodes/n1/status/online"


def test_retained_message_and_wildcard_subscription(broker: Broker, clients: list[Client]) -> None:
    """mosquitto: retained reaches wildcard and exact subscribers. RabbitMQ: exact only, and
    only on the member that received it."""
    topic = _topic()
    home = topic.split("/")[1]
    publisher = Client(broker.ports[0])
    clients.append(publisher)
    publisher.publish(topic, b'{"online": true}', retain=True)
    time.sleep(0.3)
    seen = {}
    for name, port, filt in (
        ("wildcard", broker.ports[0], f"homesync/{home}/nodes/#"),
        ("exact", broker.ports[0], topic),
        ("exact, other member", broker.ports[1], topic),
    ):
        sub = Client(port)
        clients.append(sub)
        sub.subscribe(filt)
        seen[name] = bool(sub.got(topic, 0.5))
    if broker.kind == "rabbitmq":
        assert seen == {"wildcard": False, "exact": True, "exact, other member": False}
    else:
        assert seen == {"wildcard": True, "exact": True, "exact, other member": True}


@pytest.mark.parametrize("clean", [False, True], ids=["persistent", "clean"])
def test_will_on_session_takeover(broker: Broker, clients: list[Client], clean: bool) -> None:
    """A second CONNECT with the same client id closes the first connection. mosquitto sends
    its will only when the session ends with it (clean session); with a persistent session
    (what HomeSync nodes use) neither broker sends a will."""
    will_topic = _topic()
    witness = Client(broker.ports[2])
    clients.append(witness)
    witness.subscribe(will_topic)
    client_id = "takeover-" + uuid.uuid4().hex[:8]
    first = Client(broker.ports[0], client_id, clean=clean, will=(will_topic, b"gone"))
    first.client.reconnect_delay_set(60, 60)  # the old one must not take the id back
    clients.append(first)
    second = Client(broker.ports[1], client_id, clean=clean)
    clients.append(second)
    wills = witness.got(will_topic, 1.5)
    expected = 1 if broker.kind == "mosquitto" and clean else 0
    assert len(wills) == expected, wills


def test_unacknowledged_qos1_is_redelivered_with_dup(broker: Broker, clients: list[Client]) -> None:
    """A QoS 1 message delivered but not acknowledged before the link drops comes again at
    the next connect of the same session, with DUP=1 (both brokers)."""
    topic = _topic().replace("status/online", "command/relay")
    client_id = "redeliver-" + uuid.uuid4().hex[:8]
    node = Client(broker.ports[0], client_id, clean=False, manual_ack=True)
    node.subscribe(topic)
    publisher = Client(broker.ports[1])
    clients.append(publisher)
    publisher.publish(topic, b"one")
    first = node.got(topic, 0.5)
    assert len(first) == 1
    assert not first[0].dup
    node.cut()  # never acknowledged
    time.sleep(0.5)
    again = Client(broker.ports[0], client_id, clean=False)
    clients.append(again)
    redelivered = again.got(topic, 1.0)
    assert again.session_present is True
    assert [m.payload for m in redelivered] == [b"one"]
    assert redelivered[0].dup


def test_will_when_broker_stops(broker: Broker, clients: list[Client]) -> None:
    """mosquitto sends every connected client's will while it shuts down; a stopping RabbitMQ
    member sends none for its clients. A persistent session on the stopped member survives
    on the others (quorum queues): what was queued is delivered at the next connect."""
    will_topic = _topic()
    cmd_topic = will_topic.replace("status/online", "command/relay")
    witness = Client(broker.ports[2])
    clients.append(witness)
    witness.subscribe(will_topic)
    client_id = "stopped-" + uuid.uuid4().hex[:8]
    node = Client(broker.ports[0], client_id, clean=False, will=(will_topic, b"gone"))
    node.subscribe(cmd_topic)
    node.client.reconnect_delay_set(60, 60)
    clients.append(node)
    if broker.kind == "mosquitto":
        broker.server.stop()
        # The witness was on the same broker: it got the will just before its own link went.
        assert [m.payload for m in witness.got(will_topic, 0.5)] == [b"gone"]
        return
    cluster: rabbitmq.RabbitCluster = broker.server
    cluster.stop_member(0)
    try:
        assert witness.got(will_topic, 1.5) == []
        publisher = Client(broker.ports[2])
        clients.append(publisher)
        publisher.publish(cmd_topic, b"queued while its member was down")
        moved = Client(broker.ports[1], client_id, clean=False)
        clients.append(moved)
        assert moved.session_present is True
        assert [m.payload for m in moved.got(cmd_topic, 1.5)] == [
            b"queued while its member was down"
        ]
    finally:
        cluster.start_member(0)
