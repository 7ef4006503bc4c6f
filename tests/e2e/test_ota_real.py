"""Firmware updates end to end, nothing mocked (issue 13).

Nodes run the real firmware under the real ``micropython`` and really reboot: each boot is a
new process (``firmware/device.py``, restarted by ``firmware/tests/ota_harness.py``), so the
new bundle's ``.mpy`` modules are what runs after an update. They talk to a real mosquitto; Home
Assistant's real MQTT client feeds the integration; the bundle is built by ``firmware/bundle.py``
and served by Home Assistant's own HTTP server (started on a free loopback port) through the
integration's one-time-token view. The update is started with the ``update.install`` action.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
import importlib.util
import os
from pathlib import Path
import time
from types import ModuleType
from typing import Any

from homeassistant.components.update import (
    ATTR_INSTALLED_VERSION,
    DOMAIN as UPDATE_DOMAIN,
    SERVICE_INSTALL,
)
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import (
    CONF_FIRMWARE_PATH,
    CONF_HEARTBEAT_INTERVAL,
    CONF_MAX_PARALLEL_UPDATES,
    CONF_MIN_TIMEOUT,
    DEFAULT_OPTIONS,
    DOMAIN,
)

from .inprocess import homesync_on_broker, running_mosquitto, wait_until
from .test_real_chain import harness

REPO = Path(__file__).resolve().parents[2]
HOME = "ota"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ota_harness = _load("_heartbeat_iot_ota_harness", REPO / "firmware/tests/ota_harness.py")
bundle_tool = _load("_heartbeat_iot_bundle", REPO / "firmware/bundle.py")
FACTORY = bundle_tool.source_version()
pytestmark = pytest.mark.skipif(
    not os.access(harness.MICROPYTHON, os.X_OK), reason="needs the micropython command"
)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def broker(socket_enabled: None, tmp_path: Path) -> Iterator[Any]:
    """A real mosquitto on a free loopback port."""
    with running_mosquitto(tmp_path) as server:
        yield server


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


@pytest.fixture
def devices(broker: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start real MicroPython nodes (``DeviceProcess``) on the broker."""
    made: list[Any] = []

    def make(node_id: str) -> Any:
        node = ota_harness.DeviceProcess(
            str(tmp_path), broker.port, node_id, home=HOME, watchdog_s=3
        )
        made.append(node)
        return node.start()

    try:
        yield make
    finally:
        for node in made:
            node.stop(timeout=5)
            node.close()


class CuttingProxy:
    """TCP proxy to HA's HTTP server that cuts its first connection after ``cut`` bytes of
    response (a Wi-Fi drop mid-download); later connections pass through untouched."""

    def __init__(self, target_port: int, cut: int | None) -> None:
        self.target_port = target_port
        self.cut = cut
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut if self.connections == 1 else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, cap: int | None
        ) -> None:
            sent = 0
            while data := await src.read(4096):
                if cap is not None and sent + len(data) >= cap:
                    dst.write(data[: cap - sent])
                    await dst.drain()
                    return
                sent += len(data)
                dst.write(data)
                await dst.drain()

        tasks = [
            asyncio.ensure_future(pump(reader, up_writer, None)),
            asyncio.ensure_future(pump(up_reader, writer, limit)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()


@pytest.fixture
async def http_port(hass: HomeAssistant, socket_enabled: None) -> AsyncIterator[int]:
    """Home Assistant's real HTTP server on a free loopback port."""
    port = harness.free_port()
    assert await async_setup_component(
        hass, "http", {"http": {"server_host": ["127.0.0.1"], "server_port": port}}
    )
    await hass.http.start()
    hass.config.internal_url = f"http://127.0.0.1:{port}"
    try:
        yield port
    finally:
        await hass.http.stop()


@pytest.fixture
async def home(
    hass: HomeAssistant,
    broker: Any,
    http_port: int,
    bundles: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """Returns ``start(max_parallel)``: HA's MQTT on the broker, then our entry."""
    async with AsyncExitStack() as stack:

        async def start(max_parallel: int = 2) -> MockConfigEntry:
            options = {
                **DEFAULT_OPTIONS,
                CONF_HEARTBEAT_INTERVAL: 1,
                CONF_MIN_TIMEOUT: 5,
                CONF_FIRMWARE_PATH: str(bundles),
                CONF_MAX_PARALLEL_UPDATES: max_parallel,
            }
            on_broker = homesync_on_broker(
                hass, broker.port, HOME, options=options, connect_timeout=10
            )
            return await stack.enter_async_context(on_broker)

        yield start


# ---------------------------------------------------------------------------- helpers


async def build(hass: HomeAssistant, bundles: Path, version: str, **kwargs: Any) -> dict[str, Any]:
    info: dict[str, Any] = await hass.async_add_executor_job(
        lambda: bundle_tool.build(str(bundles), version=version, **kwargs)
    )
    return info


def update_entity(hass: HomeAssistant, node: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(
        UPDATE_DOMAIN, DOMAIN, f"{HOME}_{node}_firmware_update"
    )


async def offered(hass: HomeAssistant, node: str, version: str) -> None:
    """The node is online with an update entity offering ``version``."""

    def ready() -> bool:
        ent = update_entity(hass, node)
        state = hass.states.get(ent) if ent else None
        return (
            state is not None
            and state.attributes.get("latest_version") == version
            and state.attributes.get(ATTR_INSTALLED_VERSION) is not None
            and hass.config_entries.async_entries(DOMAIN)[0].runtime_data.availability.node_online(
                node
            )
        )

    await wait_until(ready, 20, f"{node} online and offered {version}")


async def install(hass: HomeAssistant, node: str) -> None:
    ent = update_entity(hass, node)
    await hass.services.async_call(
        UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: ent}, blocking=True
    )


def installed(hass: HomeAssistant, node: str) -> Any:
    ent = update_entity(hass, node)
    state = hass.states.get(ent) if ent else None
    return None if state is None else state.attributes.get(ATTR_INSTALLED_VERSION)


# ---------------------------------------------------------------------------- tests


async def test_update_from_the_entity_installs_and_confirms(
    hass: HomeAssistant, home: Callable[..., Any], devices: Any, bundles: Path
) -> None:
    info = await build(hass, bundles, "0.9.0")
    node = await hass.async_add_executor_job(devices, "plug1")
    await home()
    await offered(hass, "plug1", "0.9.0")
    ent = update_entity(hass, "plug1")
    assert hass.states.get(ent).state == STATE_ON
    assert installed(hass, "plug1") == FACTORY
    started = time.monotonic()
    await install(hass, "plug1")  # returns once the node runs 0.9.0
    assert installed(hass, "plug1") == "0.9.0"
    assert hass.states.get(ent).state == STATE_OFF
    assert time.monotonic() - started < 60
    log = await hass.async_add_executor_job(node.log)
    assert "running slot" in log  # the new .mpy modules were imported after a real restart
    assert node.exits[:1] == [ota_harness.EXIT_RESET]
    offer = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.firmware.bundle
    assert offer.sha256 == info["sha256"]


async def test_wrong_sha256_is_rejected_and_the_node_keeps_its_version(
    hass: HomeAssistant, home: Callable[..., Any], devices: Any, bundles: Path
) -> None:
    info = await build(hass, bundles, "0.9.0")
    node = await hass.async_add_executor_job(devices, "plug1")
    await home()
    await offered(hass, "plug1", "0.9.0")
    # The file changes after Home Assistant hashed it (same size): the node must notice.
    path = Path(info["path"])
    data = bytearray(await hass.async_add_executor_job(path.read_bytes))
    data[-10] ^= 0xFF
    await hass.async_add_executor_job(path.write_bytes, bytes(data))
    with pytest.raises(HomeAssistantError, match="did not match its sha256"):
        await install(hass, "plug1")
    assert installed(hass, "plug1") == FACTORY
    assert node.exits == []  # never rebooted


async def test_download_cut_halfway_resumes(
    hass: HomeAssistant, home: Callable[..., Any], devices: Any, bundles: Path, http_port: int
) -> None:
    info = await build(hass, bundles, "0.9.0")
    proxy = CuttingProxy(http_port, cut=400 + info["size"] // 2)  # headers + about half
    await proxy.start()
    hass.config.internal_url = f"http://127.0.0.1:{proxy.port}"
    try:
        await hass.async_add_executor_job(devices, "plug1")
        await home()
        await offered(hass, "plug1", "0.9.0")
        await install(hass, "plug1")
    finally:
        await proxy.stop()
    assert installed(hass, "plug1") == "0.9.0"
    assert proxy.connections >= 2  # the cut one and the resumed one


async def test_bundle_whose_main_fails_to_import_is_rolled_back(
    hass: HomeAssistant, home: Callable[..., Any], devices: Any, bundles: Path
) -> None:
    await build(
        hass, bundles, "0.9.1", replace={"homesync/main.py": 'raise ImportError("broken")\n'}
    )
    node = await hass.async_add_executor_job(devices, "plug1")
    await home()
    await offered(hass, "plug1", "0.9.1")
    with pytest.raises(HomeAssistantError, match="went back to its previous version"):
        await install(hass, "plug1")
    await wait_until(lambda: installed(hass, "plug1") == FACTORY, 10, "the old version back")
    assert ota_harness.EXIT_CRASH in node.exits


async def test_two_nodes_with_one_update_at_a_time(
    hass: HomeAssistant, home: Callable[..., Any], devices: Any, bundles: Path
) -> None:
    await build(hass, bundles, "0.9.0")
    for node_id in ("plug1", "plug2"):
        await hass.async_add_executor_job(devices, node_id)
    entry = await home(max_parallel=1)
    for node_id in ("plug1", "plug2"):
        await offered(hass, node_id, "0.9.0")
    phases: list[tuple[str | None, str | None]] = []
    firmware = entry.runtime_data.firmware

    async def watch() -> None:
        while True:
            jobs = [firmware.job(n) for n in ("plug1", "plug2")]
            phases.append(tuple(j.phase.value if j else None for j in jobs))  # type: ignore[arg-type]
            await asyncio.sleep(0.05)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.gather(install(hass, "plug1"), install(hass, "plug2"))
    finally:
        watcher.cancel()
    assert installed(hass, "plug1") == "0.9.0"
    assert installed(hass, "plug2") == "0.9.0"
    active = {"sent", "downloading", "verifying", "installing", "rebooting", "confirming"}
    assert not [p for p in phases if p[0] in active and p[1] in active]  # never both at once
    assert any(p[1] == "queued" for p in phases)  # plug2 waited for its turn
