"""The reading sensors' own write path writes exactly what Home Assistant's write would.

Issue 14: `MetricSensor._async_write_reading()` writes a new reading without recomputing the
attributes (and the state) through `SensorEntity` / `Entity` on every message. That is an
honest optimisation only if nothing a user (or an automation, the recorder, the frontend) sees
changes: these tests run both paths on the same entity with the same value and compare what
each hands to the state machine (entity id, state string, attributes, force_update, context,
state info), for every metric of the catalogue plus generic ones, with the entity registry's
unit and display-precision options set and unset, online and offline, with unknown values,
reasons, non-finite and oversized numbers; and that a unit chosen in the entity settings, a
renamed device or entity and a customize change keep working through the registry.
"""

from __future__ import annotations

import math
from typing import Any

from homeassistant.components.sensor import DOMAIN as SENSOR_DOMAIN, SensorEntity
from homeassistant.components.sensor.const import UNIT_CONVERTERS
from homeassistant.const import ATTR_FRIENDLY_NAME, ATTR_ICON, ATTR_UNIT_OF_MEASUREMENT
from homeassistant.core import HomeAssistant, StateMachine
from homeassistant.core_config import DATA_CUSTOMIZE
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.entity import CalculatedState, Entity
from homeassistant.helpers.entity_component import DATA_INSTANCES
from homeassistant.helpers.entity_values import EntityValues
from homeassistant.util.unit_conversion import BaseUnitConverter
from homeassistant.util.unit_system import US_CUSTOMARY_SYSTEM
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.heartbeat_iot.const import DOMAIN
from custom_components.heartbeat_iot.homesync.protocol import METRICS
from custom_components.heartbeat_iot.sensor import MetricSensor

from .command_helpers import go_offline, go_online
from .conftest import HOME, publish

NODE = "plug"
# Every catalogue metric in its own unit, and two the catalogue does not know.
READINGS: dict[str, dict[str, Any]] = {
    **{
        key: {"value": 1.5, **({"unit": spec.unit} if spec.unit else {})}
        for key, spec in METRICS.items()
    },
    "co2": {"value": 400, "unit": "ppm"},
    "count": {"value": 3},
}

# What a reading can be in the node registry: floats of every kind (non-finite ones cannot
# arrive through the hub, but the write must still match), ints up to far beyond the state
# machine's 255 characters, None (unknown); and bools, which the hub never stores.
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda v: round(v, 3)),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.booleans(),  # an int subclass: not ours to format
    st.none(),
)
REASONS = st.one_of(st.none(), st.just("below_range"))


Call = tuple[str, str, dict[str, Any], bool, object, object]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every state handed to the state machine (both write paths end in async_set_internal)."""
    calls: list[Call] = []
    original = StateMachine.async_set_internal

    def record(
        self: StateMachine,
        entity_id: str,
        new_state: str,
        attributes: Any,
        force_update: bool,
        context: Any,
        state_info: Any,
        timestamp: float,
    ) -> None:
        calls.append(
            (entity_id, new_state, dict(attributes or {}), force_update, context, state_info)
        )
        original(
            self, entity_id, new_state, attributes, force_update, context, state_info, timestamp
        )

    monkeypatch.setattr(StateMachine, "async_set_internal", record)
    return calls


async def _sensors(hass: HomeAssistant) -> dict[str, MetricSensor]:
    """One reading sensor per metric of READINGS on the online node (all enabled)."""
    go_online(hass, NODE)
    for key, payload in READINGS.items():
        publish(hass, NODE, "telemetry", key, payload)
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    component = hass.data[DATA_INSTANCES][SENSOR_DOMAIN]
    sensors: dict[str, MetricSensor] = {}
    for key in READINGS:
        entity_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_{key}")
        assert entity_id is not None, key
        sensor = component.get_entity(entity_id)
        assert isinstance(sensor, MetricSensor)
        sensors[key] = sensor
    return sensors


def _other_unit(sensor: SensorEntity) -> str | None:
    """A unit the user could choose for this sensor in its settings (None: no conversion)."""
    converter: type[BaseUnitConverter] | None = UNIT_CONVERTERS.get(sensor.device_class)
    native = sensor.native_unit_of_measurement
    if converter is None or native not in converter.VALID_UNITS:
        return None
    return sorted(str(unit) for unit in converter.VALID_UNITS if unit not in (native, None))[0]


def _set_options(
    hass: HomeAssistant, sensors: dict[str, MetricSensor], *, unit: bool, precision: bool
) -> set[str]:
    """Sensor options as the entity settings dialog stores them; keys that now convert."""
    registry = er.async_get(hass)
    converted = set()
    for key, sensor in sensors.items():
        options: dict[str, Any] = {}
        if precision:
            options["display_precision"] = 4
        if unit and (other := _other_unit(sensor)) is not None:
            options[ATTR_UNIT_OF_MEASUREMENT] = other
            converted.add(key)
        registry.async_update_entity_options(sensor.entity_id, SENSOR_DOMAIN, options or None)
    return converted


def _write_both(
    sensor: MetricSensor, recorded: list[Call]
) -> tuple[bool, Call | type[Exception], Call | type[Exception]]:
    """(fast path taken, what our write handed over, what HA's write handed over)."""
    recorded.clear()
    taken = False
    ours: Call | type[Exception]
    try:
        taken = sensor._async_write_reading()
        if not taken:
            sensor.async_write_ha_state()  # what _handle_update does then
        ours = recorded[-1]
    except ValueError as err:  # HA's write raises for a non-finite number: so must ours
        ours = type(err)
    recorded.clear()
    plain: Call | type[Exception]
    try:
        sensor.async_write_ha_state()
        plain = recorded[-1]
    except ValueError as err:
        plain = type(err)
    return taken, ours, plain


def _check_equal(
    hass: HomeAssistant,
    sensors: dict[str, MetricSensor],
    recorded: list[Call],
    *,
    available: bool,
    converted: set[str],
) -> None:
    """Both paths hand the state machine the same, for generated readings of every sensor."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(readings=st.lists(st.tuples(VALUES, REASONS), min_size=len(sensors)))
    def check(readings: list[tuple[float | bool | None, str | None]]) -> None:
        node = sensors["power"].data.nodes[NODE]
        for (key, sensor), (value, reason) in zip(sensors.items(), readings, strict=False):
            node.values[key] = value
            if reason is None:
                node.unmeasured.pop(key, None)
            else:
                node.unmeasured[key] = reason
            taken, ours, plain = _write_both(sensor, recorded)
            assert ours == plain, (key, value, reason)
            if isinstance(plain, tuple) and available:
                # What lands in the state machine is what HA's own path computed just now.
                state = hass.states.get(sensor.entity_id)
                assert state is not None
                assert (state.state, dict(state.attributes)) == (plain[1], plain[2])
            common = (
                available
                and reason is None
                and key not in converted
                and type(value) in (int, float)
                and math.isfinite(value)  # type: ignore[arg-type]
                and len(str(value)) <= 255
            )
            # Not vacuous: the common case does take our path.
            assert taken == common, (key, value, reason)

    check()


@pytest.mark.parametrize(
    ("unit", "precision", "online"),
    [
        (False, False, True),
        (False, True, True),
        (True, False, True),
        (True, True, True),
        # Offline every write is HA's (unavailable): once without and once with a conversion.
        (False, False, False),
        (True, True, False),
    ],
    ids=[
        "no-options",
        "display-precision",
        "user-unit",
        "user-unit+precision",
        "offline",
        "offline-user-unit+precision",
    ],
)
@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_both_write_paths_write_the_same_state(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    recorded: list[Call],
    unit: bool,
    precision: bool,
    online: bool,
) -> None:
    """Generated readings, every metric, registry options set and unset, online and offline."""
    sensors = await _sensors(hass)
    converted = _set_options(hass, sensors, unit=unit, precision=precision)
    if not online:
        go_offline(hass, NODE)
    await hass.async_block_till_done()
    if unit:
        assert {"power", "voltage", "current", "energy", "temperature"} <= converted
    _check_equal(hass, sensors, recorded, available=online, converted=converted)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_unit_system_conversion_takes_home_assistants_path(
    hass: HomeAssistant, mqtt_mock: Any, entry: MockConfigEntry, recorded: list[Call]
) -> None:
    """With US customary units HA suggests °F for a °C sensor: converted, so HA's write."""
    hass.config.units = US_CUSTOMARY_SYSTEM
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    sensors = await _sensors(hass)
    temperature = hass.states.get(sensors["temperature"].entity_id)
    assert temperature is not None
    assert temperature.attributes[ATTR_UNIT_OF_MEASUREMENT] == "°F"
    assert temperature.state == "34.7"  # 1.5 °C
    _check_equal(hass, sensors, recorded, available=True, converted={"temperature"})


async def test_unit_chosen_in_the_entity_settings_converts_each_reading(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    """kW chosen for a W sensor: every new reading is shown in kW, and W again after."""
    go_online(hass, NODE)
    publish(hass, NODE, "telemetry", "power", {"value": 1000.0, "unit": "W"})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_power")
    assert entity_id is not None

    registry.async_update_entity_options(entity_id, SENSOR_DOMAIN, {"unit_of_measurement": "kW"})
    await hass.async_block_till_done()
    publish(hass, NODE, "telemetry", "power", {"value": 1500.0, "unit": "W"})
    await hass.async_block_till_done()
    state = hass.states.get(entity_id)
    assert state is not None
    assert (state.state, state.attributes[ATTR_UNIT_OF_MEASUREMENT]) == ("1.5", "kW")

    registry.async_update_entity_options(entity_id, SENSOR_DOMAIN, None)
    await hass.async_block_till_done()
    publish(hass, NODE, "telemetry", "power", {"value": 1600.0, "unit": "W"})
    await hass.async_block_till_done()
    state = hass.states.get(entity_id)
    assert state is not None
    assert (state.state, state.attributes[ATTR_UNIT_OF_MEASUREMENT]) == ("1600.0", "W")


@pytest.fixture
def ha_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Entity ids written through Home Assistant's own entity write path."""
    writes: list[str] = []
    original = Entity._async_write_ha_state

    def spy(self: Entity) -> None:
        writes.append(self.entity_id)
        original(self)

    monkeypatch.setattr(Entity, "_async_write_ha_state", spy)
    return writes


async def test_renames_and_customize_reach_the_next_reading(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, ha_writes: list[str]
) -> None:
    """A renamed device or entity, and a changed customize, show in the readings that follow."""
    go_online(hass, NODE)
    publish(hass, NODE, "telemetry", "power", {"value": 1.0, "unit": "W"})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_power")
    assert entity_id is not None
    value = 1.0

    def reading() -> dict[str, Any]:
        nonlocal value
        value += 1
        ha_writes.clear()
        publish(hass, NODE, "telemetry", "power", {"value": value, "unit": "W"})
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.state == str(value)
        assert ha_writes == []  # our path wrote it
        return dict(state.attributes)

    assert reading()[ATTR_FRIENDLY_NAME] == f"{NODE} Power"

    device = registry.async_get(entity_id).device_id  # type: ignore[union-attr]
    assert device is not None
    dr.async_get(hass).async_update_device(device, name_by_user="Kitchen plug")
    await hass.async_block_till_done()
    assert reading()[ATTR_FRIENDLY_NAME] == "Kitchen plug Power"

    registry.async_update_entity(entity_id, name="Kettle")
    await hass.async_block_till_done()
    assert reading()[ATTR_FRIENDLY_NAME] == "Kettle"

    # homeassistant.reload_core_config replaces the customize config; HA's write applies the
    # new one on the entity's next write, so ours does too.
    hass.data[DATA_CUSTOMIZE] = EntityValues({entity_id: {ATTR_ICON: "mdi:kettle"}})
    ha_writes.clear()
    publish(hass, NODE, "telemetry", "power", {"value": 99.0, "unit": "W"})
    state = hass.states.get(entity_id)
    assert state is not None
    assert state.attributes[ATTR_ICON] == "mdi:kettle"
    assert reading()[ATTR_ICON] == "mdi:kettle"


async def test_reason_then_reading(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, ha_writes: list[str]
) -> None:
    """Unknown with its reason (HA's write), then a reading without it (ours)."""
    go_online(hass, NODE)
    publish(hass, NODE, "telemetry", "current", {"value": 8.7, "unit": "A"})
    publish(hass, NODE, "telemetry", "current", {"value": None, "reason": "below_range"})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_current")
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    assert (state.state, state.attributes["reason"]) == ("unknown", "below_range")

    ha_writes.clear()
    publish(hass, NODE, "telemetry", "current", {"value": 0.5, "unit": "A"})
    state = hass.states.get(entity_id)
    assert state is not None
    assert state.state == "0.5"
    assert "reason" not in state.attributes
    assert ha_writes == []


async def test_new_entity_id_and_stale_registry_capabilities(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, ha_writes: list[str]
) -> None:
    """A renamed entity id gets the readings; stale registry capabilities are HA's to fix."""
    go_online(hass, NODE)
    publish(hass, NODE, "telemetry", "power", {"value": 1.0, "unit": "W"})
    publish(hass, NODE, "telemetry", "power", {"value": 2.0, "unit": "W"})
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    old_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_power")
    assert old_id is not None

    registry.async_update_entity(old_id, new_entity_id="sensor.kettle_power")
    await hass.async_block_till_done()
    ha_writes.clear()
    publish(hass, NODE, "telemetry", "power", {"value": 3.0, "unit": "W"})
    publish(hass, NODE, "telemetry", "power", {"value": 4.0, "unit": "W"})
    state = hass.states.get("sensor.kettle_power")
    assert state is not None
    assert state.state == "4.0"
    assert hass.states.get(old_id) is None
    assert ha_writes == []  # the re-added sensor writes through our path again

    # Capabilities in the registry that differ from the sensor's: HA's write (on the registry
    # update) corrects them, and the readings after it keep them right.
    registry.async_update_entity("sensor.kettle_power", capabilities={"state_class": "total"})
    await hass.async_block_till_done()
    ha_writes.clear()
    publish(hass, NODE, "telemetry", "power", {"value": 5.0, "unit": "W"})
    entry = registry.async_get("sensor.kettle_power")
    assert entry is not None
    assert entry.capabilities == {"state_class": "measurement"}
    state = hass.states.get("sensor.kettle_power")
    assert state is not None
    assert (state.state, state.attributes["state_class"]) == ("5.0", "measurement")
    assert ha_writes == []


async def test_our_path_stands_down_when_home_assistant_would_write_another_state(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    ha_writes: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The template is built from HA's own computation; if its state differs, HA writes."""
    go_online(hass, NODE)
    publish(hass, NODE, "telemetry", "power", {"value": 1.0, "unit": "W"})
    await hass.async_block_till_done()
    original = MetricSensor._async_calculate_state

    def disagreeing(self: MetricSensor) -> CalculatedState:
        calculated = original(self)
        return CalculatedState("something else", calculated.attributes, None)

    monkeypatch.setattr(MetricSensor, "_async_calculate_state", disagreeing)
    ha_writes.clear()
    publish(hass, NODE, "telemetry", "power", {"value": 2.0, "unit": "W"})
    publish(hass, NODE, "telemetry", "power", {"value": 3.0, "unit": "W"})
    assert len(ha_writes) == 2  # both through HA's write (which computes for itself)
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(SENSOR_DOMAIN, DOMAIN, f"{HOME}_{NODE}_power")
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    assert state.state == "3.0"
