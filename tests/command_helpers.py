"""Helpers shared by the integration tests: the test node, commands, answers, time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
import json
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant, ServiceResponse
from homeassistant.helpers import device_registry as dr, entity_registry as er
from pytest_homeassistant_custom_component.common import async_fire_time_changed_exact

from custom_components.heartbeat_iot.const import DOMAIN

from .conftest import HOME, publish, topic

NODE = "plug"


def go_online(hass: HomeAssistant, node: str = NODE, seq: int = 1) -> None:
    """A live heartbeat: proof of life."""
    publish(hass, node, "status", "heartbeat", {"seq": seq, "uptime": 10 + seq, "interval": 30})


def go_offline(hass: HomeAssistant, node: str = NODE) -> None:
    """The node stops gracefully: offline at once (a will counts only after its hold,
    tests/test_will_hold.py)."""
    publish(hass, node, "status", "online", {"online": False, "reason": "shutdown"})


def relay_status(hass: HomeAssistant, state: str, node: str = NODE, *, retain: bool = True) -> None:
    publish(hass, node, "status", "relay", {"state": state, "source": "button"}, retain=retain)


def respond(
    hass: HomeAssistant,
    request_id: str,
    status: str = "success",
    result: str | None = None,
    node: str = NODE,
    **extra: Any,
) -> None:
    """The node's response/command."""
    payload: dict[str, Any] = {"request_id": request_id, "status": status, **extra}
    if result is not None:
        payload["result"] = result
    publish(hass, node, "response", "command", payload)


def sent(mqtt_mock: Any, command: str = "relay", node: str = NODE) -> list[dict[str, Any]]:
    """Payloads we published to the node's command topic, oldest first."""
    wanted = topic(node, "command", command)
    return [
        json.loads(call.args[1])
        for call in mqtt_mock.async_publish.call_args_list
        if call.args[0] == wanted
    ]


def entity_id(hass: HomeAssistant, key: str, node: str = NODE, platform: str = "switch") -> str:
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{HOME}_{node}_{key}")
    assert found is not None, f"no {platform} {key} for {node}"
    return found


def state(hass: HomeAssistant, key: str = "relay", node: str = NODE) -> str:
    current = hass.states.get(entity_id(hass, key, node))
    assert current is not None
    return current.state


def device_id(hass: HomeAssistant, node: str = NODE) -> str:
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, f"{HOME}/{node}")})
    assert device is not None
    return device.id


def start[T](coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run a blocking call in the background while the test plays the node."""
    return asyncio.ensure_future(coro)


async def settle(rounds: int = 30) -> None:
    """Let the loop run what is ready, without waiting for anything.

    `hass.async_block_till_done()` would wait for the pending command itself (an entity
    service call runs as a hass task), so tests with a command in flight yield instead.
    """
    for _ in range(rounds):
        await asyncio.sleep(0)


async def advance(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    seconds: float,
    *,
    step: float | None = None,
) -> None:
    """The one way tests move time: `seconds` forward in steps of at most `step` s (default: one
    jump), firing after each step exactly what became due, then letting the loop run.

    Command timeouts are loop timers: one that is due runs when the clock passes it, and the
    next one (the backoff) is scheduled from there, so long jumps over retries go in steps.
    Exact: the plain `async_fire_time_changed` runs timers up to 0.5 s early. The loop is let
    run with `settle()`, not `async_block_till_done()`, which would wait for a command in flight.
    """
    step = seconds if step is None else step
    while seconds > 1e-9:
        delta = min(step, seconds)
        seconds -= delta
        freezer.tick(timedelta(seconds=delta))
        async_fire_time_changed_exact(hass)
        await settle()


async def send_command(
    hass: HomeAssistant, *, return_response: bool = True, **data: Any
) -> ServiceResponse:
    """Call heartbeat_iot.send_command for the test node (fields override the defaults)."""
    return await hass.services.async_call(
        DOMAIN,
        "send_command",
        {"device_id": device_id(hass), **data},
        blocking=True,
        return_response=return_response,
    )
