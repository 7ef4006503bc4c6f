"""Firmware update entity (issue 13): bundle on offer, install flow, download view, queue.

MQTT is mocked here (fast, every branch); tests/e2e/test_ota_real.py runs the same flow with a
real node under MicroPython, a real broker and Home Assistant's real HTTP server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import hashlib
import json
from pathlib import Path
from typing import Any

from homeassistant.components.update import (
    ATTR_IN_PROGRESS,
    ATTR_INSTALLED_VERSION,
    ATTR_LATEST_VERSION,
    ATTR_RELEASE_SUMMARY,
    ATTR_UPDATE_PERCENTAGE,
    DOMAIN as UPDATE_DOMAIN,
    SERVICE_INSTALL,
    UpdateDeviceClass,
)
from homeassistant.const import ATTR_DEVICE_CLASS, ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.const import (
    CONF_FIRMWARE_PATH,
    CONF_HOME_ID,
    CONF_MAX_PARALLEL_UPDATES,
    DEFAULT_OPTIONS,
    DOMAIN,
)
from custom_components.heartbeat_iot.homesync import firmware as fw
from custom_components.heartbeat_iot.models import HomeSyncOptions

from .command_helpers import advance, settle, start as start_task
from .conftest import HOME, publish, topic

URL = "http://127.0.0.1:8123"


def make_bundle(version: str, notes: str = "", files: int = 2) -> bytes:
    """Bundle bytes in the documented format (firmware/bundle.py writes the same)."""
    contents = [(f"homesync/m{i}.mpy", bytes([i]) * (500 + i)) for i in range(files)]
    contents.insert(0, ("homesync/__init__.mpy", f'VERSION = "{version}"'.encode()))
    manifest = json.dumps(
        {
            "format": 1,
            "version": version,
            "notes": notes,
            "files": [
                {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for p, d in contents
            ],
        }
    ).encode()
    return b"HSFW1 %d\n" % len(manifest) + manifest + b"".join(d for _p, d in contents)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


@pytest.fixture
def write_bundle(bundle_dir: Path) -> Callable[..., Path]:
    def write(version: str, notes: str = "- Faster\n- Safer", name: str | None = None) -> Path:
        path = bundle_dir / (name or f"homesync-{version}.hsfw")
        path.write_bytes(make_bundle(version, notes))
        return path

    return write


@pytest.fixture
def ota_entry(bundle_dir: Path) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"HomeSync {HOME}",
        data={CONF_HOME_ID: HOME},
        options={
            **DEFAULT_OPTIONS,
            CONF_FIRMWARE_PATH: str(bundle_dir),
            CONF_MAX_PARALLEL_UPDATES: 2,
        },
        unique_id=HOME,
    )


@pytest.fixture
async def start(
    hass: HomeAssistant, mqtt_mock: Any, ota_entry: MockConfigEntry
) -> Callable[[], Awaitable[MockConfigEntry]]:
    hass.config.internal_url = URL

    async def _start(max_parallel: int = 2) -> MockConfigEntry:
        ota_entry.add_to_hass(hass)
        hass.config_entries.async_update_entry(
            ota_entry, options={**ota_entry.options, CONF_MAX_PARALLEL_UPDATES: max_parallel}
        )
        assert await hass.config_entries.async_setup(ota_entry.entry_id)
        await hass.async_block_till_done()
        return ota_entry

    return _start


@pytest.fixture
async def offered(
    hass: HomeAssistant, start: Callable[..., Awaitable[MockConfigEntry]], write_bundle: Any
) -> MockConfigEntry:
    """Bundle 0.2.0 on offer, our entry started, plug1 online running 0.1.0."""
    write_bundle("0.2.0")
    entry = await start()
    node_up(hass, "plug1")
    await settle()
    return entry


def node_up(hass: HomeAssistant, node: str, version: str = "0.1.0") -> None:
    publish(
        hass,
        node,
        "status",
        "online",
        {"online": True, "reason": "boot", "uptime": 1, "firmware": version},
    )
    publish(hass, node, "status", "firmware", {"version": version}, retain=True)
    publish(hass, node, "status", "heartbeat", {"seq": 1, "uptime": 2, "interval": 30})


def entity(hass: HomeAssistant, node: str) -> str:
    ent_id = er.async_get(hass).async_get_entity_id(
        UPDATE_DOMAIN, DOMAIN, f"{HOME}_{node}_firmware_update"
    )
    assert ent_id is not None
    return ent_id


def ota_commands(mqtt_mock: Any, node: str | None = None) -> list[dict[str, Any]]:
    out = []
    for call in mqtt_mock.async_publish.call_args_list:
        t, payload, qos, retain = call.args
        if t.endswith("/command/ota") and (node is None or t == topic(node, "command", "ota")):
            assert (qos, retain) == (1, False)
            out.append(json.loads(payload))
    return out


def install(hass: HomeAssistant, node: str) -> asyncio.Task[Any]:
    """The install action, running in the background while the test plays the node."""
    return start_task(
        hass.services.async_call(
            UPDATE_DOMAIN, SERVICE_INSTALL, {ATTR_ENTITY_ID: entity(hass, node)}, blocking=True
        )
    )


async def begin_install(
    hass: HomeAssistant, mqtt_mock: Any, node: str = "plug1"
) -> tuple[asyncio.Task[Any], str]:
    """The install action running, its update command sent: the task and the request id."""
    task = install(hass, node)
    await settle()
    return task, ota_commands(mqtt_mock, node)[0]["request_id"]


def ota(hass: HomeAssistant, node: str, rid: str, status: str, **extra: Any) -> None:
    publish(hass, node, "response", "ota", {"request_id": rid, "status": status, **extra})


# --------------------------------------------------------------------------- the entity


async def test_entity_shows_installed_and_offered_version_with_notes(
    hass: HomeAssistant, start: Callable[[], Awaitable[MockConfigEntry]], write_bundle: Any
) -> None:
    write_bundle("0.1.5", name="old.hsfw")
    write_bundle("0.2.0", "## Changes\n- OTA with rollback\n- Faster boot")
    (write_bundle("9.9.9", name="broken.hsfw")).write_bytes(b"HSFW1 5\n{nope")
    await start()
    node_up(hass, "plug1")
    await settle()
    state = hass.states.get(entity(hass, "plug1"))
    assert state is not None
    assert state.state == STATE_ON
    assert state.attributes[ATTR_INSTALLED_VERSION] == "0.1.0"
    assert state.attributes[ATTR_LATEST_VERSION] == "0.2.0"  # the newest readable bundle
    assert state.attributes[ATTR_RELEASE_SUMMARY] == "Changes OTA with rollback Faster boot"
    assert state.attributes[ATTR_DEVICE_CLASS] == UpdateDeviceClass.FIRMWARE
    assert state.attributes[ATTR_IN_PROGRESS] is False
    data = hass.config_entries.async_entries(DOMAIN)[0].runtime_data
    assert "broken.hsfw" in next(iter(data.firmware.bundle_errors))
    node_up(hass, "plug1", "0.2.0")
    await settle()
    assert hass.states.get(entity(hass, "plug1")).state == STATE_OFF  # up to date


async def test_no_bundle_means_unknown_latest_and_a_clear_install_error(
    hass: HomeAssistant, start: Callable[[], Awaitable[MockConfigEntry]]
) -> None:
    entry = await start()
    node_up(hass, "plug1")
    await settle()
    state = hass.states.get(entity(hass, "plug1"))
    assert state.attributes[ATTR_LATEST_VERSION] is None
    with pytest.raises(HomeAssistantError, match="No firmware bundle was found"):
        await entry.runtime_data.firmware.async_install("plug1")


async def test_release_notes_over_websocket(
    hass: HomeAssistant,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
    hass_ws_client: Any,
) -> None:
    write_bundle("0.2.0", "## 0.2.0\n- Updates from Home Assistant")
    await start()
    node_up(hass, "plug1")
    await settle()
    client = await hass_ws_client(hass)
    await client.send_json(
        {"id": 1, "type": "update/release_notes", "entity_id": entity(hass, "plug1")}
    )
    result = await client.receive_json()
    assert result["result"] == "## 0.2.0\n- Updates from Home Assistant"


# --------------------------------------------------------------------------- install


async def test_install_runs_until_the_node_reports_the_new_version(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
    hass_client_no_auth: ClientSessionGenerator,
) -> None:
    path = write_bundle("0.2.0")
    await start()
    node_up(hass, "plug1")
    await settle()
    task = install(hass, "plug1")
    await settle()
    (cmd,) = ota_commands(mqtt_mock, "plug1")
    data = path.read_bytes()
    assert cmd["action"] == "update"
    assert cmd["version"] == "0.2.0"
    assert cmd["sha256"] == hashlib.sha256(data).hexdigest()
    assert cmd["size"] == len(data)
    assert cmd["ttl"] == fw.OTA_TTL
    assert cmd["timestamp"].endswith("Z")
    assert cmd["url"].startswith(URL + "/api/heartbeat_iot/firmware/")
    assert cmd["url"].endswith("/homesync-0.2.0.hsfw")
    rid = cmd["request_id"]

    # The URL works without any login, supports ranges, and nothing else is served.
    client = await hass_client_no_auth()
    path_part = cmd["url"][len(URL) :]
    resp = await client.get(path_part)
    assert resp.status == 200
    assert await resp.read() == data
    resp = await client.get(path_part, headers={"Range": "bytes=100-"})
    assert resp.status == 206
    assert await resp.read() == data[100:]
    assert (await client.get(path_part.replace("0.2.0.hsfw", "x.hsfw"))).status == 404
    token = path_part.split("/")[-2]
    other = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert (await client.get(path_part.replace(token, other))).status == 404

    state = hass.states.get(entity(hass, "plug1"))
    assert state.attributes[ATTR_IN_PROGRESS] is True
    assert state.attributes[ATTR_UPDATE_PERCENTAGE] is None
    ota(hass, "plug1", rid, "downloading", progress=0, version="0.2.0")
    ota(hass, "plug1", rid, "downloading", progress=40, version="0.2.0")
    await settle()
    state = hass.states.get(entity(hass, "plug1"))
    assert state.attributes[ATTR_UPDATE_PERCENTAGE] == 40
    assert state.attributes["phase"] == "downloading"
    for status in ("verifying", "installing", "rebooting"):
        ota(hass, "plug1", rid, status, version="0.2.0")
    publish(hass, "plug1", "status", "online", {"online": False, "reason": "shutdown"})
    await settle()
    assert not task.done()
    assert hass.states.get(entity(hass, "plug1")).attributes["phase"] == "rebooting"
    node_up(hass, "plug1", "0.2.0")  # back, running the new version
    await settle()
    await task  # the install call returns without error
    state = hass.states.get(entity(hass, "plug1"))
    assert state.state == STATE_OFF
    assert state.attributes[ATTR_INSTALLED_VERSION] == "0.2.0"
    assert state.attributes[ATTR_IN_PROGRESS] is False
    assert (await client.get(path_part)).status == 404  # the grant ended with the update


async def test_success_answer_alone_does_not_confirm(
    hass: HomeAssistant,
    mqtt_mock: Any,
    offered: MockConfigEntry,
    freezer: Any,
) -> None:
    task, rid = await begin_install(hass, mqtt_mock)
    ota(hass, "plug1", rid, "success", version="0.2.0")  # but it still reports 0.1.0
    await settle()
    assert not task.done()
    await advance(hass, freezer, fw.REBOOT_TIMEOUT + 2, step=10)
    with pytest.raises(HomeAssistantError, match="did not come back running firmware 0.2.0"):
        await task


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": "error", "error": "sha256 mismatch"}, "did not match its sha256"),
        ({"status": "error", "error": "rolled back"}, "went back to its previous version"),
        ({"status": "error", "error": "download failed"}, "could not download firmware 0.2.0"),
        ({"status": "error", "error": "busy"}, "is busy with another firmware update"),
        ({"status": "error", "error": "flash exploded"}, "failed: flash exploded"),
        ({"status": "expired"}, "received the update to 0.2.0 too late"),
    ],
)
async def test_node_errors_become_translated_install_errors(
    hass: HomeAssistant,
    mqtt_mock: Any,
    offered: MockConfigEntry,
    answer: dict[str, Any],
    message: str,
) -> None:
    task, rid = await begin_install(hass, mqtt_mock)
    ota(hass, "plug1", "someone-else", "error", error="busy")  # not ours: ignored
    await settle()
    assert not task.done()
    publish(hass, "plug1", "response", "ota", {"request_id": rid, **answer})
    await settle()
    with pytest.raises(HomeAssistantError, match=message):
        await task
    assert hass.states.get(entity(hass, "plug1")).attributes[ATTR_IN_PROGRESS] is False


async def test_offline_node_cannot_be_updated(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
) -> None:
    write_bundle("0.2.0")
    await start()
    node_up(hass, "plug1")
    publish(hass, "plug1", "status", "online", {"online": False, "reason": "shutdown"})
    await settle()
    assert hass.states.get(entity(hass, "plug1")).state == STATE_ON  # still offers the update
    with pytest.raises(HomeAssistantError, match="plug1 is offline"):
        await install(hass, "plug1")
    assert ota_commands(mqtt_mock) == []


async def test_silent_node_times_out(
    hass: HomeAssistant,
    mqtt_mock: Any,
    offered: MockConfigEntry,
    freezer: Any,
) -> None:
    task, _rid = await begin_install(hass, mqtt_mock)
    await advance(hass, freezer, fw.ANSWER_TIMEOUT + 2)
    with pytest.raises(HomeAssistantError, match="did not answer the update"):
        await task


async def test_no_local_http_url_is_a_clear_error(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
) -> None:
    write_bundle("0.2.0")
    await start()
    hass.config.internal_url = "https://ha.local:8123"  # nodes cannot do TLS downloads
    node_up(hass, "plug1")
    await settle()
    with pytest.raises(HomeAssistantError, match="no local http:// URL"):
        await install(hass, "plug1")
    hass.config.internal_url = None
    hass.config.api = None
    with pytest.raises(HomeAssistantError, match="no local http:// URL"):
        await install(hass, "plug1")


async def test_without_internal_url_the_bound_server_host_is_used(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
) -> None:
    from homeassistant.components.http import ApiConfig

    write_bundle("0.2.0")
    await start()
    hass.config.internal_url = None
    hass.config.api = ApiConfig("192.0.2.7", "127.0.0.1", 8124, False)  # server_host 127.0.0.1
    node_up(hass, "plug1")
    await settle()
    task = install(hass, "plug1")
    await settle()
    assert ota_commands(mqtt_mock)[0]["url"].startswith("http://127.0.0.1:8124/api/")
    task.cancel()


async def test_at_most_n_updates_at_a_time_the_rest_wait(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
) -> None:
    write_bundle("0.2.0")
    await start()
    nodes = ["plug1", "plug2", "plug3"]
    for node in nodes:
        node_up(hass, node)
    await settle()
    tasks = {node: install(hass, node) for node in nodes}
    await settle()
    sent = [c["request_id"] for c in ota_commands(mqtt_mock)]
    assert len(sent) == 2  # max_parallel_updates = 2
    assert ota_commands(mqtt_mock, "plug3") == []
    waiting = hass.states.get(entity(hass, "plug3"))
    assert waiting.attributes[ATTR_IN_PROGRESS] is True
    assert waiting.attributes["phase"] == "queued"
    with pytest.raises(HomeAssistantError, match="already running or waiting"):
        await hass.config_entries.async_entries(DOMAIN)[0].runtime_data.firmware.async_install(
            "plug3"
        )
    # plug1 fails, which frees a slot for plug3.
    ota(hass, "plug1", sent[0], "error", error="sha256 mismatch")
    await settle()
    (third,) = ota_commands(mqtt_mock, "plug3")
    for node, rid in (("plug2", sent[1]), ("plug3", third["request_id"])):
        ota(hass, node, rid, "rebooting", version="0.2.0")
        node_up(hass, node, "0.2.0")
    await settle()
    with pytest.raises(HomeAssistantError):
        await tasks["plug1"]
    await tasks["plug2"]
    await tasks["plug3"]


async def test_diagnostics_show_the_offer_and_running_updates_without_tokens(
    hass: HomeAssistant,
    mqtt_mock: Any,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
) -> None:
    from custom_components.heartbeat_iot.diagnostics import (
        async_get_config_entry_diagnostics,
    )

    path = write_bundle("0.2.0")
    entry = await start()
    node_up(hass, "plug1")
    await settle()
    task, rid = await begin_install(hass, mqtt_mock)
    ota(hass, "plug1", rid, "downloading", progress=30)
    await settle()
    diag = await async_get_config_entry_diagnostics(hass, entry)
    updates = diag["firmware_updates"]
    assert updates["bundle"]["version"] == "0.2.0"
    assert updates["bundle"]["file"] == path.name
    assert updates["updates"] == [
        {"node": "plug1", "version": "0.2.0", "phase": "downloading", "progress": 30}
    ]
    token = ota_commands(mqtt_mock)[0]["url"].split("/")[-2]
    assert token not in json.dumps(diag)
    task.cancel()


async def test_unload_cancels_running_and_waiting_updates(
    hass: HomeAssistant,
    mqtt_mock: Any,
    write_bundle: Any,
    start: Callable[..., Awaitable[MockConfigEntry]],
) -> None:
    write_bundle("0.2.0")
    ota_entry = await start(max_parallel=1)
    for node in ("plug1", "plug2"):
        node_up(hass, node)
    await settle()
    tasks = [install(hass, "plug1"), install(hass, "plug2")]
    await settle()
    assert await hass.config_entries.async_unload(ota_entry.entry_id)
    for task in tasks:
        with pytest.raises(HomeAssistantError, match="was cancelled"):
            await task
    assert len(ota_commands(mqtt_mock)) == 1


async def test_options_flow_sets_parallel_updates_and_bundle_path(
    hass: HomeAssistant,
    start: Callable[[], Awaitable[MockConfigEntry]],
    bundle_dir: Path,
) -> None:
    entry = await start()
    result = await hass.config_entries.options.async_init(entry.entry_id)
    user_input = {**DEFAULT_OPTIONS, CONF_MAX_PARALLEL_UPDATES: 3, CONF_FIRMWARE_PATH: " /x/y "}
    result = await hass.config_entries.options.async_configure(result["flow_id"], user_input)
    await settle()
    assert entry.options[CONF_MAX_PARALLEL_UPDATES] == 3
    assert entry.options[CONF_FIRMWARE_PATH] == "/x/y"
    parsed = HomeSyncOptions.from_options(entry.options)  # what the reloaded entry runs with
    assert parsed.max_parallel_updates == 3
    assert parsed.firmware_path == "/x/y"
    result = await hass.config_entries.options.async_init(entry.entry_id)
    user_input = {**DEFAULT_OPTIONS, CONF_MAX_PARALLEL_UPDATES: 3}
    await hass.config_entries.options.async_configure(result["flow_id"], user_input)
    assert CONF_FIRMWARE_PATH not in entry.options  # cleared: back to the default places


async def test_a_waiting_update_fails_when_its_node_or_the_offer_changed(
    hass: HomeAssistant,
    mqtt_mock: Any,
    write_bundle: Any,
    start: Callable[..., Awaitable[MockConfigEntry]],
    bundle_dir: Path,
) -> None:
    write_bundle("0.2.0")
    ota_entry = await start(max_parallel=1)
    firmware = ota_entry.runtime_data.firmware
    for node in ("plug1", "plug2", "plug3"):
        node_up(hass, node)
    await settle()
    with pytest.raises(HomeAssistantError, match="Firmware 9.9 is not available"):
        await firmware.async_install("plug1", "9.9")
    first, second, third = (install(hass, n) for n in ("plug1", "plug2", "plug3"))
    await settle()
    publish(hass, "plug2", "status", "online", {"online": False, "reason": "shutdown"})
    # A newer bundle appears and is offered.
    (bundle_dir / "homesync-0.2.0.hsfw").unlink()
    write_bundle("0.3.0")
    await firmware.async_rescan()
    assert hass.states.get(entity(hass, "plug1")).attributes[ATTR_LATEST_VERSION] == "0.3.0"
    rid = ota_commands(mqtt_mock, "plug1")[0]["request_id"]
    ota(hass, "plug1", rid, "rebooting", version="0.2.0")
    node_up(hass, "plug1", "0.2.0")
    await settle()
    await first  # the running update still completes
    with pytest.raises(HomeAssistantError, match="plug2 is offline"):
        await second
    with pytest.raises(HomeAssistantError, match="Firmware 0.2.0 is not available"):
        await third
    assert ota_commands(mqtt_mock, "plug2") == ota_commands(mqtt_mock, "plug3") == []


async def test_publish_failure_ends_the_update(
    hass: HomeAssistant,
    mqtt_mock: Any,
    offered: MockConfigEntry,
) -> None:
    mqtt_mock.async_publish.side_effect = HomeAssistantError("broker gone")
    with pytest.raises(HomeAssistantError, match="failed: broker gone"):
        await install(hass, "plug1")


async def test_a_new_bundle_is_found_by_the_periodic_rescan(
    hass: HomeAssistant,
    start: Callable[[], Awaitable[MockConfigEntry]],
    write_bundle: Any,
    freezer: Any,
) -> None:
    write_bundle("0.2.0")
    await start()
    node_up(hass, "plug1")
    await hass.async_block_till_done()
    write_bundle("0.3.0")
    await advance(hass, freezer, 301, step=301)
    await hass.async_block_till_done()
    assert hass.states.get(entity(hass, "plug1")).attributes[ATTR_LATEST_VERSION] == "0.3.0"
