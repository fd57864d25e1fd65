"""What the tool trusts and how long it waits when it connects to PostgreSQL: the sslmode rules, the
trust store, the warning for unverified modes, connect_timeout within the command's budget, TCP
keepalives, and the doctor telling TLS trust problems from dropped sessions."""

from __future__ import annotations

import ssl
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from provision import deadline, naming, validate
from provision.cloud import get_cloud
from provision.db import admin, connect, doctor, target
from provision.db.target import KEEPALIVES, Target, system_trust_store
from provision.errors import DatabaseError, InvalidInput, TimedOut


@pytest.fixture(autouse=True)
def command_line() -> Any:
    """These are the rules of the commands (check, psql, role): their messages name their options."""
    with naming.command_line():
        yield


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("")
    return str(path)


# -- sslmode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_modes_that_may_send_the_token_in_the_clear_are_refused(mode: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Target("h.example", "u", sslmode=mode)

    assert str(refused.value) == (
        f"--sslmode {mode}: refused, it lets the password (an access token) travel without TLS;"
        " use verify-full (the default) or require"
    )
    assert refused.value.exit_status == 2


@pytest.mark.parametrize("mode", ["verify-full", "verify-ca", "require"])
def test_encrypted_modes_are_accepted(mode: str) -> None:
    assert validate.sslmode(mode) == mode


def test_the_default_verifies_the_server_against_the_system_store() -> None:
    default = Target("h.example", "u")

    assert default.sslmode == "verify-full" and default.unverified_warning is None
    assert default.trust_store == system_trust_store() is not None
    kwargs = default.connect_kwargs("pw")
    assert (kwargs["sslmode"], kwargs["sslrootcert"]) == ("verify-full", system_trust_store())


def test_the_library_defaults_to_verify_full() -> None:
    import inspect

    for function in (connect.connect, connect.pool):
        assert inspect.signature(function).parameters["sslmode"].default == "verify-full"


def test_a_given_ca_overrides_the_environment_which_overrides_the_system_store(
    ca_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_environment = tmp_path / "env-ca.pem"
    from_environment.write_text("")
    monkeypatch.setenv("PGSSLROOTCERT", str(from_environment))

    assert Target("h.example", "u").trust_store == str(from_environment)
    assert Target("h.example", "u", sslrootcert=ca_file).trust_store == ca_file
    assert Target("h.example", "u", sslrootcert="system").trust_store == system_trust_store()


def test_a_missing_ca_file_is_bad_input() -> None:
    with pytest.raises(InvalidInput, match=r"^--sslrootcert '/nonexistent/ca\.pem': no such file"):
        Target("h.example", "u", sslrootcert="/nonexistent/ca.pem")


def test_no_trust_store_on_the_machine_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target, "system_trust_store", lambda: None)

    with pytest.raises(InvalidInput, match="no CA bundle to verify the server with; pass --sslrootcert"):
        Target("h.example", "u")


def test_the_system_store_honours_ssl_cert_file(ca_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)

    assert system_trust_store() == ca_file


def test_certifi_when_the_system_has_no_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    # What Python reports when OpenSSL's default CA file does not exist.
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: types.SimpleNamespace(cafile=None))

    assert system_trust_store() == certifi.where()


def test_require_sends_no_ca_and_warns_what_an_impostor_gets() -> None:
    unverified = Target("h.example", "u", sslmode="require")

    assert unverified.trust_store is None and "sslrootcert" not in unverified.connect_kwargs("pw")
    assert unverified.unverified_warning == (
        "--sslmode require: the server's certificate is not verified. A server posing as h.example would receive"
        " the password: an access token is a bearer credential that every server in the tenant accepts until it"
        " expires. Use --sslmode verify-full (the default)."
    )


def test_verify_ca_warns_that_the_host_name_is_not_checked() -> None:
    warning = Target("h.example", "u", sslmode="verify-ca").unverified_warning

    assert warning is not None and warning.startswith("--sslmode verify-ca: the server's host name is not checked")


# -- timeouts --------------------------------------------------------------------------------------


def test_connections_have_keepalives_and_a_connect_timeout() -> None:
    kwargs = Target("h.example", "u").connect_kwargs("pw")

    assert kwargs["connect_timeout"] == target.CONNECT_TIMEOUT
    assert {name: kwargs[name] for name in KEEPALIVES} == {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


@pytest.mark.parametrize(("budget", "timeout"), [(4.0, 4), (0.5, 2), (600.0, 10)])
def test_connect_timeout_stays_within_the_commands_budget(
    budget: float, timeout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(budget, clock=lambda: 0.0))

    assert Target("h.example", "u").connect_kwargs("pw")["connect_timeout"] == timeout


def test_no_connection_once_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(0.0, clock=lambda: 0.0))

    with pytest.raises(TimedOut, match="ran out while connecting to u@h.example:5432/postgres"):
        Target("h.example", "u").connect_kwargs("pw")


def test_psql_gets_the_bounded_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(5.0, clock=lambda: 0.0))

    env = connect.psql_environment(Target("h.example", "u"), "tok", {})

    assert env["PGCONNECT_TIMEOUT"] == "5" and env["PGSSLROOTCERT"] == system_trust_store()


# -- the doctor: TLS trust problems and dropped sessions ------------------------------------------

DROPPED_SESSIONS = [
    "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n"
    "\tbefore or while processing the request.",
    "SSL SYSCALL error: EOF detected",
    "SSL error: unexpected eof while reading",
    "SSL connection has been closed unexpectedly",
]
TLS_PROBLEMS = [
    "SSL error: certificate verify failed",
    'server certificate for "localhost" (and 2 other names) does not match host name "127.0.0.2"',
    "server does not support SSL, but SSL was required",
    'root certificate file "/x.pem" does not exist',
]


def libpq(message: str) -> str:
    return f'connection failed: connection to server at "127.0.0.1", port 6432 failed: {message}'


@pytest.mark.parametrize("message", DROPPED_SESSIONS)
def test_a_dropped_session_is_not_a_tls_problem(message: str) -> None:
    found = doctor.diagnose_connection(
        Exception(libpq(message)), Target("127.0.0.1", "u", port=6432), None, get_cloud("AzureCloud")
    )

    assert not doctor.tls_problem(message)
    assert found.cause == "connection_dropped" and "try again" in found.hint
    assert "sslmode" not in found.evidence


@pytest.mark.parametrize("message", TLS_PROBLEMS)
def test_tls_problems_are_still_found(message: str) -> None:
    found = doctor.diagnose_connection(
        Exception(libpq(message)), Target("127.0.0.1", "u", port=6432), None, get_cloud("AzureCloud")
    )

    assert doctor.tls_problem(message) and found.cause == "tls"
    assert found.evidence["sslrootcert"] == system_trust_store()


def test_the_admin_login_tells_a_dropped_session_from_a_tls_problem() -> None:
    where = Target("127.0.0.1", "aadadmin", port=6432)

    dropped = admin.connection_error(libpq(DROPPED_SESSIONS[1]), where, "pw", "PGPASSWORD")
    untrusted = admin.connection_error(libpq(TLS_PROBLEMS[0]), where, "pw", "PGPASSWORD")

    assert isinstance(dropped, DatabaseError) and dropped.hint is None
    assert untrusted.hint is not None and "--sslrootcert" in untrusted.hint


# -- module structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["provision.db.doctor", "provision.db.admin", "provision.db.target"])
def test_the_doctor_does_not_import_the_connection_module(first: str) -> None:
    code = f"import sys, {first}\nprint('provision.db.connect' in sys.modules)"

    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "False"
