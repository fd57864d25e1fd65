"""On the VM, against the local Azure stack: `provision check`, `provision psql`, `provision token` and
the library log in to both server flavors with tokens from the emulated metadata service, and every
failure cause gets its own diagnosis."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import provision
from provision.azure import imds
from provision.cli import cli
from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID

pytestmark = pytest.mark.integration

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
STEPS = "Getting access token from Azure Instance Metadata service...\nOpening connection using access token...\n"


@dataclass(frozen=True)
class Server:
    flavor: str
    host: str
    port: str
    admin: str

    def user(self, role: str) -> str:
        """What a role logs in as: Single Server wants ROLE@SERVERNAME."""
        return f"{role}@{seed.SINGLE_SERVER}" if self.flavor == "single" else role

    def options(self, role: str) -> list[str]:
        return ["--host", self.host, "--port", self.port, "--user", self.user(role)]


def server(emulator: Any, flavor: str) -> Server:
    prefix = "PROVISION_SINGLE" if flavor == "single" else "PROVISION_FLEX"
    env = emulator.env
    return Server(flavor, env[f"{prefix}_HOST"], env[f"{prefix}_PORT"], env[f"{prefix}_ADMIN"])


def create_role(emulator: Any, target: Server, role: str, client_id: str, object_id: str) -> None:
    """`provision role create` as the server's Entra admin (the VM's system-assigned identity)."""
    result = emulator.run(
        "role", "create", "--host", target.host, "--port", target.port, "--admin-user", target.admin,
        "--name", role, "--client-id", client_id, "--object-id", object_id,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def check_json(emulator: Any, *args: str, env: dict[str, str | None] | None = None) -> tuple[int, dict[str, Any]]:
    result = emulator.run("-o", "json", "check", *args, env=env)
    return result.returncode, json.loads(result.stdout)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["single", "flexible"])
def flavor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def in_process(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator's variables in this process too, for the library and in-process commands."""
    for name, value in fresh_emulator.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    return fresh_emulator


# -- logging in ------------------------------------------------------------------------------------


def test_check_connects_with_a_user_assigned_identity(fresh_emulator: Any, flavor: str) -> None:
    target = server(fresh_emulator, flavor)
    create_role(fresh_emulator, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)

    result = fresh_emulator.run("check", *target.options("myuser"), "--client-id", EXISTING_CLIENT_ID)

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(re.escape(STEPS) + r"\nConnected!\n\nPostgres version: PostgreSQL 1\d\.\d+ .*\n", result.stdout)
    assert result.stderr == ""


def test_check_connects_with_the_system_assigned_identity(fresh_emulator: Any, flavor: str) -> None:
    target = server(fresh_emulator, flavor)
    create_role(fresh_emulator, target, "vmapp", seed.OPERATOR_CLIENT_ID, seed.OPERATOR_PRINCIPAL_ID)
    mark = fresh_emulator.mark()

    status, report = check_json(fresh_emulator, *target.options("vmapp"))

    assert status == 0, report["diagnosis"]
    assert report["connected"] is True and report["clientId"] is None
    assert report["claims"]["appid"] == seed.OPERATOR_CLIENT_ID
    (token_request,) = [r for r in fresh_emulator.requests(mark, service="imds") if r["path"].endswith("/token")]
    assert "client_id" not in token_request["query"]


def test_psql_gets_the_token_in_its_environment_not_its_arguments(
    fresh_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = server(fresh_emulator, "flexible")
    report = tmp_path / "psql-saw.json"
    stand_in = tmp_path / "bin" / "psql"
    stand_in.parent.mkdir()
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, os, re, sys\n"
        "password = os.environ.get('PGPASSWORD', '')\n"
        f"with open({str(report)!r}, 'w') as out:\n"
        "    json.dump({'argv': sys.argv[1:], 'password_set': bool(password),\n"
        "               'password_is_jwt': bool(re.fullmatch(r'eyJ[\\w-]+\\.[\\w-]+\\.[\\w-]*', password)),\n"
        "               'libpq': {k: v for k, v in os.environ.items() if k in\n"
        "                         ('PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSSLMODE')}}, out)\n"
        "sys.exit(7)\n"
    )
    stand_in.chmod(0o755)
    path = f"{stand_in.parent}:/usr/bin:/bin"

    result = fresh_emulator.run(
        "psql", *target.options("myuser"), "--client-id", EXISTING_CLIENT_ID, "--", "-c", "select 1",
        env={"PATH": path, "PGSSLMODE": None},
    )  # fmt: skip

    assert result.returncode == 7, result.stderr
    saw = json.loads(report.read_text())
    assert saw["argv"] == ["-c", "select 1"]
    assert saw["password_set"] and saw["password_is_jwt"]
    assert saw["libpq"] == {
        "PGHOST": target.host,
        "PGPORT": target.port,
        "PGUSER": "myuser",
        "PGDATABASE": "postgres",
        "PGSSLMODE": "verify-full",
    }
    assert not JWT.search(result.stdout + result.stderr)


def test_psql_logs_in_with_the_real_client(fresh_emulator: Any, flavor: str) -> None:
    target = server(fresh_emulator, flavor)
    create_role(fresh_emulator, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)

    result = fresh_emulator.run(
        "psql", *target.options("myuser"), "--client-id", EXISTING_CLIENT_ID, "--", "-tAc", "select current_user"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "myuser\n"


def test_library_connects_and_caches_the_token(in_process: Any) -> None:
    target = server(in_process, "flexible")
    create_role(in_process, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)
    mark = in_process.mark()

    for _ in range(100):
        with provision.connect(target.host, "myuser", client_id=EXISTING_CLIENT_ID, port=int(target.port)) as conn:
            assert conn.execute("select current_user").fetchone() == ("myuser",)

    assert in_process.token_requests(mark) == 1


def test_pool_reconnects_with_a_new_token_after_the_old_one_expires(in_process: Any) -> None:
    target = server(in_process, "flexible")
    create_role(in_process, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)
    in_process.set_token_lifetime(4)
    mark = in_process.mark()

    with provision.pool(target.host, "myuser", client_id=EXISTING_CLIENT_ID, port=int(target.port), min_size=1) as pool:
        assert pool.max_lifetime == pytest.approx(2, abs=0.5)
        with pool.connection() as conn:
            first = conn.execute("select pg_backend_pid()").fetchone()
        first_requests = in_process.token_requests(mark)
        time.sleep(4.5)  # the first token has expired: the gateway would refuse it now
        backends = []
        for _ in range(3):
            with pool.connection() as conn:
                backends.append(conn.execute("select pg_backend_pid()").fetchone())

    # At most the first of these reuses the old connection, which the pool then retires.
    assert backends[-1] != first
    assert in_process.token_requests(mark) > first_requests


# -- each failure, its own diagnosis ---------------------------------------------------------------


def test_metadata_service_not_reachable(fresh_emulator: Any) -> None:
    target = server(fresh_emulator, "flexible")
    endpoint = f"http://127.0.0.1:{closed_port()}"

    result = fresh_emulator.run("check", *target.options("myuser"), env={"AZURE_POD_IDENTITY_AUTHORITY_HOST": endpoint})

    assert result.returncode == 1
    assert result.stdout == "Getting access token from Azure Instance Metadata service...\n"
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"error: getting an access token failed: the Azure Instance Metadata Service did not answer at {endpoint}"
    )
    assert "  message:           [Errno 111] Connection refused" in lines
    assert lines[-1].startswith("hint: Managed identity tokens come from the metadata service of an Azure VM")


def test_unknown_client_id(fresh_emulator: Any) -> None:
    target = server(fresh_emulator, "flexible")
    stranger = str(uuid.uuid4())

    status, report = check_json(fresh_emulator, *target.options("myuser"), "--client-id", stranger)

    assert status == 1 and report["connected"] is False
    diagnosis = report["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"]) == ("token", "identity_not_found")
    assert diagnosis["message"] == f"no managed identity with client id {stranger} is attached to this VM"
    assert diagnosis["evidence"]["message"] == "(invalid_request) Identity not found"
    assert "provision identity assign" in diagnosis["hint"]


def test_token_for_another_cloud(fresh_emulator: Any) -> None:
    target = server(fresh_emulator, "flexible")
    create_role(fresh_emulator, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)

    result = fresh_emulator.run(
        "--cloud",
        "AzureChinaCloud",
        "-o",
        "json",
        "check",
        *target.options("myuser"),
        "--client-id",
        EXISTING_CLIENT_ID,
    )

    assert result.returncode == 1
    diagnosis = json.loads(result.stdout)["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"]) == ("connect", "audience_mismatch")
    assert diagnosis["evidence"]["token aud"] == "https://ossrdbms-aad.database.chinacloudapi.cn"
    assert diagnosis["message"].endswith(f"it wants tokens for {seed.DATABASE_AUDIENCE}")
    assert diagnosis["hint"].startswith("Pass --cloud AzureCloud (now AzureChinaCloud)")


def test_expired_token(in_process: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    target = server(in_process, "flexible")
    create_role(in_process, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)
    in_process.set_token_lifetime(1)
    fetch = imds.request_token

    def late(resource: str, client_id: str | None = None) -> imds.ManagedIdentityToken:
        """A token that has expired by the time it is used, as on a machine whose clock is behind."""
        token = fetch(resource, client_id)
        time.sleep(max(0.0, token.expires_on - time.time()) + 1.1)
        return token

    monkeypatch.setattr(imds, "request_token", late)

    result = CliRunner().invoke(
        cli, ["-o", "json", "check", *target.options("myuser"), "--client-id", EXISTING_CLIENT_ID]
    )

    assert result.exit_code == 1
    diagnosis = json.loads(result.stdout)["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"]) == ("connect", "token_expired")
    assert diagnosis["evidence"]["message"] == (
        "FATAL: The access token has expired. Please acquire a new token and retry."
    )
    assert "clock" in diagnosis["hint"]


def test_single_server_needs_user_at_server(fresh_emulator: Any) -> None:
    target = server(fresh_emulator, "single")
    create_role(fresh_emulator, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)

    result = fresh_emulator.run(
        "check", "--host", target.host, "--port", target.port, "--user", "myuser", "--client-id", EXISTING_CLIENT_ID
    )

    assert result.returncode == 1
    assert result.stdout == STEPS
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "error: opening a connection with the access token failed: Single Server wants the user as"
        " ROLE@SERVERNAME, not 'myuser'"
    )
    assert lines[-1] == "hint: Pass --user myuser@SERVERNAME."


def test_role_missing(fresh_emulator: Any, flavor: str) -> None:
    target = server(fresh_emulator, flavor)

    status, report = check_json(fresh_emulator, *target.options("nobody"), "--client-id", EXISTING_CLIENT_ID)

    assert status == 1
    diagnosis = report["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"]) == ("connect", "token_rejected")
    assert diagnosis["evidence"]["token appid"] == EXISTING_CLIENT_ID
    assert diagnosis["evidence"]["token oid"] == EXISTING_PRINCIPAL_ID
    assert "provision role show" in diagnosis["hint"] and "--name nobody" in diagnosis["hint"]


def test_role_mapped_to_another_identity(fresh_emulator: Any, flavor: str) -> None:
    target = server(fresh_emulator, flavor)
    create_role(fresh_emulator, target, "myuser", seed.OPERATOR_CLIENT_ID, seed.OPERATOR_PRINCIPAL_ID)
    login = [*target.options("myuser"), "--client-id", EXISTING_CLIENT_ID]

    result = fresh_emulator.run("check", *login)

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    if flavor == "flexible":  # Azure names the mismatch: "Service Principal oid mismatch for role[myuser]"
        assert lines[0].endswith(
            f"role 'myuser' is mapped to another Entra object than this token's identity (oid {EXISTING_PRINCIPAL_ID})"
        )
    else:
        assert lines[0].endswith("the role is missing or mapped to another identity")
    assert f"  token appid:   {EXISTING_CLIENT_ID}" in lines
    assert f"  token oid:     {EXISTING_PRINCIPAL_ID}" in lines
    if flavor == "flexible":
        shown = fresh_emulator.run(*suggested(lines[-1], "role show", target))
        assert shown.returncode == 0, shown.stderr
        assert seed.OPERATOR_PRINCIPAL_ID in shown.stdout and EXISTING_PRINCIPAL_ID not in shown.stdout
    # Doing what the hint says lets the identity in.
    remapped = fresh_emulator.run(*suggested(lines[-1], "role create", target))
    assert remapped.returncode == 0, remapped.stderr
    assert fresh_emulator.run("check", *login).returncode == 0


def suggested(hint: str, command: str, target: Server) -> list[str]:
    """The arguments of the `provision COMMAND ...` a hint suggests, with the real admin user."""
    match = re.search(rf"`provision ({command} [^`]*)`", hint)
    assert match, hint
    return [target.admin if word == "ADMIN" else word for word in match[1].split()]


def test_untrusted_server_certificate(fresh_emulator: Any, tmp_path: Path) -> None:
    from provision.emulator.keys import Authority

    target = server(fresh_emulator, "flexible")
    other_ca = Authority.load_or_create(tmp_path / "another-authority").ca_path  # a CA that signed nothing here

    status, report = check_json(
        fresh_emulator, *target.options("myuser"), "--sslmode", "verify-full", "--sslrootcert", str(other_ca)
    )

    assert status == 1
    diagnosis = report["diagnosis"]
    assert (diagnosis["step"], diagnosis["cause"]) == ("connect", "tls")
    assert diagnosis["evidence"]["message"] == "SSL error: certificate verify failed"
    assert diagnosis["evidence"]["sslrootcert"] == str(other_ca)


# -- secrets ---------------------------------------------------------------------------------------


@pytest.fixture
def role_on_flexible(fresh_emulator: Any) -> Server:
    target = server(fresh_emulator, "flexible")
    create_role(fresh_emulator, target, "myuser", EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID)
    return target


@pytest.mark.parametrize("output", ["text", "json"])
def test_only_token_prints_a_token(fresh_emulator: Any, role_on_flexible: Server, output: str) -> None:
    login = [*role_on_flexible.options("myuser"), "--client-id", EXISTING_CLIENT_ID]
    commands = [
        ["check", *login],
        ["check", *role_on_flexible.options("nobody"), "--client-id", EXISTING_CLIENT_ID],
        ["--cloud", "AzureChinaCloud", "check", *login],
        ["psql", *login, "--", "-c", "select 1"],
        ["psql", *role_on_flexible.options("nobody"), "--", "-c", "select 1"],
    ]
    for command in commands:
        result = fresh_emulator.run("-v", "-v", "-o", output, *command)
        assert not JWT.search(result.stdout), command
        assert not JWT.search(result.stderr), command

    token = fresh_emulator.run("-v", "-v", "-o", output, "token", "--client-id", EXISTING_CLIENT_ID)
    assert token.returncode == 0, token.stderr
    assert JWT.search(token.stdout)
    assert not JWT.search(token.stderr)
