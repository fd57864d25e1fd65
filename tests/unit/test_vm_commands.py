"""`provision token`, `provision check` (the doctor) and `provision psql`, with the metadata service
and the server stubbed: what each prints, where the token goes, and each diagnosis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from click.testing import CliRunner, Result

from provision import naming
from provision.azure import imds
from provision.cli import cli
from provision.cloud import get_cloud
from provision.db import connect, doctor
from provision.db.target import Target, system_trust_store

CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"
PRINCIPAL_ID = "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"
RESOURCE = "https://ossrdbms-aad.database.windows.net"
VERSION = "PostgreSQL 15.18 on x86_64-pc-linux-gnu, compiled by gcc, 64-bit"
PUBLIC = get_cloud("AzureCloud")


def make_token(**claims: Any) -> str:
    defaults = {"aud": RESOURCE, "appid": CLIENT_ID, "oid": PRINCIPAL_ID, "tid": "t", "exp": int(time.time()) + 3600}
    return jwt.encode({**defaults, **claims}, "k" * 32, algorithm="HS256")


TOKEN = make_token()


@pytest.fixture(autouse=True)
def command_line() -> Any:
    """The diagnoses here are `provision check`'s: they name its options, as within a command."""
    with naming.command_line():
        yield


class StubImds:
    """Stands in for imds.access_token: hands out `token`, or raises `failure`."""

    def __init__(self) -> None:
        self.token = TOKEN
        self.failure: imds.TokenUnavailable | None = None
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, resource: str, client_id: str | None = None, min_validity: float = 300) -> Any:
        self.calls.append((resource, client_id))
        if self.failure:
            raise self.failure
        return imds.ManagedIdentityToken(self.token, int(time.time()) + 3600, time.time(), resource, client_id)


class FakeConnection:
    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def execute(self, query: str) -> FakeConnection:
        assert query == "SELECT version()"
        return self

    def fetchone(self) -> tuple[str]:
        return (VERSION,)


class StubServer:
    """Stands in for open_connection: records the password, answers, or fails with a libpq message."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self.passwords: list[str] = []

    def __call__(self, target: Target, password: str, **kw: Any) -> FakeConnection:
        self.passwords.append(password)
        if self.failure:
            raise psycopg.OperationalError(self.failure)
        return FakeConnection()


@pytest.fixture
def stub_imds(monkeypatch: pytest.MonkeyPatch) -> StubImds:
    stub = StubImds()
    monkeypatch.setattr(imds, "access_token", stub)
    return stub


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> StubServer:
    stub = StubServer()
    monkeypatch.setattr(doctor, "open_connection", stub)
    return stub


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def rejected(message: str) -> str:
    return f'connection failed: connection to server at "10.1.2.3", port 5432 failed: FATAL:  {message}'


CHECK = (
    "check",
    "--host",
    "myserver.postgres.database.azure.com",
    "--user",
    "myuser@myserver",
    "--client-id",
    CLIENT_ID,
)


# -- token -----------------------------------------------------------------------------------------


def test_token_prints_only_the_token(stub_imds: StubImds) -> None:
    result = run("token", "--client-id", CLIENT_ID)

    assert result.exit_code == 0
    assert result.stdout == TOKEN + "\n"
    assert stub_imds.calls == [(RESOURCE, CLIENT_ID)]


def test_token_json_adds_expiry_and_claims(stub_imds: StubImds) -> None:
    result = run("-o", "json", "token")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["accessToken"] == TOKEN
    assert data["expiresOn"] > time.time()
    assert data["resource"] == RESOURCE and data["clientId"] is None
    assert set(data["claims"]) == {"aud", "appid", "oid", "tid", "exp"}
    assert data["claims"]["appid"] == CLIENT_ID
    assert data["changed"] is False


def test_token_resource_follows_the_cloud(stub_imds: StubImds) -> None:
    run("--cloud", "AzureUSGovernment", "token")
    run("token", "--resource", "https://management.azure.com/")

    assert [resource for resource, _ in stub_imds.calls] == [
        "https://ossrdbms-aad.database.usgovcloudapi.net",
        "https://management.azure.com/",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("token", "--client-id", "myManagedIdentity"), "--client-id 'myManagedIdentity': expected a GUID"),
        (("token", "--resource", f"{RESOURCE}/.default"), "not a scope"),
        (("check", "--host", "h", "--user", "u", "--sslmode", "maybe"), "--sslmode 'maybe'"),
        (("check", "--host", "bad host", "--user", "u"), "--host 'bad host'"),
        (("psql", "--host", "h", "--user", "u", "--client-id", "x"), "--client-id 'x'"),
    ],
)
def test_bad_input_asks_for_nothing(stub_imds: StubImds, args: tuple[str, ...], message: str) -> None:
    result = run(*args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert stub_imds.calls == []


def test_token_failure_is_one_message(stub_imds: StubImds) -> None:
    stub_imds.failure = imds.TokenUnavailable(
        "the Azure Instance Metadata Service did not answer at http://169.254.169.254",
        cause="imds_unreachable",
        detail="no connection within 1 s",
        hint="This machine is not one.",
    )

    result = run("token")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: the Azure Instance Metadata Service did not answer")


# -- check -----------------------------------------------------------------------------------------


def test_check_prints_what_the_walkthrough_prints(stub_imds: StubImds, server: StubServer) -> None:
    result = run(*CHECK)

    assert result.exit_code == 0
    assert result.stdout == (
        "Getting access token from Azure Instance Metadata service...\n"
        "Opening connection using access token...\n"
        "\n"
        "Connected!\n"
        "\n"
        f"Postgres version: {VERSION}\n"
    )
    assert server.passwords == [TOKEN]


def test_check_json(stub_imds: StubImds, server: StubServer) -> None:
    result = run("-o", "json", *CHECK)

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["connected"] is True and data["serverVersion"] == VERSION
    assert data["claims"]["oid"] == PRINCIPAL_ID and data["diagnosis"] is None
    assert data["user"] == "myuser@myserver" and data["sslmode"] == "verify-full"
    assert TOKEN not in result.output


def test_check_failure_names_the_step_and_cause(stub_imds: StubImds, server: StubServer) -> None:
    server.failure = rejected('password authentication failed for user "myuser"')

    result = run(*CHECK)

    assert result.exit_code == 1
    assert result.stdout == (
        "Getting access token from Azure Instance Metadata service...\nOpening connection using access token...\n"
    )
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "error: opening a connection with the access token failed: the server rejected the token for"
        " 'myuser@myserver': the role is missing or mapped to another identity"
    )
    assert f"  token appid:   {CLIENT_ID}" in lines
    assert f"  token oid:     {PRINCIPAL_ID}" in lines
    assert lines[-1].startswith("hint: The role 'myuser' must exist")


def test_check_failure_json(stub_imds: StubImds, server: StubServer) -> None:
    server.failure = rejected('password authentication failed for user "myuser"')

    result = run("-o", "json", *CHECK)

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["connected"] is False
    assert data["diagnosis"]["step"] == "connect" and data["diagnosis"]["cause"] == "token_rejected"
    assert data["diagnosis"]["evidence"]["token appid"] == CLIENT_ID
    # The failure contract of every command: one object with the error and the exit status.
    assert data["exitStatus"] == 1 and data["changed"] is False
    assert data["error"]["code"] == "token_rejected" and data["error"]["message"] == data["diagnosis"]["message"]


def test_check_stops_when_there_is_no_token(stub_imds: StubImds, server: StubServer) -> None:
    stub_imds.failure = imds.TokenUnavailable(
        f"no managed identity with client id {CLIENT_ID} is attached to this VM",
        cause="identity_not_found",
        detail="(invalid_request) Identity not found",
        hint="Attach it.",
    )

    result = run(*CHECK)

    assert result.exit_code == 1
    assert result.stdout == "Getting access token from Azure Instance Metadata service...\n"
    assert result.stderr.splitlines()[0] == (
        f"error: getting an access token failed: no managed identity with client id {CLIENT_ID} is attached to this VM"
    )
    assert "  message:           (invalid_request) Identity not found" in result.stderr.splitlines()
    assert server.passwords == []


@pytest.mark.parametrize("failure", [None, rejected('password authentication failed for user "myuser"')])
def test_check_never_prints_the_token(stub_imds: StubImds, server: StubServer, failure: str | None) -> None:
    server.failure = failure

    for output in ("text", "json"):
        result = run("-v", "-v", "-o", output, *CHECK)
        assert TOKEN not in result.output
        assert TOKEN.split(".")[1] not in result.output


# -- diagnoses -------------------------------------------------------------------------------------

FLEX = Target("myserver.postgres.database.azure.com", "myuser")
SINGLE = Target("myserver.postgres.database.azure.com", "myuser@myserver")
LOCAL = Target("127.0.0.1", "myuser", port=6432)
CLAIMS = imds.TokenClaims(RESOURCE, CLIENT_ID, PRINCIPAL_ID, "t", int(time.time()) + 3600, None)


def diagnose(message: str, target: Target = LOCAL, claims: imds.TokenClaims | None = CLAIMS, cloud: str = "AzureCloud"):
    return doctor.diagnose_connection(psycopg.OperationalError(message), target, claims, get_cloud(cloud))


def test_role_missing_or_mapped_to_another_identity() -> None:
    found = diagnose(rejected('password authentication failed for user "myuser"'))

    assert found.cause == "token_rejected"
    assert found.evidence["token appid"] == CLIENT_ID and found.evidence["token oid"] == PRINCIPAL_ID
    assert found.evidence["message"] == 'FATAL: password authentication failed for user "myuser"'
    assert "`provision role show --host 127.0.0.1 --port 6432 --admin-user ADMIN --name myuser`" in found.hint
    assert (
        "`provision role create --host 127.0.0.1 --port 6432 --admin-user ADMIN --name myuser"
        f" --client-id {CLIENT_ID} --object-id {PRINCIPAL_ID} --replace`"
    ) in found.hint
    assert "ROLE@SERVERNAME" not in found.hint


def test_flexible_role_mapped_to_another_object() -> None:
    found = diagnose(rejected("Service Principal oid mismatch for role[myuser]."))

    assert found.cause == "oid_mismatch"
    assert f"this token's identity (oid {PRINCIPAL_ID})" in found.summary
    assert (
        "`provision role create --host 127.0.0.1 --port 6432 --admin-user ADMIN --name myuser"
        f" --object-id {PRINCIPAL_ID} --replace`"
    ) in found.hint
    assert "--client-id" in found.hint and found.evidence["token oid"] == PRINCIPAL_ID


def test_flexible_role_registered_as_a_user_refuses_an_app_token() -> None:
    found = diagnose(rejected("Service Principals cannot generate AAD_AUTH_TOKENTYPE_APP_USER tokens for role[myuser]"))

    assert found.cause == "token_type"
    assert "registered as a user or group" in found.summary
    assert f"--name myuser --object-id {PRINCIPAL_ID} --replace" in found.hint and "'service'" in found.hint


def test_azure_host_and_plain_user_suggest_the_single_server_form() -> None:
    found = diagnose(rejected('password authentication failed for user "myuser"'), FLEX)

    assert found.cause == "token_rejected"
    assert "--user myuser@myserver" in found.hint


def test_single_server_asks_for_user_at_server() -> None:
    message = (
        "Invalid Username specified. Please check the Username and retry connection. The Username should be in"
        " <username@hostname> format."
    )

    found = diagnose(rejected(message), FLEX)

    assert found.cause == "single_server_user"
    assert found.summary == "Single Server wants the user as ROLE@SERVERNAME, not 'myuser'"
    assert found.hint == "Pass --user myuser@myserver."


def test_expired_token_by_its_claims() -> None:
    expired = imds.TokenClaims(RESOURCE, CLIENT_ID, PRINCIPAL_ID, "t", 1_700_000_000, None)

    found = diagnose(rejected('password authentication failed for user "myuser"'), claims=expired)

    assert found.cause == "token_expired"
    assert found.summary == "the access token had expired at 2023-11-14T22:13:20Z"
    assert "clock" in found.hint and "this machine's clock" in found.evidence


def test_expired_token_by_the_servers_word() -> None:
    found = diagnose(rejected("the access token has expired"))

    assert found.cause == "token_expired"


def test_server_in_another_cloud() -> None:
    target = Target("myserver.postgres.database.chinacloudapi.cn", "myuser")

    found = diagnose(rejected('password authentication failed for user "myuser"'), target)

    assert found.cause == "audience_mismatch"
    assert found.summary.startswith("the server is in AzureChinaCloud, but the token is for AzureCloud")
    assert "--cloud" in found.hint


def test_token_for_another_audience() -> None:
    other = imds.TokenClaims("https://management.azure.com/", CLIENT_ID, PRINCIPAL_ID, "t", int(time.time()) + 60, None)

    found = diagnose(rejected('password authentication failed for user "myuser"'), claims=other)

    assert found.cause == "audience_mismatch"
    assert found.evidence["token aud"] == "https://management.azure.com/"
    assert found.evidence["expected audience"] == RESOURCE


def test_server_names_the_audience() -> None:
    message = (
        "The access token does not have a valid audience claim. Please acquire a new token for the resource"
        f' "{RESOURCE}".'
    )
    china = imds.TokenClaims(get_cloud("AzureChinaCloud").database_resource, CLIENT_ID, PRINCIPAL_ID, "t", None, None)

    found = diagnose(rejected(message), claims=china, cloud="AzureChinaCloud")

    assert found.cause == "audience_mismatch"
    assert found.summary == (
        "the server does not accept the token's audience https://ossrdbms-aad.database.chinacloudapi.cn;"
        f" it wants tokens for {RESOURCE}"
    )
    assert found.hint.startswith("Pass --cloud AzureCloud (now AzureChinaCloud)")


@pytest.mark.parametrize(
    ("message", "cause", "hint"),
    [
        ("server does not support SSL, but SSL was required", "tls", "offers no TLS"),
        ("FATAL:  SSL connection is required. Please specify SSL options and retry.", "tls", "--sslmode verify-full"),
        ("SSL error: certificate verify failed", "tls", "this may not be the server you meant"),
        ('server certificate for "localhost" does not match host name "127.0.0.1"', "tls", "its name is not --host"),
        ('root certificate file "/x.pem" does not exist', "tls", "cannot be read"),
        (
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "server_unreachable",
            "--port",
        ),
        ("failed to resolve host 'nope.example': [Errno -2] Name or service not known", "server_unreachable", "--host"),
        ("timeout expired", "server_unreachable", "--host"),
        (
            'FATAL:  no pg_hba.conf entry for host "20.1.2.3", user "u", database "d", SSL on',
            "firewall",
            "firewall rule",
        ),
        ('FATAL:  database "appdb" does not exist', "database_missing", "--database"),
        ("FATAL:  sorry, too many clients already", "connection_failed", "libpq or the server"),
    ],
)
def test_other_connection_failures(message: str, cause: str, hint: str) -> None:
    found = diagnose(f'connection failed: connection to server at "127.0.0.1", port 6432 failed: {message}')

    assert found.cause == cause
    assert hint in found.hint
    assert "connection to server at" not in found.evidence["message"]


def test_token_that_is_not_a_jwt() -> None:
    found = diagnose(rejected('password authentication failed for user "myuser"'), claims=None)

    assert found.cause == "token_rejected"
    assert found.evidence["token"] == "not a JWT: its claims cannot be read"
    assert "--client-id APPID --object-id OID --replace" in found.hint


def test_token_step_diagnosis_for_an_unknown_resource() -> None:
    error = imds.TokenUnavailable(
        "the metadata service issues no token for https://x",
        cause="resource_unknown",
        detail="(invalid_resource) x",
        hint="",
    )

    found = doctor.diagnose_token(error, None, get_cloud("AzureChinaCloud"))

    assert found.step == "token" and found.cause == "resource_unknown"
    assert found.evidence["identity"] == "system-assigned"
    assert "--cloud (now AzureChinaCloud)" in found.hint


# -- psql ------------------------------------------------------------------------------------------


class Exec(SystemExit):
    """Raised by the stand-in for os.execve, which never returns: this process ends there, so a
    SystemExit (the CLI turns any Exception into a one-line error)."""

    def __init__(self, program: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(1)
        self.program, self.argv, self.env = program, argv, env


@pytest.fixture
def psql_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    program = tmp_path / "psql"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        raise Exec(path, argv, env)

    monkeypatch.setattr(os, "execve", execve)
    return str(program)


def test_psql_gets_the_token_in_its_environment(stub_imds: StubImds, psql_on_path: str) -> None:
    result = run(
        "psql",
        "--host",
        "h.example",
        "--user",
        "myuser",
        "--client-id",
        CLIENT_ID,
        "--",
        "-c",
        "select 1",
        env={"PATH": str(Path(psql_on_path).parent)},
    )

    assert isinstance(result.exception, Exec)
    assert result.exception.program == psql_on_path
    assert result.exception.argv == [psql_on_path, "-c", "select 1"]
    env = result.exception.env
    assert env["PGPASSWORD"] == TOKEN
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "h.example",
        "5432",
        "myuser",
        "postgres",
    )
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == system_trust_store()
    assert TOKEN not in result.output


def test_psql_keeps_the_users_sslmode(stub_imds: StubImds, psql_on_path: str, tmp_path: Path) -> None:
    path, ca = str(Path(psql_on_path).parent), tmp_path / "ca.pem"
    ca.write_text("")
    from_environment = run("psql", "--host", "h", "--user", "u", env={"PATH": path, "PGSSLMODE": "verify-ca"})
    from_option = run(
        "psql", "--host", "h", "--user", "u", "--sslmode", "require", "--sslrootcert", str(ca), env={"PATH": path}
    )

    assert isinstance(from_environment.exception, Exec) and isinstance(from_option.exception, Exec)
    assert from_environment.exception.env["PGSSLMODE"] == "verify-ca"
    assert from_option.exception.env["PGSSLMODE"] == "require"
    assert from_option.exception.env["PGSSLROOTCERT"] == str(ca)


def test_psql_not_on_path(stub_imds: StubImds, tmp_path: Path) -> None:
    result = run("psql", "--host", "h", "--user", "u", env={"PATH": str(tmp_path)})

    assert result.exit_code == 1
    assert result.stderr.startswith("error: psql is not on PATH")
    assert stub_imds.calls == []


def test_psql_environment_is_built_from_the_target(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    env = connect.psql_environment(Target("h", "u", 6432, "appdb", "verify-full", str(ca)), "tok", {"HOME": "/root"})

    assert env == {
        "HOME": "/root",
        "PGHOST": "h",
        "PGPORT": "6432",
        "PGDATABASE": "appdb",
        "PGUSER": "u",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(ca),
        "PGPASSWORD": "tok",
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "provision",
        "PGGSSENCMODE": "disable",
    }


# -- import cost -----------------------------------------------------------------------------------


def test_the_command_line_and_the_package_load_no_sdk() -> None:
    code = (
        "import sys, provision, provision.cli\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'psycopg_pool', 'azure', 'msal', 'jwt'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "[]"


def test_the_package_exports_the_library() -> None:
    import provision

    assert set(provision.__all__) == {
        *("__version__", "connect", "pool", "connect_async", "async_pool", "access_token", "access_token_async"),
        *("ProvisionError", "InvalidInput", "CredentialError", "TokenUnavailable", "DatabaseError", "TimedOut"),
    }
    assert provision.connect is connect.connect and provision.pool is connect.pool
    assert all(getattr(provision, name) is not None for name in provision.__all__)
    assert provision.__version__.count(".") >= 1
    with pytest.raises(AttributeError):
        provision.nothing  # noqa: B018
