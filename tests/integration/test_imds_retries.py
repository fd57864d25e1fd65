"""The VM-side commands against the emulated metadata service's habits: an identity attached a moment ago
is waited for, a 410 or 500 is asked again, and the waiting shows on stderr."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import server_options

from provision.emulator import seed

pytestmark = pytest.mark.integration

TOKEN_PATH = "/metadata/identity/oauth2/token"


def test_token_waits_for_an_identity_attached_a_moment_ago(fresh_emulator: Any) -> None:
    fresh_emulator.admin("PATCH", "settings", {"imds_identity_delay": 5})
    created = fresh_emulator.run(
        "-o", "json", "identity", "create", "-g", seed.RESOURCE_GROUP, "-n", "id-new", "--vm", seed.VM_NAME
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["clientId"]
    mark = fresh_emulator.mark()

    result = fresh_emulator.run("token", "--client-id", client_id)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # a JWT
    statuses = [e["status"] for e in fresh_emulator.requests(mark, service="imds") if e["path"] == TOKEN_PATH]
    assert statuses[0] == 400 and statuses[-1] == 200
    assert f"does not serve the managed identity with client id {client_id} (yet?); asking again in 1.0 s" in (
        result.stderr
    )


@pytest.mark.parametrize("kind", ["updating", "server_error"])
def test_check_asks_again_after_a_transient_answer(fresh_emulator: Any, kind: str) -> None:
    fresh_emulator.fault(kind, TOKEN_PATH, service="imds", count=2)
    mark = fresh_emulator.mark()

    result = fresh_emulator.run(
        "-o", "json", "check", *server_options(fresh_emulator, "flexible"), "--user", "nobody-here"
    )

    # The token step succeeds on the third answer; the login then fails for the missing role.
    report = json.loads(result.stdout)
    assert report["diagnosis"]["step"] == "connect"
    statuses = [e["status"] for e in fresh_emulator.requests(mark, service="imds") if e["path"] == TOKEN_PATH]
    assert statuses == [410 if kind == "updating" else 500] * 2 + [200]
    assert result.stderr.count("asking again in") == 2


@pytest.mark.slow
def test_a_wrong_client_id_fails_within_the_window(fresh_emulator: Any) -> None:
    stranger = "5d1c7c2e-0b8a-4e6f-9a3d-2c4b6e8f0a1b"
    mark = fresh_emulator.mark()

    result = fresh_emulator.run("token", "--client-id", stranger)

    assert result.returncode == 1 and result.stdout == ""
    assert f"error: no managed identity with client id {stranger} is attached to this VM" in result.stderr
    assert "the metadata service may not serve it yet" in result.stderr
    # Asked at 0, 1, 3, 7 and 10 s: IDENTITY_NOT_FOUND_WINDOW bounds what a typo costs.
    assert fresh_emulator.token_requests(mark) == 5
