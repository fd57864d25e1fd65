"""The emulated tenant's Microsoft Entra ID: its objects (/_emulator/directory) follow Resource Manager's
identities; Flexible Server's pgaadauth functions check object ids and names against it as Azure does; and
`provision role create` says in plain words when the server's tenant does not know the object id it was given,
leaving everything as it was."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from helpers import admin_connection, admin_options, roles

from provision.emulator import seed

pytestmark = pytest.mark.integration

UNKNOWN_OBJECT = "Could not validate AAD user {} because its name is not found in the tenant."
WRONG_TYPE = "incorrect object type provided for principal, given object type: '{}', actual object type: '{}'"


@pytest.fixture
def world(versioned_emulator: Any) -> Any:
    return versioned_emulator


def objects(emulator: Any) -> dict[str, dict[str, Any]]:
    return {o["objectId"]: o for o in emulator.admin("GET", "directory")["objects"]}


def create_identity(emulator: Any, name: str) -> dict[str, Any]:
    result = emulator.run("-o", "json", "identity", "create", "-g", seed.RESOURCE_GROUP, "-n", name)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def create_role(emulator: Any, *args: str) -> Any:
    return emulator.run("-o", "json", "role", "create", *admin_options(emulator, "flexible"), *args)


def failure(result: Any) -> tuple[str, str]:
    found = json.loads(result.stdout)["error"]
    return found["message"], found["hint"] or ""


# -- the directory ------------------------------------------------------------------------------


def test_the_directory_follows_resource_managers_identities(fresh_emulator: Any) -> None:
    seeded = objects(fresh_emulator)
    assert seeded[seed.OPERATOR_PRINCIPAL_ID] == {
        "objectId": seed.OPERATOR_PRINCIPAL_ID,
        "displayName": seed.VM_NAME,
        "type": "ServicePrincipal",
        "appId": seed.OPERATOR_CLIENT_ID,
    }
    assert seeded[seed.USER_PRINCIPAL_ID]["type"] == "User"
    assert seeded[seed.GROUP_PRINCIPAL_ID]["type"] == "Group"

    created = create_identity(fresh_emulator, "idDirectory")
    principal = objects(fresh_emulator)[created["principalId"]]
    assert (principal["displayName"], principal["type"], principal["appId"]) == (
        "idDirectory",
        "ServicePrincipal",
        created["clientId"],
    )
    deleted = fresh_emulator.run("identity", "delete", "-g", seed.RESOURCE_GROUP, "-n", "idDirectory")
    assert deleted.returncode == 0, deleted.stderr
    assert created["principalId"] not in objects(fresh_emulator)


def test_users_and_groups_added_for_a_test_hold_roles_until_the_reset(fresh_emulator: Any) -> None:
    user = fresh_emulator.admin("POST", "directory", {"type": "User", "displayName": "bob@contoso.com"})
    assert objects(fresh_emulator)[user["objectId"]] == user
    scope = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{seed.RESOURCE_GROUP}"
    assignment = {"principal": user["objectId"], "role": "Reader", "scope": scope}
    assert fresh_emulator.admin("POST", "role-assignments", assignment) == assignment
    fresh_emulator.reset()
    assert user["objectId"] not in objects(fresh_emulator)
    with pytest.raises(AssertionError, match="PrincipalNotFound"):
        fresh_emulator.admin("POST", "role-assignments", assignment)


def test_a_bad_directory_object_is_refused_and_nothing_added(fresh_emulator: Any) -> None:
    before = objects(fresh_emulator)
    with pytest.raises(AssertionError, match="400 .*User or Group"):
        fresh_emulator.admin("POST", "directory", {"type": "ServicePrincipal", "displayName": "x"})
    assert objects(fresh_emulator) == before


# -- Flexible Server's pgaadauth functions --------------------------------------------------------


@pytest.mark.parametrize("flavor", ["flexible"])
def test_create_principal_with_oid_answers_as_azure_for_unknown_objects_and_wrong_types(
    world: Any, flavor: str
) -> None:
    unknown = str(uuid.uuid4())
    sql = "SELECT * FROM pgaadauth_create_principal_with_oid(%s, %s, %s, false, false)"
    with admin_connection(world, flavor, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InternalError_) as raised:
            conn.execute(sql, ["app_unknown", unknown, "service"])
        assert raised.value.diag.message_primary == UNKNOWN_OBJECT.format(unknown)
        with pytest.raises(psycopg.errors.InternalError_) as raised:
            conn.execute(sql, ["mary", seed.USER_PRINCIPAL_ID, "service"])
        assert raised.value.diag.message_primary == WRONG_TYPE.format("service", "user")
        with pytest.raises(psycopg.errors.InternalError_) as raised:
            conn.execute(sql, ["pipeline", seed.CI_PRINCIPAL_ID, "user"])
        assert raised.value.diag.message_primary == WRONG_TYPE.format("user", "service")
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('app_unknown', 'mary', 'pipeline')"
        ).fetchone() == (0,)
        # The right type for each kind of object is accepted.
        conn.execute(sql, ["mary", seed.USER_PRINCIPAL_ID, "user"])
        conn.execute(sql, ["admins_group", seed.GROUP_PRINCIPAL_ID, "group"])


@pytest.mark.parametrize("flavor", ["flexible"])
def test_create_principal_by_name_takes_the_objects_id_and_type(world: Any, flavor: str) -> None:
    with admin_connection(world, flavor, autocommit=True) as conn:
        for name in (seed.USER_NAME, seed.GROUP_NAME, seed.CI_NAME):
            assert conn.execute("SELECT pgaadauth_create_principal(%s, false, false)", [name]).fetchone() == (
                f'Created role for "{name}"',
            )
        listed = conn.execute("SELECT rolname, principaltype, objectid FROM pgaadauth_list_principals(false)")
        assert set(listed.fetchall()) >= {
            (seed.USER_NAME, "user", seed.USER_PRINCIPAL_ID),
            (seed.GROUP_NAME, "group", seed.GROUP_PRINCIPAL_ID),
            (seed.CI_NAME, "service", seed.CI_PRINCIPAL_ID),
        }
        with pytest.raises(psycopg.errors.InternalError_) as raised:
            conn.execute("SELECT pgaadauth_create_principal('nobody@contoso.com', false, false)")
        assert raised.value.diag.message_primary == UNKNOWN_OBJECT.format("nobody@contoso.com")


# -- provision role create ----------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["flexible"])
def test_role_create_with_an_object_id_the_tenant_does_not_know_changes_nothing(world: Any, flavor: str) -> None:
    unknown = str(uuid.uuid4())
    before = roles(world)
    result = create_role(world, "--name", "myuser", "--object-id", unknown)
    message, hint = failure(result)
    assert result.returncode == 1, result.stderr
    assert f"the server's Microsoft Entra tenant has no object with id {unknown}" in message
    assert UNKNOWN_OBJECT.format(unknown) in message
    assert "provision identity show" in hint and "principalId" in hint
    assert roles(world) == before


@pytest.mark.parametrize("flavor", ["flexible"])
def test_role_create_with_a_client_id_as_the_object_id_says_it_is_not_one(world: Any, flavor: str) -> None:
    created = create_identity(world, "idClient")
    before = roles(world)
    result = create_role(world, "--name", "myuser", "--object-id", created["clientId"])
    message, _ = failure(result)
    assert result.returncode == 1, result.stderr
    assert f"no object with id {created['clientId']} (a client id is not an object id)" in message
    assert roles(world) == before


@pytest.mark.parametrize("flavor", ["flexible"])
def test_role_create_with_a_users_object_id_says_it_is_not_a_service_principal(world: Any, flavor: str) -> None:
    before = roles(world)
    result = create_role(world, "--name", "myuser", "--object-id", seed.USER_PRINCIPAL_ID)
    message, hint = failure(result)
    assert result.returncode == 1, result.stderr
    assert f"object id {seed.USER_PRINCIPAL_ID} is not a service principal (a managed identity)" in message
    assert WRONG_TYPE.format("service", "user") in message
    assert "principalId" in hint
    assert roles(world) == before


@pytest.mark.parametrize("flavor", ["flexible"])
def test_replace_with_an_unknown_object_id_keeps_the_old_mapping(world: Any, flavor: str) -> None:
    created = create_identity(world, "idKept")
    made = create_role(world, "--name", "myuser", "--object-id", created["principalId"])
    assert made.returncode == 0, made.stderr
    before = roles(world)
    result = create_role(world, "--name", "myuser", "--object-id", str(uuid.uuid4()), "--replace")
    assert result.returncode == 1 and "has no object with id" in failure(result)[0]
    assert roles(world) == before
