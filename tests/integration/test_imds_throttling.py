"""The metadata service answers 429: the VM-side commands ask again within their --timeout, then say it is
throttling, not that the identity is missing or the service unreachable (azure-identity words a 429 "no
response from the IMDS endpoint")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import server_options

from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration

THROTTLING = "the metadata service is throttling requests (429); try again in a moment"


def throttle_token_requests(emulator: Any) -> None:
    emulator.fault("throttle", "/metadata/identity/oauth2/token", service="imds", count=None, retry_after=0)


def test_token_reports_throttling(fresh_emulator: Any) -> None:
    throttle_token_requests(fresh_emulator)

    mark = fresh_emulator.mark()
    result = fresh_emulator.run("--timeout", "6", "token", "--client-id", EXISTING_CLIENT_ID)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # Asked at 0, 1 and 3 s; the next wait (4 s) would end past --timeout (with up to 3 s of start-up).
    assert lines[:2] == [
        f"WARNING provision.azure.imds: the metadata service answered 429 ({THROTTLING}); asking again in {delay} s"
        for delay in ("1.0", "2.0")
    ]
    assert f"error: {THROTTLING}" in lines
    assert fresh_emulator.token_requests(mark) == 3
    assert "not found" not in result.stderr and "did not answer" not in result.stderr


def test_check_diagnoses_throttling(fresh_emulator: Any) -> None:
    throttle_token_requests(fresh_emulator)

    result = fresh_emulator.run(
        "--timeout", "6", "-o", "json", "check", *server_options(fresh_emulator, "flexible"), "--user", "myuser",
        "--client-id", EXISTING_CLIENT_ID,
    )  # fmt: skip

    assert result.returncode == 1
    diagnosis = json.loads(result.stdout)["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"], diagnosis["message"]) == ("token", "imds_throttled", THROTTLING)
