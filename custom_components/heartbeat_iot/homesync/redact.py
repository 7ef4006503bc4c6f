"""Redaction of anything secret-looking, by key pattern and at any depth (diagnostics).

Pure module. Diagnostics hold what nodes and users sent (queued command params, stored
options), so a fixed list of exact keys is not enough: `api_key`, `wifi_password` or
`clientSecret` nested in a queued `config` must not leak either.
"""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any, Final

REDACTED: Final = "**REDACTED**"

# Matched against the key in lower case with everything but letters and digits removed
# ("x-api-key" -> "xapikey", "accessToken" -> "accesstoken").
_SECRET_PARTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "accesskey",
    "credential",
    "psk",
    "auth",
    "username",
    "cookie",
)
_SECRET_SUFFIXES: Final = ("url", "uri", "pwd")
_NOT_ALNUM: Final = re.compile(r"[^a-z0-9]")
# Credentials inside any URL-like string: scheme://user:password@host
_USERINFO: Final = re.compile(r"(?<=://)[^/@\s]+@")


def is_secret_key(key: object) -> bool:
    """True for a mapping key whose value must not appear in diagnostics."""
    if not isinstance(key, str):
        return False
    flat = _NOT_ALNUM.sub("", key.lower())
    return any(part in flat for part in _SECRET_PARTS) or flat.endswith(_SECRET_SUFFIXES)


def redact(data: Any) -> Any:
    """A copy of `data` with every secret-looking key's value (None excepted) replaced."""
    if isinstance(data, Mapping):
        return {
            key: REDACTED if value is not None and is_secret_key(key) else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact(item) for item in data]
    if isinstance(data, str) and "://" in data:
        return _USERINFO.sub(f"{REDACTED}@", data)
    return data
