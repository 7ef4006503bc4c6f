"""The session's RabbitMQ cluster, shared by every ``rabbitmq``-marked end-to-end test."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import socket

import pytest
import pytest_socket

from devstack import rabbitmq


@contextlib.contextmanager
def sockets_allowed() -> Iterator[None]:
    """Lift the HA test harness's socket block for a session fixture, then put it back."""
    blocked = socket.socket
    pytest_socket.enable_socket()
    try:
        yield
    finally:
        socket.socket = blocked  # type: ignore[misc]


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbitmq.RabbitCluster]:
    """One three-member RabbitMQ cluster for the whole session (it takes ~20-80 s to form)."""
    if not rabbitmq.available():
        pytest.skip(rabbitmq.UNAVAILABLE)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Each xdist worker would start a cluster of its own (3 Erlang VMs, ~20-60 s each).
        pytest.skip("RabbitMQ tests run in one process: pytest -m rabbitmq (./scripts/test does)")
    cluster = rabbitmq.RabbitCluster(tmp_path_factory.mktemp("rabbitmq"), nodes=3)
    with sockets_allowed():
        cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
