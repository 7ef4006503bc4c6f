"""Diagnostics redaction by key pattern, at any depth (issue 16 item 7)."""

from __future__ import annotations

import json
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from hypothesis import given, settings, strategies as st
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.heartbeat_iot.homesync.redact import REDACTED, is_secret_key, redact

from .command_helpers import go_offline, go_online, send_command

SECRETS = ["s3cr3t-api", "wifi-pw-123", "shh-secret", "tok-456", "hunter2", "mqtt-pw", "psk-1"]


async def test_queued_params_are_redacted_at_any_depth(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, hass_client: ClientSessionGenerator
) -> None:
    go_online(hass)
    await hass.async_block_till_done()
    go_offline(hass)
    await hass.async_block_till_done()
    await send_command(
        hass,
        command="config",
        action="set",
        queue=True,
        params={
            "config": {
                "heartbeat_interval": 15,
                "api_key": SECRETS[0],
                "wifi": {"ssid": "home", "wifi_password": SECRETS[1]},
                "extra": [{"Client-Secret": SECRETS[2]}, {"accessToken": SECRETS[3]}],
            },
            "password": SECRETS[4],
            "broker": "mqtt://ha:" + SECRETS[5] + "@127.0.0.1:1883",
            "WIFI_PSK": SECRETS[6],
        },
    )
    assert await async_setup_component(hass, "diagnostics", {})
    data: Any = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)

    text = json.dumps(data)
    for secret in SECRETS:
        assert secret not in text
    (intent,) = data["control"]["queue"]
    config = intent["params"]["config"]
    assert config["heartbeat_interval"] == 15  # what is not secret stays readable
    assert config["wifi"] == {"ssid": "home", "wifi_password": REDACTED}
    assert config["extra"] == [{"Client-Secret": REDACTED}, {"accessToken": REDACTED}]
    assert intent["params"]["broker"] == f"mqtt://{REDACTED}@127.0.0.1:1883"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "wifi_password",
        "PASSWORD",
        "passwd",
        "api_key",
        "apiKey",
        "x-api-key",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refreshToken",
        "psk",
        "wifi_psk",
        "username",
        "credentials",
        "private_key",
        "auth",
        "authorization",
        "url",
        "ota_url",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["node_id", "home_id", "metrics", "firmware", "reason", "state", "keys", "ssid"]
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


_keys = st.sampled_from(["a", "password", "x_token", "n"]) | st.text(max_size=6)
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(_json)
def test_redaction_keeps_the_shape_and_drops_every_secret(data: Any) -> None:
    out = redact(data)

    def walk(before: Any, after: Any) -> None:
        if isinstance(before, dict):
            assert isinstance(after, dict)
            assert list(after) == list(before)
            for key, value in before.items():
                if is_secret_key(key) and value is not None:
                    assert after[key] == REDACTED
                else:
                    walk(value, after[key])
        elif isinstance(before, list):
            assert isinstance(after, list)
            assert len(after) == len(before)
            for b, a in zip(before, after, strict=True):
                walk(b, a)
        elif not isinstance(before, str):
            assert after == before

    walk(data, out)
