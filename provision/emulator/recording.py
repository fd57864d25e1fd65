"""What the emulated services keep of the requests clients send them.

The request log (DIR/requests.jsonl, GET /_emulator/requests) shows what a step sent, with the secrets
the emulator knows of masked: access tokens (JWTs, wherever they are), client secrets in token requests
and the headers that carry credentials. The emulator masks them itself, so that a bug in the tool's own
redaction cannot hide in the log that judges it.

The capture is the opposite, for tests that judge the tool's secrecy: while a test has switched it on
(POST /_emulator/capture), every request to Resource Manager and IMDS and every message a client sends
a database gateway is kept as it arrived, unredacted, in memory only, until the capture is switched off
or the world is reset."""

from __future__ import annotations

import re
import threading
from email.message import Message
from typing import Any

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A client's secret in a form-encoded token request to Entra (OAuth 2.0 client credentials, RFC 6749 2.3.1).
FORM_SECRET = re.compile(r"(?<![^&])(client_secret|client_assertion)=[^&]*")
MASK = "<redacted>"
# Authorization carries the bearer token; X-IDENTITY-HEADER is App Service's managed identity secret.
CREDENTIAL_HEADERS = ("authorization", "x-identity-header")


def masked(value: Any) -> Any:
    """`value` (a string, or JSON made of them) with every JWT and form-encoded client secret masked."""
    if isinstance(value, str):
        return FORM_SECRET.sub(rf"\1={MASK}", JWT.sub(MASK, value))
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def masked_headers(headers: Message) -> dict[str, str]:
    return {name: MASK if name.lower() in CREDENTIAL_HEADERS else masked(value) for name, value in headers.items()}


class Capture:
    """Raw requests and client messages, kept while switched on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] | None = None

    def start(self) -> None:
        with self._lock:
            self._entries = []

    def stop(self) -> None:
        with self._lock:
            self._entries = None

    @property
    def on(self) -> bool:
        return self._entries is not None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._entries is not None:
                self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]] | None:
        """What was captured since the capture was switched on; None while it is off."""
        with self._lock:
            return None if self._entries is None else list(self._entries)
