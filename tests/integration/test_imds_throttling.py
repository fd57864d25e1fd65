"""The metadata service answers 429: the VM-side commands say it is throttling, not that the identity is
missing or the service unreachable (azure-identity words a 429 "no response from the IMDS endpoint")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import server_options

from provision.emulator.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration

THROTTLING = "the metadata service is throttling requests (429); try again in a moment"


def throttle_token_requests(emulator: Any) -> None:
    emulator.fault("throttle", "/metadata/identity/oauth2/token", service="imds", count=None, retry_after=0)


def test_token_reports_throttling(fresh_emulator: Any) -> None:
    throttle_token_requests(fresh_emulator)

    result = fresh_emulator.run("token", "--client-id", EXISTING_CLIENT_ID)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == f"error: {THROTTLING}"
    assert "not found" not in result.stderr and "did not answer" not in result.stderr


def test_check_diagnoses_throttling(fresh_emulator: Any) -> None:
    throttle_token_requests(fresh_emulator)

    result = fresh_emulator.run(
        "-o", "json", "check", *server_options(fresh_emulator, "flexible"), "--user", "myuser",
        "--client-id", EXISTING_CLIENT_ID,
    )  # fmt: skip

    assert result.returncode == 1
    diagnosis = json.loads(result.stdout)["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"], diagnosis["message"]) == ("token", "imds_throttled", THROTTLING)
