"""What tests read the emulator's verdicts from, rather than from the tool's clients: the capture of what
clients really sent, unredacted (the request log beside it masks the same secrets), and the world as the
emulator holds it."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest

from provision.emulator import seed

pytestmark = pytest.mark.integration

FAKE_TOKEN = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"  # JWT-shaped, signed by no one


def send(emulator: Any, path: str, token: str) -> int:
    request = urllib.request.Request(
        f"{emulator.env['PROVISION_ARM_ENDPOINT']}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=emulator.env["REQUESTS_CA_BUNDLE"])
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_capture_is_off_until_switched_on(fresh_emulator: Any) -> None:
    with pytest.raises(AssertionError, match="409 .*NotCapturing"):
        fresh_emulator.admin("GET", "capture")


def test_the_capture_keeps_what_the_request_log_masks(fresh_emulator: Any) -> None:
    fresh_emulator.admin("POST", "capture")
    mark = fresh_emulator.mark()
    path = f"/subscriptions/{seed.SUBSCRIPTION_ID}?api-version=2022-12-01&leaked={FAKE_TOKEN}"
    assert send(fresh_emulator, path, FAKE_TOKEN) == 401
    (captured,) = fresh_emulator.admin("GET", "capture")["requests"]
    assert (captured["service"], captured["method"], captured["target"]) == ("arm", "GET", path)
    assert ["Authorization", f"Bearer {FAKE_TOKEN}"] in captured["headers"]
    (logged,) = fresh_emulator.requests(since=mark)
    assert logged["headers"]["Authorization"] == "<redacted>"
    assert logged["query"]["leaked"] == "<redacted>"


def test_a_reset_switches_the_capture_off_and_forgets_it(fresh_emulator: Any) -> None:
    fresh_emulator.admin("POST", "capture")
    send(fresh_emulator, f"/subscriptions/{seed.SUBSCRIPTION_ID}?api-version=2022-12-01", FAKE_TOKEN)
    fresh_emulator.reset()
    with pytest.raises(AssertionError, match="NotCapturing"):
        fresh_emulator.admin("GET", "capture")


def test_the_capture_sees_a_database_login_as_the_client_sent_it(fresh_emulator: Any) -> None:
    import psycopg

    fresh_emulator.admin("POST", "capture")
    env = fresh_emulator.env
    with pytest.raises(psycopg.OperationalError, match="password authentication failed|access token"):
        psycopg.connect(
            host=env["PROVISION_FLEX_HOST"],
            port=env["PROVISION_FLEX_PORT"],
            user="nobody",
            dbname="postgres",
            password=FAKE_TOKEN,
            sslmode="verify-full",
            sslrootcert=env["PGSSLROOTCERT"],
            connect_timeout=10,
        )
    messages = [e for e in fresh_emulator.admin("GET", "capture")["requests"] if e["service"] == "postgres"]
    assert [e["message"] for e in messages] == ["startup", "password"]
    assert "nobody" in messages[0]["data"] and messages[1]["data"] == f"p{FAKE_TOKEN}\0"


def test_the_world_is_read_by_kind_group_and_name(fresh_emulator: Any) -> None:
    held = fresh_emulator.admin("GET", f"machine?kind=virtualMachines&group={seed.RESOURCE_GROUP}&name={seed.VM_NAME}")
    assert held["name"] == seed.VM_NAME and held["etag"]
    with pytest.raises(AssertionError, match="400 .*missing query parameters: group, name"):
        fresh_emulator.admin("GET", "machine?kind=virtualMachines")
    with pytest.raises(AssertionError, match="404 "):
        fresh_emulator.admin("GET", f"machine?kind=virtualMachines&group={seed.RESOURCE_GROUP}&name=noSuchVM")
