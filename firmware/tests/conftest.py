"""Fixtures for the firmware tests (CPython side).

The unit-test modules import ``homesync``/``hal_host``/``fakes`` by their device names, exactly
as under MicroPython, so the firmware and tests directories go on ``sys.path`` here.
"""

import contextlib
import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FIRMWARE_DIR = os.path.dirname(TESTS_DIR)
for _path in (FIRMWARE_DIR, TESTS_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from harness import Broker, NodeProcess, Peer  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    workdir = tmp_path / "broker"
    workdir.mkdir()
    server = Broker(str(workdir))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def peer_factory(broker):
    peers = []

    def make(node, home="h1", port=None):
        peer = Peer(port or broker.port, home, node)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        with contextlib.suppress(Exception):
            peer.close()


@pytest.fixture
def node_factory(broker, tmp_path):
    nodes = []

    def make(node_id="n1", **kwargs):
        kwargs.setdefault("port", broker.port)
        node = NodeProcess(str(tmp_path), node_id=node_id, **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
