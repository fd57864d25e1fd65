"""Messages the library raises or logs name its parameters (`client_id=`), never the command line's
options: the metadata service's refusals, the connection diagnoses, TLS settings and time limits.
The same failures within a command name the options (`--client-id`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_vm_imds import IDENTITY_NOT_FOUND, FakeImds, RecordingConnect

import provision
from provision import deadline, naming
from provision.azure import imds
from provision.db import target
from provision.errors import ProvisionError

CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"
AMBIGUOUS = (400, {"error": "invalid_request", "error_description": "Multiple user assigned identities exist"})
UNKNOWN_RESOURCE = (400, {"error": "invalid_resource", "error_description": "AADSTS500011: not found"})


@pytest.fixture
def fake_imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeImds]:
    fake = FakeImds()
    monkeypatch.setenv(imds.ENDPOINT_VARIABLE, fake.url)
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(None))
    taken: list[float] = []  # "Identity not found" is retried for a while: on a clock that jumps instead
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "sleep", taken.append)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + sum(taken))
    yield fake
    fake.close()


def said(error: ProvisionError) -> str:
    return f"{error.message}\n{error.hint or ''}"


@pytest.mark.parametrize(
    ("reply", "client_id", "parameter"),
    [
        (IDENTITY_NOT_FOUND, None, "client_id="),  # no system-assigned identity
        (AMBIGUOUS, None, "client_id="),
        (UNKNOWN_RESOURCE, CLIENT_ID, "cloud="),
        (IDENTITY_NOT_FOUND, CLIENT_ID, "provision identity assign"),  # a wrong client id
    ],
)
def test_the_metadata_services_refusals_name_the_parameters(
    fake_imds: FakeImds, reply: Any, client_id: str | None, parameter: str
) -> None:
    fake_imds.reply = reply

    with pytest.raises(imds.TokenUnavailable) as raised:
        provision.access_token(client_id)

    assert parameter in said(raised.value)
    assert "--" not in said(raised.value)


def test_within_a_command_the_refusal_names_the_option(fake_imds: FakeImds) -> None:
    fake_imds.reply = IDENTITY_NOT_FOUND

    with naming.command_line(), pytest.raises(imds.TokenUnavailable) as raised:
        provision.access_token()

    assert "Pass --client-id with the client id" in said(raised.value)


@pytest.mark.parametrize(
    "failure",
    [
        'FATAL:  password authentication failed for user "u"',
        "FATAL:  Invalid Username specified. Please check the Username and retry connection."
        " The Username should be in <username@hostname> format.",
        'FATAL:  database "appdb" does not exist',
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        "FATAL:  SSL connection is required. Please specify SSL options and retry.",
        "server does not support SSL, but SSL was required",
        'could not read root certificate file "/x/ca.pem": No such file or directory',
        'server certificate for "localhost" does not match host name "127.0.0.1"',
        "FATAL:  The access token does not have a valid audience claim. wants https://x.example",
        'FATAL:  password authentication failed for user "u": oid mismatch',
    ],
)
def test_connection_diagnoses_name_the_parameters(
    fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    import psycopg

    monkeypatch.setattr(psycopg, "connect", RecordingConnect(failure))

    with pytest.raises(provision.DatabaseError) as raised:
        provision.connect("myserver.postgres.database.azure.com", "u", client_id=CLIENT_ID, port=6432)

    assert "--" not in said(raised.value)


def test_the_role_to_fix_is_named_with_its_values(fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    monkeypatch.setattr(psycopg, "connect", RecordingConnect('FATAL:  password authentication failed for user "u"'))

    with pytest.raises(provision.DatabaseError) as raised:
        provision.connect("myserver.postgres.database.azure.com", "u", client_id=CLIENT_ID, port=6432)

    assert "`provision role show` (host myserver.postgres.database.azure.com, port 6432, admin-user ADMIN, name u)" in (
        said(raised.value)
    )
    assert "user=u@myserver" in said(raised.value)


def test_an_unverified_sslmode_warns_with_the_parameter(
    fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    monkeypatch.setattr(psycopg, "connect", RecordingConnect())
    with caplog.at_level(logging.WARNING, logger="provision"):
        provision.connect("h.example", "u", client_id=CLIENT_ID, sslmode="require")

    (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith("sslmode=require: the server's certificate is not verified.")
    assert "Use sslmode=verify-full (the default)." in warning
    assert "--" not in warning


def test_no_trust_store_names_the_parameter(fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target, "system_trust_store", lambda: None)
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)

    with pytest.raises(provision.InvalidInput) as raised:
        provision.connect("h.example", "u", client_id=CLIENT_ID)

    assert said(raised.value).startswith("sslmode=verify-full: this machine has no CA bundle")
    assert "pass sslrootcert= (or PGSSLROOTCERT)" in said(raised.value)
    assert raised.value.exit_status == 2
    assert fake_imds.requests == []


def test_a_missing_pgsslrootcert_is_named_as_the_variable(fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", "/nonexistent/ca.pem")

    with pytest.raises(provision.InvalidInput) as raised:
        provision.connect("h.example", "u", client_id=CLIENT_ID)

    assert said(raised.value).startswith("PGSSLROOTCERT '/nonexistent/ca.pem': no such file")
    assert raised.value.exit_status == 2


def test_a_limit_of_the_librarys_own_names_no_option() -> None:
    with pytest.raises(provision.TimedOut) as raised:
        deadline.Deadline(0.0).check("waiting for the metadata service")

    assert said(raised.value).strip() == "the time limit of 0 s ran out while waiting for the metadata service"


def test_the_commands_budget_names_its_option() -> None:
    with pytest.raises(provision.TimedOut, match=r"^--timeout 0 s ran out while x\nRaise --timeout"):
        deadline.start(0.0).check("x")
    deadline.start(None)


def test_the_command_line_names_its_options(fake_imds: FakeImds) -> None:
    from click.testing import CliRunner

    from provision.cli import cli

    fake_imds.reply = IDENTITY_NOT_FOUND

    result = CliRunner().invoke(cli, ["token"])

    assert result.exit_code == 1
    assert "Pass --client-id with the client id of a user-assigned identity" in result.output
