"""`provision role ... --server NAME -g RG`: the host, the flavor and the admin's login name come from
Resource Manager (the flexible server, its Entra admins, the signed-in principal), not from the user."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from helpers import database_token

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
ON_SERVER = ["--server", seed.FLEXIBLE_SERVER, "-g", RG]
SERVER_PATH = (
    f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}"
    f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}"
)


def run_json(emulator: Any, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = emulator.run("-o", "json", *args, env=env)
    assert result.returncode == expect, result.stderr + result.stdout
    return dict(json.loads(result.stdout))


def server_reads(emulator: Any, since: int) -> int:
    """GETs of the server itself (not of its admins) since a mark."""
    return sum(1 for r in emulator.requests(since, service="arm") if r["method"] == "GET" and r["path"] == SERVER_PATH)


def test_role_commands_find_the_host_flavor_and_admin_from_the_server(
    fresh_emulator: Any, emulator_environ: dict[str, str]
) -> None:
    identity = run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "app1-id", "--vm", seed.VM_NAME)

    mark = fresh_emulator.mark()
    created = run_json(
        fresh_emulator, "role", "create", *ON_SERVER, "--name", "app1", "--object-id", identity["principalId"]
    )
    assert created["changed"] is True and created["flavor"] == "flexible"
    assert server_reads(fresh_emulator, mark) == 1

    shown = run_json(fresh_emulator, "role", "show", *ON_SERVER, "--name", "app1")
    assert shown["objectId"] == identity["principalId"]
    listed = run_json(fresh_emulator, "role", "list", *ON_SERVER)
    assert "app1" in [p["role"] for p in listed["principals"]]
    with psycopg.connect(
        host=fresh_emulator.env["PROVISION_FLEX_HOST"],
        port=fresh_emulator.env["PROVISION_FLEX_PORT"],
        dbname="postgres",
        user="app1",
        password=database_token(identity["clientId"]),
        sslmode="verify-ca",
        sslrootcert=fresh_emulator.env["PGSSLROOTCERT"],
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app1",)

    dropped = run_json(fresh_emulator, "role", "drop", *ON_SERVER, "--name", "app1")
    assert dropped["changed"] is True


def test_a_principal_that_is_not_an_admin_is_told_the_servers_admins(fresh_emulator: Any) -> None:
    other = ["--object-id", "0b7c6f4e-1d2a-4e3b-9c8d-7a6b5c4d3e2f", "--principal-name", "dba", "--type", "User"]
    run_json(fresh_emulator, "server", "admin", "add", "-g", RG, "-n", seed.FLEXIBLE_SERVER, *other)
    run_json(fresh_emulator, "server", "admin", "remove", "-g", RG, "-n", seed.FLEXIBLE_SERVER, "--me")

    result = fresh_emulator.run("role", "list", *ON_SERVER)

    assert result.returncode == 1, result.stderr
    assert f"({seed.OPERATOR_PRINCIPAL_ID}) is not an Entra admin of server {seed.FLEXIBLE_SERVER}" in result.stderr
    assert "its Entra admins: dba (User)" in result.stderr
    assert f"provision server admin add -g {RG} -n {seed.FLEXIBLE_SERVER} --me" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "myflex", "-g", RG, "--host", "h.example"], "--server and --host: --server reads the host"),
        (["--server", "myflex", "-g", RG, "--admin-user", "a"], "--server and --admin-user:"),
        (
            ["--server", "myflex", "-g", RG, "--admin-client-id", "5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17"],
            "--server and --admin-client-id:",
        ),
        (["--server", "myflex"], "--server needs -g/--resource-group"),
        (["--server", "myflex", "-g", RG, "--flavor", "single"], "Single Server was retired on 2025-03-28"),
        (["--server", "-myflex", "-g", RG], "--server '-myflex': a server name has 3-63"),
        (["--server", "myflex", "-g", "bad/group"], "-g/--resource-group"),
        (["--host", "h.example", "--admin-user", "a", "-g", RG], "-g/--resource-group goes with --server"),
        (["--host", "h.example"], "Missing option '--admin-user'"),
        ([], "Missing option '--host' (or --server NAME"),
    ],
)
def test_bad_ways_to_name_the_server_exit_2_before_any_request(
    fresh_emulator: Any, args: list[str], message: str
) -> None:
    mark = fresh_emulator.mark()

    result = fresh_emulator.run("role", "list", *args, env={"PGHOST": None, "PGUSER": None})

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fresh_emulator.requests(mark) == []


def test_role_create_checks_its_inputs_before_reading_the_server(fresh_emulator: Any) -> None:
    mark = fresh_emulator.mark()

    result = fresh_emulator.run(
        "role", "create", *ON_SERVER, "--port", "99999", "--name", "app1", "--object-id", seed.OPERATOR_PRINCIPAL_ID
    )

    assert result.returncode == 2, result.stderr
    assert "99999" in result.stderr
    assert fresh_emulator.requests(mark) == []


def test_pghost_and_pguser_from_the_environment_yield_to_server(fresh_emulator: Any) -> None:
    listed = run_json(
        fresh_emulator, "role", "list", *ON_SERVER, env={"PGHOST": "elsewhere.example", "PGUSER": "nobody"}
    )
    assert listed["flavor"] == "flexible"


def test_role_create_with_server_dry_run_writes_nothing_and_a_rerun_is_a_no_op(fresh_emulator: Any) -> None:
    identity = run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "app2-id", "--vm", seed.VM_NAME)
    create = ["role", "create", *ON_SERVER, "--name", "app2", "--object-id", identity["principalId"]]

    planned = fresh_emulator.run("-o", "json", "--dry-run", *create)
    assert planned.returncode == 3, planned.stderr
    assert json.loads(planned.stdout)["statements"], "the dry run shows the SQL it would send"
    assert fresh_emulator.run("role", "show", *ON_SERVER, "--name", "app2").returncode == 1

    assert run_json(fresh_emulator, *create)["changed"] is True
    again = run_json(fresh_emulator, *create)
    assert again["changed"] is False and again["statements"] == []


def test_role_with_server_needs_read_access_to_the_server(fresh_emulator: Any) -> None:
    # A principal with no role at the server's scope cannot read it: Azure's 403, and no database is touched.
    subscription = f"/subscriptions/{seed.SUBSCRIPTION_ID}"
    fresh_emulator.revoke(seed.OPERATOR_PRINCIPAL_ID, "Owner", subscription)
    try:
        mark = fresh_emulator.mark()
        result = fresh_emulator.run("role", "list", *ON_SERVER)
    finally:
        fresh_emulator.grant(seed.OPERATOR_PRINCIPAL_ID, "Owner", subscription)
    assert result.returncode == 1, result.stderr
    assert "AuthorizationFailed" in result.stderr
    assert "Microsoft.DBforPostgreSQL/flexibleServers/read" in result.stderr
    database_tokens = [r for r in fresh_emulator.requests(mark, service="imds") if "ossrdbms" in json.dumps(r["query"])]
    assert database_tokens == [], "no database token was asked for"
