"""Test isolation: nothing leaves loopback and no real credential can be picked up.

`make test` already runs inside a private network namespace when the kernel allows it; the guard
below also holds when pytest is run directly."""

from __future__ import annotations

import os
import socket

import pytest

# Variables that would point azure-identity at a real credential or a real metadata endpoint.
_CREDENTIAL_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "PROVISION_", "PG")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE")


def _closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrub_environment() -> None:
    for name in list(os.environ):
        if name.startswith(_CREDENTIAL_PREFIXES) or name in _PROXIES:
            del os.environ[name]
    # Never let azure-identity fall back to 169.254.169.254: point it at a closed loopback port.
    os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = f"http://127.0.0.1:{_closed_loopback_port()}"


_scrub_environment()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


# Fixtures for the local Azure stack (a session-wide emulator process) live in their own module.
pytest_plugins = ["emulator_fixtures"]
