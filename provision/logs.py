"""Logging on stderr for -v, with secrets redacted wherever they might slip into a message."""

from __future__ import annotations

import logging
import re

# JWTs (access tokens), Authorization headers, and password=... pairs in conninfo strings or URLs.
_SECRETS = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<token redacted>"),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(password\s*[=:]\s*['\"]?)[^\s'\",}]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(access_token['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1<redacted>"),
)


# A known secret (a password from PGPASSWORD) is masked wherever it appears, but only from this length on:
# a shorter one ("a", "pass") also occurs in ordinary words, and masking those would garble the message
# while hiding nothing (libpq does not echo passwords; password=... pairs are masked by pattern anyway).
MIN_KNOWN_SECRET_LENGTH = 8


def redact(text: str, *known_secrets: str) -> str:
    """`text` with access tokens, Authorization values, password=... pairs and `known_secrets` masked."""
    for secret in known_secrets:
        if len(secret) >= MIN_KNOWN_SECRET_LENGTH:
            text = text.replace(secret, "<redacted>")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(verbosity: int) -> None:
    """-v: our INFO; -vv: our DEBUG and the Azure SDK's INFO (its HTTP log, headers redacted)."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("provision").setLevel(
        logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    )
    # azure-identity logs a WARNING per failed credential in a chain; our own error says what failed.
    logging.getLogger("azure").setLevel(logging.INFO if verbosity >= 2 else logging.ERROR)
    logging.getLogger("msal").setLevel(logging.INFO if verbosity >= 2 else logging.ERROR)
