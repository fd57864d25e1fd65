"""`provision server` end to end: the real CLI and SDK client against the emulated Resource Manager, and
what its changes do to logins on the emulated Flexible server."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from helpers import database_token, writes

from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
SERVER = ["-g", RG, "-n", seed.FLEXIBLE_SERVER]
SERVER_PATH = (
    f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}"
    f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{seed.FLEXIBLE_SERVER}"
)


def run_json(emulator: Any, *args: str, expect: int = 0) -> dict[str, Any]:
    result = emulator.run("-o", "json", *args)
    assert result.returncode == expect, result.stderr + result.stdout
    return json.loads(result.stdout)


def login(emulator: Any, user: str, client_id: str | None = None) -> psycopg.Connection:
    """A token login to the emulated Flexible server as `user`, with the VM's (or `client_id`'s) token."""
    return psycopg.connect(
        host=emulator.env["PROVISION_FLEX_HOST"],
        port=emulator.env["PROVISION_FLEX_PORT"],
        dbname="postgres",
        user=user,
        password=database_token(client_id),
        sslmode="verify-ca",
        sslrootcert=emulator.env["PGSSLROOTCERT"],
        connect_timeout=10,
    )


def set_auth(emulator: Any, **auth: str) -> None:
    """Change the server's authConfig behind the tool's back, with the real SDK client."""
    from provision.azure.arm import Arm

    with Arm.from_options(seed.SUBSCRIPTION_ID, "AzureCloud", emulator.env["PROVISION_ARM_ENDPOINT"]) as arm:
        arm.postgres_client().servers.begin_update(
            RG, seed.FLEXIBLE_SERVER, {"properties": {"authConfig": auth}}
        ).result()


def test_show_reads_the_seeded_server(fresh_emulator: Any) -> None:
    data = run_json(fresh_emulator, "server", "show", *SERVER)
    assert data["changed"] is False
    assert data["fullyQualifiedDomainName"] == seed.host_name(seed.FLEXIBLE_SERVER)
    assert data["state"] == "Ready"
    assert data["authConfig"] == {
        "activeDirectoryAuth": "Enabled",
        "passwordAuth": "Enabled",
        "tenantId": seed.TENANT_ID,
    }
    assert [(a["principalName"], a["objectId"]) for a in data["entraAdmins"]] == [
        (seed.DATABASE_ADMIN, seed.OPERATOR_PRINCIPAL_ID)
    ]


def test_show_of_a_missing_server_says_so(fresh_emulator: Any) -> None:
    result = fresh_emulator.run("server", "show", "-g", RG, "-n", "nosuchserver")
    assert result.returncode == 1
    assert "flexible server nosuchserver in resource group myResourceGroup was not found" in result.stderr


def test_entra_enable_turns_token_logins_back_on_and_a_rerun_writes_nothing(
    fresh_emulator: Any, emulator_environ: dict[str, str]
) -> None:
    set_auth(fresh_emulator, activeDirectoryAuth="Disabled")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(fresh_emulator, seed.DATABASE_ADMIN)

    mark = fresh_emulator.mark()
    dry = run_json(fresh_emulator, "--dry-run", "server", "entra", "enable", *SERVER, expect=3)
    assert dry["actions"][0]["request"] == {
        "method": "PATCH",
        "url": f"{fresh_emulator.env['PROVISION_ARM_ENDPOINT']}{SERVER_PATH}?api-version=2026-10-01",
        "body": {"properties": {"authConfig": {"activeDirectoryAuth": "Enabled"}}},
    }
    assert writes(fresh_emulator, mark) == []

    data = run_json(fresh_emulator, "server", "entra", "enable", *SERVER, "--disable-password-auth")
    assert data["changed"] is True
    assert data["authConfig"]["activeDirectoryAuth"] == "Enabled"
    assert data["authConfig"]["passwordAuth"] == "Disabled"
    assert writes(fresh_emulator, mark) == [f"PATCH {SERVER_PATH}"]
    with login(fresh_emulator, seed.DATABASE_ADMIN) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (seed.DATABASE_ADMIN,)

    mark = fresh_emulator.mark()
    again = run_json(fresh_emulator, "server", "entra", "enable", *SERVER, "--disable-password-auth")
    assert again["changed"] is False
    assert writes(fresh_emulator, mark) == []


def test_an_admin_added_through_resource_manager_logs_in_with_the_admins_powers(
    fresh_emulator: Any, emulator_environ: dict[str, str]
) -> None:
    identity = seed.EXISTING_IDENTITY_NAME
    admin_path = f"{SERVER_PATH}/administrators/{EXISTING_PRINCIPAL_ID}"
    mark = fresh_emulator.mark()
    dry = run_json(fresh_emulator, "--dry-run", "server", "admin", "add", *SERVER, "--identity", identity, expect=3)
    assert dry["actions"][0]["request"]["method"] == "PUT"
    assert dry["actions"][0]["request"]["body"]["properties"]["principalName"] == identity
    assert writes(fresh_emulator, mark) == []

    data = run_json(fresh_emulator, "server", "admin", "add", *SERVER, "--identity", identity)
    assert data["changed"] is True
    assert identity in [a["principalName"] for a in data["entraAdmins"]]
    assert writes(fresh_emulator, mark) == [f"PUT {admin_path}"]
    with login(fresh_emulator, identity, EXISTING_CLIENT_ID) as conn:
        assert conn.execute("SELECT pg_has_role('azure_pg_admin', 'MEMBER')").fetchone() == (True,)

    mark = fresh_emulator.mark()
    assert run_json(fresh_emulator, "server", "admin", "add", *SERVER, "--identity", identity)["changed"] is False
    assert writes(fresh_emulator, mark) == []

    listed = run_json(fresh_emulator, "server", "admin", "list", *SERVER)
    assert sorted(a["principalName"] for a in listed["entraAdmins"]) == sorted([seed.DATABASE_ADMIN, identity])

    removed = run_json(fresh_emulator, "server", "admin", "remove", *SERVER, "--identity", identity)
    assert removed["changed"] is True
    assert writes(fresh_emulator, mark) == [f"DELETE {admin_path}"]
    with login(fresh_emulator, identity, EXISTING_CLIENT_ID) as conn:
        assert conn.execute("SELECT pg_has_role('azure_pg_admin', 'MEMBER')").fetchone() == (False,)
    mark = fresh_emulator.mark()
    assert run_json(fresh_emulator, "server", "admin", "remove", *SERVER, "--identity", identity)["changed"] is False
    assert writes(fresh_emulator, mark) == []


def test_me_is_the_signed_in_principal_already_an_admin(fresh_emulator: Any) -> None:
    mark = fresh_emulator.mark()
    data = run_json(fresh_emulator, "server", "admin", "add", *SERVER, "--me")
    assert data["changed"] is False
    assert writes(fresh_emulator, mark) == []


def test_adding_an_admin_without_the_azure_role_is_refused(fresh_emulator: Any) -> None:
    # The operator may read, not write: Resource Manager answers the administrators PUT with a 403.
    subscription = f"/subscriptions/{seed.SUBSCRIPTION_ID}"
    fresh_emulator.grant(seed.OPERATOR_PRINCIPAL_ID, "Reader", subscription)
    fresh_emulator.revoke(seed.OPERATOR_PRINCIPAL_ID, "Owner", subscription)
    result = fresh_emulator.run("server", "admin", "add", *SERVER, "--identity", seed.EXISTING_IDENTITY_NAME)
    fresh_emulator.grant(seed.OPERATOR_PRINCIPAL_ID, "Owner", subscription)
    assert result.returncode == 1, result.stderr
    assert "not allowed to change flexible server myflex in resource group myResourceGroup" in result.stderr
    assert "AuthorizationFailed" in result.stderr
    assert "Microsoft.DBforPostgreSQL/flexibleServers/administrators/write" in result.stderr
    listed = run_json(fresh_emulator, "server", "admin", "list", *SERVER)
    assert [a["principalName"] for a in listed["entraAdmins"]] == [seed.DATABASE_ADMIN]


def test_an_admin_of_a_server_without_entra_is_refused_before_any_write(
    fresh_emulator: Any, emulator_environ: dict[str, str]
) -> None:
    set_auth(fresh_emulator, activeDirectoryAuth="Disabled")
    mark = fresh_emulator.mark()
    result = fresh_emulator.run("server", "admin", "add", *SERVER, "--identity", seed.EXISTING_IDENTITY_NAME)
    assert result.returncode == 1
    assert "Microsoft Entra authentication disabled" in result.stderr
    assert "provision server entra enable" in result.stderr
    assert writes(fresh_emulator, mark) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server", "show", "-g", RG, "-n", "-bad-"], "--name '-bad-': a server name has 3-63"),
        (["server", "show", "-g", "bad/group", "-n", "myflex"], "--resource-group 'bad/group'"),
        (["server", "admin", "add", *SERVER], "give one of --identity NAME, --object-id OID or --me"),
        (["server", "admin", "add", *SERVER, "--me", "--identity", "x12"], "not --identity and --me"),
        (["server", "admin", "add", *SERVER, "--object-id", "nope"], "--object-id 'nope': expected a GUID"),
        (["server", "admin", "add", *SERVER, "--object-id", seed.OPERATOR_PRINCIPAL_ID], "needs --principal-name"),
        (["server", "admin", "add", *SERVER, "--me", "--principal-name", "x"], "go with --object-id"),
        (["server", "admin", "add", *SERVER, "--identity", "x12", "--identity-resource-group", "a/b"], "'a/b'"),
        (["server", "admin", "remove", *SERVER, "--identity-resource-group", RG, "--me"], "needs --identity"),
        (["server", "entra", "enable", "-g", RG, "-n", "ab"], "--name 'ab'"),
    ],
)
def test_bad_input_is_refused_before_any_request(fresh_emulator: Any, args: list[str], message: str) -> None:
    mark = fresh_emulator.mark()
    result = fresh_emulator.run(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert fresh_emulator.requests(since=mark) == []
