"""Nodes appear as devices with the right telemetry sensors; bad input is skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging
from typing import Any

from homeassistant.components.mqtt.models import DATA_MQTT
from homeassistant.components.sensor import ATTR_STATE_CLASS, SensorDeviceClass
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    ATTR_UNIT_OF_MEASUREMENT,
    EVENT_STATE_CHANGED,
    STATE_UNKNOWN,
)
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
)
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.heartbeat_iot.const import CONF_MAX_NODES, DEFAULT_OPTIONS, DOMAIN

from .conftest import HOME, publish, topic

type Setup = Callable[[], Awaitable[MockConfigEntry]]


def entity_id(hass: HomeAssistant, node: str, key: str, platform: str = "sensor") -> str | None:
    """Entity id of a node entity, looked up by its unique id."""
    return er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{HOME}_{node}_{key}")


def state_of(hass: HomeAssistant, node: str, key: str) -> Any:
    eid = entity_id(hass, node, key)
    assert eid is not None, f"no entity for {node}/{key}"
    return hass.states.get(eid)


@pytest.mark.parametrize(
    ("metric", "payload", "device_class", "unit", "state_class", "value"),
    [
        (
            "power",
            {"value": 125.5, "unit": "W"},
            SensorDeviceClass.POWER,
            "W",
            "measurement",
            125.5,
        ),
        ("power", {"value": 1.5, "unit": "kW"}, SensorDeviceClass.POWER, "W", "measurement", 1500),
        ("voltage", {"value": 230.1}, SensorDeviceClass.VOLTAGE, "V", "measurement", 230.1),
        (
            "current",
            {"value": 0.52, "unit": "A"},
            SensorDeviceClass.CURRENT,
            "A",
            "measurement",
            0.52,
        ),
        (
            "energy",
            {"value": 1234.5, "unit": "Wh"},
            SensorDeviceClass.ENERGY,
            "kWh",
            "total_increasing",
            1.2345,
        ),
        (
            "power_factor",
            {"value": 0.97},
            SensorDeviceClass.POWER_FACTOR,
            None,
            "measurement",
            0.97,
        ),
        (
            "frequency",
            {"value": 50.02, "unit": "Hz"},
            SensorDeviceClass.FREQUENCY,
            "Hz",
            "measurement",
            50.02,
        ),
        (
            "temperature",
            {"value": 41.5, "unit": "°C"},
            SensorDeviceClass.TEMPERATURE,
            "°C",
            "measurement",
            41.5,
        ),
        ("co2", {"value": 612, "unit": "ppm"}, None, "ppm", "measurement", 612),
    ],
)
async def test_telemetry_sensor(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    metric: str,
    payload: dict[str, Any],
    device_class: SensorDeviceClass | None,
    unit: str | None,
    state_class: str,
    value: float,
) -> None:
    publish(hass, "plug1", "telemetry", metric, payload)
    await hass.async_block_till_done()
    state = state_of(hass, "plug1", metric)
    assert float(state.state) == pytest.approx(value)
    assert state.attributes.get(ATTR_DEVICE_CLASS) == device_class
    assert state.attributes.get(ATTR_UNIT_OF_MEASUREMENT) == unit
    assert state.attributes.get(ATTR_STATE_CLASS) == state_class


async def test_unmeasurable_reading_is_unknown_with_its_reason(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """A kettle's 8.7 A must not stay next to the standby's 8.4 W (issue 10 item 10)."""
    for metric, payload in (
        ("power", {"value": 2000.0, "unit": "W"}),
        ("current", {"value": 8.7, "unit": "A"}),
        ("power_factor", {"value": 1.0}),
    ):
        publish(hass, "plug1", "telemetry", metric, payload)
    await hass.async_block_till_done()
    publish(hass, "plug1", "telemetry", "power", {"value": 8.4, "unit": "W"})
    for metric in ("current", "power_factor"):
        publish(hass, "plug1", "telemetry", metric, {"value": None, "reason": "below_range"})
    await hass.async_block_till_done()

    assert float(state_of(hass, "plug1", "power").state) == 8.4
    for metric in ("current", "power_factor"):
        state = state_of(hass, "plug1", metric)
        assert state.state == STATE_UNKNOWN
        assert state.attributes["reason"] == "below_range"

    publish(hass, "plug1", "telemetry", "current", {"value": 0.5, "unit": "A"})
    await hass.async_block_till_done()
    state = state_of(hass, "plug1", "current")
    assert float(state.state) == 0.5
    assert "reason" not in state.attributes


async def test_several_nodes_one_device_each(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    for node, watts in (("kettle", 2000), ("fridge", 85), ("tv", 60)):
        publish(hass, node, "telemetry", "power", {"value": watts, "unit": "W"})
        publish(hass, node, "telemetry", "energy", {"value": watts / 10, "unit": "kWh"})
    await hass.async_block_till_done()

    dev_reg = dr.async_get(hass)
    hub_device = dev_reg.async_get_device(identifiers={(DOMAIN, HOME)})
    assert hub_device is not None
    for node, watts in (("kettle", 2000), ("fridge", 85), ("tv", 60)):
        device = dev_reg.async_get_device(identifiers={(DOMAIN, f"{HOME}/{node}")})
        assert device is not None
        assert device.name == node
        assert device.via_device_id == hub_device.id
        assert float(state_of(hass, node, "power").state) == watts
        assert state_of(hass, node, "power").name == f"{node} Power"
        assert float(state_of(hass, node, "energy").state) == watts / 10
    devices = dr.async_entries_for_config_entry(dev_reg, loaded_entry.entry_id)
    assert len(devices) == 4  # three nodes + the home hub


async def test_node_discovered_after_setup_gets_entities(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    assert entity_id(hass, "late", "power") is None
    publish(hass, "late", "telemetry", "power", {"value": 5})
    await hass.async_block_till_done()
    assert float(state_of(hass, "late", "power").state) == 5
    # A second metric of the same node appears on its first message too.
    publish(hass, "late", "telemetry", "voltage", {"value": 229})
    await hass.async_block_till_done()
    assert float(state_of(hass, "late", "voltage").state) == 229


async def test_values_update_and_unchanged_values_write_nothing(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug1", "telemetry", "power", {"value": 10})
    await hass.async_block_till_done()
    eid = entity_id(hass, "plug1", "power")
    changes: list[Event] = []

    @callback
    def record(event: Event) -> None:
        if event.data["entity_id"] == eid:
            changes.append(event)

    hass.bus.async_listen(EVENT_STATE_CHANGED, record)
    for _ in range(5):
        publish(hass, "plug1", "telemetry", "power", {"value": 10})
    await hass.async_block_till_done()
    assert changes == []
    publish(hass, "plug1", "telemetry", "power", {"value": 11})
    await hass.async_block_till_done()
    assert len(changes) == 1
    assert changes[0].data["new_state"].state == "11.0"


async def test_low_quality_reading_dropped(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug1", "telemetry", "power", {"value": 10, "quality": 99})
    publish(hass, "plug1", "telemetry", "power", {"value": 9999, "quality": 20})
    await hass.async_block_till_done()
    assert float(state_of(hass, "plug1", "power").state) == 10


async def test_rssi_is_a_diagnostic_sensor(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug1", "status", "rssi", {"value": -61, "unit": "dBm"})
    await hass.async_block_till_done()
    entry = er.async_get(hass).async_get(entity_id(hass, "plug1", "rssi") or "")
    assert entry is not None
    assert entry.entity_category == er.EntityCategory.DIAGNOSTIC
    assert entry.original_device_class == SensorDeviceClass.SIGNAL_STRENGTH
    assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION


async def test_firmware_becomes_sw_version(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug1", "status", "online", {"online": True, "firmware": "1.2.3"}, retain=True)
    await hass.async_block_till_done()
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug1")})
    assert device is not None
    assert device.sw_version == "1.2.3"
    publish(hass, "plug1", "status", "firmware", {"version": "1.3.0"}, retain=True)
    await hass.async_block_till_done()
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug1")})
    assert device is not None
    assert device.sw_version == "1.3.0"


async def test_other_homes_and_commands_are_not_nodes(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    publish(hass, "plug1", "telemetry", "power", {"value": 1}, home="elsewhere")
    publish(hass, "plug9", "command", "relay", {"action": "on", "request_id": "r1"})
    await hass.async_block_till_done()
    assert loaded_entry.runtime_data.nodes == {}


BAD_INPUT = [
    pytest.param(
        topic("plug1", "telemetry", "power"), b"{not json", "bad_json", id="malformed-json"
    ),
    pytest.param(topic("plug1", "telemetry", "power"), b"[1, 2]", "bad_json", id="not-an-object"),
    pytest.param(topic("plug1", "telemetry", "power"), b"\xff\xfe\x00", "bad_json", id="not-utf8"),
    pytest.param(
        topic("plug1", "telemetry", "power"), b'{"value": "high"}', "bad_payload", id="wrong-type"
    ),
    pytest.param(
        topic("plug1", "telemetry", "power"), b'{"unit": "W"}', "bad_payload", id="missing-key"
    ),
    pytest.param(
        topic("plug1", "telemetry", "power"),
        b'{"value": 1, "unit": "furlong"}',
        "bad_unit",
        id="bad-unit",
    ),
    pytest.param(
        topic("plug1", "status", "relay"), b'{"state": "maybe"}', "bad_payload", id="bad-relay"
    ),
    pytest.param(
        topic("plug1", "telemetry", "power"),
        b'{"value": 1, "pad": "' + b"x" * (64 * 1024) + b'"}',
        "oversized",
        id="oversized",
    ),
    pytest.param(
        f"homesync/{HOME}/nodes/bad$id/telemetry/power", b'{"value": 1}', "bad_id", id="bad-id"
    ),
    pytest.param(
        topic("plug1", "telemetry", "power") + "/extra",
        b'{"value": 1}',
        "bad_topic",
        id="extra-level",
    ),
    pytest.param(f"homesync/{HOME}/nodes/plug1", b'{"value": 1}', "bad_topic", id="too-short"),
]


@pytest.mark.parametrize(("bad_topic", "payload", "kind"), BAD_INPUT)
async def test_bad_input_is_skipped_and_next_message_lands(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    bad_topic: str,
    payload: bytes,
    kind: str,
) -> None:
    from pytest_homeassistant_custom_component.common import async_fire_mqtt_message

    publish(hass, "other", "telemetry", "power", {"value": 3})
    await hass.async_block_till_done()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="custom_components.heartbeat_iot"):
        for _ in range(3):  # repeated bad input: one warning, not three
            async_fire_mqtt_message(hass, bad_topic, payload)
            await hass.async_block_till_done()
    # Ours only: a loaded machine adds asyncio's "Executing ... took 0.1 seconds" warnings.
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("custom_components.heartbeat_iot")
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Ignoring message on" in warnings[0].getMessage()
    assert len(warnings[0].getMessage()) < 600  # the payload excerpt is truncated
    assert loaded_entry.state is ConfigEntryState.LOADED
    # The node that sent garbage was not created from it; other nodes are unaffected...
    assert float(state_of(hass, "other", "power").state) == 3
    # ...and the next good message lands.
    publish(hass, "plug1", "telemetry", "power", {"value": 42})
    publish(hass, "other", "telemetry", "power", {"value": 4})
    await hass.async_block_till_done()
    assert float(state_of(hass, "plug1", "power").state) == 42
    assert float(state_of(hass, "other", "power").state) == 4


async def test_restart_restores_devices_and_entities_from_storage(
    hass: HomeAssistant, setup_entry: Setup, hass_storage: dict[str, Any]
) -> None:
    entry = await setup_entry()
    publish(hass, "plug1", "telemetry", "power", {"value": 100})
    publish(hass, "plug1", "telemetry", "energy", {"value": 7.5})
    publish(hass, "plug1", "status", "firmware", {"version": "2.0.0"}, retain=True)
    await hass.async_block_till_done()
    # Unloading flushes the store; restart = a fresh setup from what was saved.
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    stored = hass_storage[f"{DOMAIN}.{entry.entry_id}"]["data"]["nodes"]
    assert stored["plug1"]["metrics"] == {"power": "W", "energy": "kWh"}

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert float(state_of(hass, "plug1", "energy").state) == 7.5  # last reading restored
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/plug1")})
    assert device is not None
    assert device.sw_version == "2.0.0"


async def test_store_alone_creates_entities_before_any_message(
    hass: HomeAssistant, setup_entry: Setup, entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    hass_storage[f"{DOMAIN}.{entry.entry_id}"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"{DOMAIN}.{entry.entry_id}",
        "data": {
            "nodes": {
                "plug7": {"firmware": "1.0.0", "metrics": {"power": "W", "co2": "ppm"}},
                "bad": "garbage",
            }
        },
    }
    await setup_entry()
    assert entity_id(hass, "plug7", "power") is not None
    co2 = state_of(hass, "plug7", "co2")
    assert co2.attributes[ATTR_UNIT_OF_MEASUREMENT] == "ppm"
    assert set(loaded_nodes(hass, entry)) == {"plug7"}


def loaded_nodes(hass: HomeAssistant, entry: MockConfigEntry) -> list[str]:
    return list(entry.runtime_data.nodes)


async def test_max_nodes_raises_repair_issue(
    hass: HomeAssistant,
    mqtt_mock: Any,
    issue_registry: ir.IssueRegistry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"home_id": HOME},
        options={**DEFAULT_OPTIONS, CONF_MAX_NODES: 2},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    for node in ("a", "b", "c", "d"):
        publish(hass, node, "telemetry", "power", {"value": 1})
    await hass.async_block_till_done()
    assert set(entry.runtime_data.nodes) == {"a", "b"}
    assert entity_id(hass, "c", "power") is None
    issue = issue_registry.async_get_issue(DOMAIN, f"max_nodes_exceeded_{entry.entry_id}")
    assert issue is not None
    assert issue.translation_placeholders == {"home_id": HOME, "max_nodes": "2"}
    # Existing nodes keep working.
    publish(hass, "a", "telemetry", "power", {"value": 2})
    await hass.async_block_till_done()
    assert float(state_of(hass, "a", "power").state) == 2

    # Removing a node makes room and clears the issue.
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/b")})
    assert device is not None
    assert await remove_device(hass, hass_ws_client, device.id, entry.entry_id)
    assert issue_registry.async_get_issue(DOMAIN, f"max_nodes_exceeded_{entry.entry_id}") is None


async def remove_device(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, device_id: str, entry_id: str
) -> bool:
    """Remove a device from the entry exactly as the UI's delete button does."""
    assert await async_setup_component(hass, "config", {})
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "config/device_registry/remove_config_entry",
            "config_entry_id": entry_id,
            "device_id": device_id,
        }
    )
    response = await client.receive_json()
    await hass.async_block_till_done()
    return bool(response["success"])


async def test_removing_a_node_device_forgets_the_node(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    publish(hass, "gone", "telemetry", "power", {"value": 1})
    await hass.async_block_till_done()
    dev_reg = dr.async_get(hass)
    device = dev_reg.async_get_device(identifiers={(DOMAIN, f"{HOME}/gone")})
    hub_device = dev_reg.async_get_device(identifiers={(DOMAIN, HOME)})
    assert device is not None
    assert hub_device is not None
    assert not await remove_device(hass, hass_ws_client, hub_device.id, loaded_entry.entry_id)
    assert await remove_device(hass, hass_ws_client, device.id, loaded_entry.entry_id)
    assert "gone" not in loaded_entry.runtime_data.nodes
    assert entity_id(hass, "gone", "power") is None
    # If it speaks again it comes back as a new device with fresh entities.
    publish(hass, "gone", "telemetry", "power", {"value": 2})
    await hass.async_block_till_done()
    assert float(state_of(hass, "gone", "power").state) == 2


async def test_unload_leaves_no_subscription(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    # The harness wraps the real MQTT client in a MagicMock; ask the real one.
    client = hass.data[DATA_MQTT].client._mock_wraps
    ours = f"homesync/{HOME}/nodes/#"
    assert ours in {sub.topic for sub in client.subscriptions}
    assert await hass.config_entries.async_unload(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.NOT_LOADED
    assert ours not in {sub.topic for sub in client.subscriptions}
    publish(hass, "after", "telemetry", "power", {"value": 1})
    await hass.async_block_till_done()
    assert dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/after")}) is None


async def test_remove_entry_deletes_store(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_storage: dict[str, Any]
) -> None:
    publish(hass, "plug1", "telemetry", "power", {"value": 1})
    await hass.async_block_till_done()
    assert await hass.config_entries.async_remove(loaded_entry.entry_id)
    await hass.async_block_till_done()
    assert f"{DOMAIN}.{loaded_entry.entry_id}" not in hass_storage


async def test_setup_retries_without_mqtt(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_parsed_topics_are_kept_bounded_and_commands_stay_ignored(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    """Parsed topics are reused (issue 14), never more than the cap, and only routed ones.

    A command echo must stay ignored and uncounted however often it comes back, and invented
    topics (here: names, on nodes over the cap) never grow the cache past its bound.
    """
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={"home_id": HOME},
        options={**DEFAULT_OPTIONS, CONF_MAX_NODES: 2},
        unique_id=HOME,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    data = entry.runtime_data
    for _ in range(2):
        publish(hass, "plug9", "command", "relay", {"action": "on", "request_id": "r1"})
    await hass.async_block_till_done()
    assert data.nodes == {}
    assert data.stats.messages.received == 0
    for _ in range(2):
        publish(hass, "plug1", "telemetry", "power", {"value": 1.5})
        await hass.async_block_till_done()
    assert data.nodes["plug1"].values == {"power": 1.5}
    publish(hass, "plug1", "telemetry", "power", {"value": 2.5})
    await hass.async_block_till_done()
    assert state_of(hass, "plug1", "power").state == "2.5"
    cap = 16 * 2 + 16  # hub.TOPICS_PER_NODE per node the home may have, plus one node's worth
    for i in range(3 * cap):
        publish(hass, f"x{i}", "status", "online", {"online": True})
    await hass.async_block_till_done()
    assert len(data.hub._routes) <= cap
    assert data.stats.messages.received == 3 + 3 * cap


async def test_a_known_nodes_messages_take_the_quiet_path_and_do_what_the_full_path_does(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14: once a node is known, its live heartbeats and readings skip the full path.

    Every outcome a user sees stays the full path's: values, conversions, dropped readings,
    rejections with their warning, relay and LED from heartbeats; and the unusual messages
    (a new interval, a bad unit) still reach the full path.
    """
    data = loaded_entry.runtime_data
    hub = data.hub
    full: list[str] = []
    receive = hub._receive

    def counting(msg: Any, route: Any) -> None:
        full.append(msg.topic)
        receive(msg, route)

    monkeypatch.setattr(hub, "_receive", counting)

    def heartbeat(seq: int, **extra: Any) -> None:
        publish(hass, "q", "status", "heartbeat", {"seq": seq, "uptime": seq * 30, **extra})

    window = data.availability.tracker.settings.link_window
    for seq in range(1, window + 3):  # discovery, the link window fills: the full path decides
        heartbeat(seq, interval=30)
    publish(hass, "q", "telemetry", "power", {"value": 10, "unit": "W"})  # a new metric
    await hass.async_block_till_done()
    full.clear()
    received = data.stats.messages.received

    heartbeat(window + 3, interval=30, relay="on", led="blink")
    publish(hass, "q", "telemetry", "power", {"value": 10, "unit": "W"})
    publish(hass, "q", "telemetry", "power", {"value": 1.5, "unit": "kW"})
    publish(hass, "q", "telemetry", "power", {"value": 9999, "quality": 20})
    await hass.async_block_till_done()
    assert full == []  # all four took the quiet path
    assert data.stats.messages.received == received + 4
    assert float(state_of(hass, "q", "power").state) == 1500
    assert data.outputs.relay("q") == "on"
    assert data.outputs.led("q") == "blink"

    with caplog.at_level(logging.WARNING, logger="custom_components.heartbeat_iot"):
        publish(hass, "q", "telemetry", "power", {"value": 3, "unit": "parsec"})
        heartbeat(window + 4, interval=60)  # a new interval: shown, so the full path
        await hass.async_block_till_done()
    assert len(full) == 2
    assert data.stats.messages.rejected == 1
    assert "unit 'parsec' is not usable for power" in caplog.text
    assert float(state_of(hass, "q", "power").state) == 1500
    assert data.availability.status("q").interval == 60.0  # type: ignore[union-attr]
