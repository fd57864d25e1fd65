"""`provision role` end to end on the local Azure stack's Single and Flexible Server: the real CLI
creates the role as the Entra admin, then the identity logs in with its own token from the emulated
IMDS, through psycopg and through psql."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from helpers import admin_connection, login_user
from helpers import database_token as token

from provision.db.roles.request import OS_ROLES
from provision.emulator import seed

pytestmark = pytest.mark.integration

FLAVORS = ("single", "flexible")
ENV = {"single": "SINGLE", "flexible": "FLEX"}
HOSTILE_NAMES = [
    'x"; DROP ROLE aadadmin; --',
    "Robert'); DROP TABLE students;--",
    "with two  spaces",
    "ünïcødé ✓",
    "$$; SELECT 1; $$",
]


# --- helpers ----------------------------------------------------------------------------------------


def role(
    emulator: Any,
    flavor: str,
    command: str,
    *args: str,
    dry_run: bool = False,
    output_format: str = "json",
    env: dict[str, str | None] | None = None,
    admin_user: str | None = None,
) -> Any:
    """`provision role COMMAND` against one emulated server, as its Entra admin."""
    prefix = ENV[flavor]
    server = ["--host", emulator.env[f"PROVISION_{prefix}_HOST"], "--port", emulator.env[f"PROVISION_{prefix}_PORT"]]
    admin = ["--admin-user", admin_user or emulator.env[f"PROVISION_{prefix}_ADMIN"]]
    global_options = ["-o", output_format] + (["--dry-run"] if dry_run else [])
    return emulator.run(*global_options, "role", command, *server, *admin, *args, env=env)


def error(result: Any) -> str:
    """A failure's message and hint, from the one JSON object `-o json` prints on stdout."""
    failure = json.loads(result.stdout)["error"]
    return f"{failure['message']}\n{failure['hint'] or ''}"


def output(result: Any) -> dict[str, Any]:
    assert result.returncode in (0, 3), result.stderr
    return dict(json.loads(result.stdout))


def make_identity(emulator: Any, name: str) -> dict[str, str]:
    """A user-assigned identity attached to myVM, so the emulated IMDS issues tokens for it."""
    result = emulator.run(
        "-o", "json", "identity", "create", "-g", seed.RESOURCE_GROUP, "-n", name, "--vm", seed.VM_NAME
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return {"clientId": created["clientId"], "objectId": created["principalId"], "id": created["id"]}


def ids(flavor: str, identity: dict[str, str]) -> list[str]:
    """The id each flavor keys on, given directly."""
    return ["--client-id", identity["clientId"]] if flavor == "single" else ["--object-id", identity["objectId"]]


def connect(emulator: Any, flavor: str, user: str, password: str) -> psycopg.Connection:
    prefix = ENV[flavor]
    return psycopg.connect(
        host=emulator.env[f"PROVISION_{prefix}_HOST"],
        port=emulator.env[f"PROVISION_{prefix}_PORT"],
        dbname="postgres",
        user=user,
        password=password,
        sslmode="verify-ca",
        sslrootcert=emulator.env["PGSSLROOTCERT"],
        connect_timeout=10,
    )


def log_in_as(emulator: Any, flavor: str, name: str, client_id: str) -> str:
    """Log in as the role with the identity's own token through psycopg and psql; the role psql saw."""
    password = token(client_id)
    with connect(emulator, flavor, login_user(flavor, name), password) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        assert row is not None and row[0] == name
    prefix = ENV[flavor]
    conninfo = psycopg.conninfo.make_conninfo(
        host=emulator.env[f"PROVISION_{prefix}_HOST"],
        port=emulator.env[f"PROVISION_{prefix}_PORT"],
        dbname="postgres",
        user=login_user(flavor, name),
        sslmode="verify-ca",
        sslrootcert=emulator.env["PGSSLROOTCERT"],
    )
    psql = subprocess.run(
        ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "SELECT current_user", conninfo],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert psql.returncode == 0, psql.stderr
    return psql.stdout.strip()


def login_refused(emulator: Any, flavor: str, name: str, client_id: str) -> bool:
    try:
        connect(emulator, flavor, login_user(flavor, name), token(client_id)).close()
    except psycopg.OperationalError as error:
        return "password authentication failed" in str(error) or "oid mismatch for role" in str(error)
    return False


def catalog(emulator: Any, flavor: str) -> dict[str, Any]:
    """What the admin can see of everything a role command could touch."""
    admin = login_user(flavor, seed.DATABASE_ADMIN)
    with connect(emulator, flavor, admin, token()) as conn:
        snapshot = {
            "roles": conn.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolvaliduntil FROM pg_roles"
                " ORDER BY 1"
            ).fetchall(),
            "members": conn.execute(
                "SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members ORDER BY 1, 2"
            ).fetchall(),
            "databases": conn.execute("SELECT datname, datacl::text FROM pg_database ORDER BY 1").fetchall(),
            "tables": conn.execute(
                "SELECT c.relnamespace::regnamespace::text, c.relname, c.relowner::regrole::text FROM pg_class c"
                " WHERE c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            ).fetchall(),
        }
        if flavor == "flexible":
            snapshot["principals"] = conn.execute("SELECT * FROM pgaadauth_list_principals(false)").fetchall()
        return snapshot


def role_names(snapshot: dict[str, Any]) -> set[str]:
    return {row[0] for row in snapshot["roles"]}


@pytest.fixture
def world(versioned_emulator: Any) -> Any:
    """The seed world on each PostgreSQL version (Flexible Server cases; Single Server's on the oldest),
    with the emulator's variables in this process for tokens and admin reads."""
    return versioned_emulator


# --- create, log in, re-run -------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_identity_logs_in_with_its_own_token_and_a_rerun_changes_nothing(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    with admin_connection(world, flavor, autocommit=True) as conn:  # a group of the admin's own
        conn.execute("CREATE ROLE app_readers NOLOGIN")
    # Single Server: the ARM id path; Flexible Server: the name path. Both read the ids from Resource Manager.
    lookup = ["--identity-id", app["id"]] if flavor == "single" else ["--identity", "idApp", "-g", seed.RESOURCE_GROUP]
    created = output(
        role(
            world,
            flavor,
            "create",
            "--name",
            "myuser",
            *lookup,
            "--member-of",
            "app_readers",
        )
    )

    assert created["changed"] is True and created["flavor"] == flavor and created["role"] == "myuser"
    assert (created["clientId"], created["objectId"]) == (app["clientId"], app["objectId"])
    if flavor == "single":
        assert created["statements"] == [
            "SET aad_validate_oids_in_tenant = off",
            f"CREATE ROLE \"myuser\" WITH LOGIN PASSWORD '{app['clientId']}' IN ROLE azure_ad_user",
            f"COMMENT ON ROLE \"myuser\" IS 'provision: client id {app['clientId']}'",
            'GRANT "app_readers" TO "myuser"',
        ]
    else:
        assert created["statements"] == [
            f"SELECT * FROM pgaadauth_create_principal_with_oid('myuser', '{app['objectId']}', 'service', false,"
            " false)",
            'GRANT "app_readers" TO "myuser"',
        ]
    assert log_in_as(world, flavor, "myuser", app["clientId"]) == "myuser"

    again = role(
        world,
        flavor,
        "create",
        "--name",
        "myuser",
        *ids(flavor, app),
        "--member-of",
        "app_readers",
    )
    assert again.returncode == 0 and output(again)["changed"] is False and output(again)["statements"] == []

    shown = output(role(world, flavor, "show", "--name", "myuser"))
    assert shown["entra"] is True and "app_readers" in shown["memberOf"]
    listed = output(role(world, flavor, "list"))
    assert "myuser" in [principal["role"] for principal in listed["principals"]]
    if flavor == "flexible":
        assert shown["objectId"] == app["objectId"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_predefined_role_takes_admin_option_from_postgresql_16(
    world: Any, flavor: str, postgres_version: int
) -> None:
    """Up to 15 the admin's CREATEROLE grants pg_monitor; from 16 it takes ADMIN OPTION on it, which
    Azure's admin does not hold (Azure/azure-service-operator#4639): refused before any write."""
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    asked = ["--name", "myuser", *ids(flavor, app), "--member-of", "pg_monitor", "--allow-predefined", "pg_monitor"]
    result = role(world, flavor, "create", *asked)
    if postgres_version < 16:
        assert (
            result.returncode == 0
            and "pg_monitor" in output(role(world, flavor, "show", "--name", "myuser"))["memberOf"]
        )
        return
    assert result.returncode == 1, result.stderr
    assert "aadadmin may not grant pg_monitor: from PostgreSQL 16 granting a role takes ADMIN OPTION" in error(result)
    assert "GRANT pg_monitor TO aadadmin WITH ADMIN OPTION" in error(result)
    assert catalog(world, flavor) == before


@pytest.mark.parametrize("flavor", ["flexible"])
@pytest.mark.parametrize("os_role", sorted(OS_ROLES))
def test_the_admin_cannot_grant_the_roles_that_reach_the_operating_system(
    world: Any, flavor: str, os_role: str
) -> None:
    """Azure refuses its admin pg_execute_server_program on 15 too (MicrosoftDocs/azure-docs#87052): from 16
    for want of ADMIN OPTION, on the emulator's 15 because the role is marked superuser. Asked by hand, as a
    user would in psql: the tool refuses these roles before it connects."""
    with admin_connection(world, flavor, autocommit=True) as conn:
        conn.execute("CREATE ROLE some_role NOLOGIN")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(psycopg.sql.SQL("GRANT {} TO some_role").format(psycopg.sql.Identifier(os_role)))
        granted = conn.execute(
            "SELECT pg_catalog.pg_has_role('some_role', %s, 'MEMBER'), r.rolsuper FROM pg_catalog.pg_roles r"
            " WHERE r.rolname = 'some_role'",
            [os_role],
        ).fetchone()
    assert granted == (False, False)


def test_single_server_compares_the_client_id_it_recorded(world: Any) -> None:
    app = make_identity(world, "idApp")
    role(world, "single", "create", "--name", "myuser", *ids("single", app))
    again = role(world, "single", "create", "--name", "myuser", *ids("single", app))
    assert again.returncode == 0 and again.stderr == ""
    assert output(again)["changed"] is False and output(again)["recordedClientId"] == app["clientId"]


def test_single_server_says_it_cannot_verify_a_role_made_by_hand(world: Any) -> None:
    app = make_identity(world, "idApp")
    with admin_connection(world, "single", autocommit=True) as conn:  # the walkthrough's SQL, no record
        conn.execute("SET aad_validate_oids_in_tenant = off")
        conn.execute(f"CREATE ROLE byhand WITH LOGIN PASSWORD '{app['clientId']}' IN ROLE azure_ad_user")
    again = role(world, "single", "create", "--name", "byhand", *ids("single", app))
    assert again.returncode == 0
    assert output(again)["clientIdVerified"] is False and output(again)["changed"] is False
    assert "cannot be checked: PostgreSQL shows password verifiers only to superusers" in again.stderr


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_flavor_asks_for_the_id_it_needs_and_changes_nothing(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    wrong = ["--object-id", app["objectId"]] if flavor == "single" else ["--client-id", app["clientId"]]
    before = catalog(world, flavor)
    result = role(world, flavor, "create", "--name", "myuser", *wrong)
    needed = "--client-id" if flavor == "single" else "--object-id"
    assert result.returncode == 2 and f"give {needed}" in error(result)
    assert catalog(world, flavor) == before


# --- another identity, --replace, drop --------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_another_identity_is_not_mapped_silently_and_replace_remaps(world: Any, flavor: str) -> None:
    app, other = make_identity(world, "idApp"), make_identity(world, "idOther")
    output(role(world, flavor, "create", "--name", "myuser", *ids(flavor, app)))
    before = catalog(world, flavor)

    refused = role(world, flavor, "create", "--name", "myuser", *ids(flavor, other))
    assert refused.returncode == 1
    if flavor == "flexible":
        assert f"mapped to object id {app['objectId']}, not object id {other['objectId']}" in error(refused)
    else:
        assert f"mapped to client id {app['clientId']} (as recorded" in error(refused)
        assert f"not client id {other['clientId']}" in error(refused)
    assert "--replace" in error(refused)
    assert catalog(world, flavor) == before
    assert login_refused(world, flavor, "myuser", other["clientId"])

    replaced = output(role(world, flavor, "create", "--name", "myuser", *ids(flavor, other), "--replace"))
    assert replaced["changed"] is True and replaced["actions"][0]["action"] == "replace"
    assert replaced["statements"][0] == 'DROP ROLE "myuser"'
    assert log_in_as(world, flavor, "myuser", other["clientId"]) == "myuser"
    assert login_refused(world, flavor, "myuser", app["clientId"])


@pytest.mark.parametrize("flavor", FLAVORS)
def test_drop_removes_the_role_and_its_login(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    output(role(world, flavor, "create", "--name", "myuser", *ids(flavor, app)))

    dropped = output(role(world, flavor, "drop", "--name", "myuser"))
    assert dropped["changed"] is True and dropped["statements"] == ['DROP ROLE "myuser"']
    assert catalog(world, flavor) == before
    assert login_refused(world, flavor, "myuser", app["clientId"])
    assert output(role(world, flavor, "drop", "--name", "myuser"))["changed"] is False
    assert role(world, flavor, "show", "--name", "myuser").returncode == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_drop_force_gives_the_roles_objects_to_the_admin(world: Any, flavor: str) -> None:
    """The role owns a large object, which any role may create in the postgres database (its public
    schema is closed to PUBLIC since PostgreSQL 15); on 16+ the admin needs ADMIN OPTION on the role
    to take it over (GRANT ... TO CURRENT_USER, REASSIGN OWNED) and drop it."""
    app = make_identity(world, "idApp")
    output(role(world, flavor, "create", "--name", "myuser", *ids(flavor, app)))
    with connect(world, flavor, login_user(flavor, "myuser"), token(app["clientId"])) as conn:
        row = conn.execute("SELECT pg_catalog.lo_create(0)").fetchone()
        assert row is not None
        large_object = row[0]
    before = catalog(world, flavor)

    refused = role(world, flavor, "drop", "--name", "myuser")
    assert refused.returncode == 1 and f"owns 1 object: large object {large_object}" in error(refused)
    assert catalog(world, flavor) == before

    dropped = output(role(world, flavor, "drop", "--name", "myuser", "--force"))
    assert dropped["changed"] is True and dropped["reassignedTo"] == seed.DATABASE_ADMIN
    assert "myuser" not in role_names(catalog(world, flavor))
    with admin_connection(world, flavor) as conn:
        owner = conn.execute(
            "SELECT lomowner::regrole::text FROM pg_largeobject_metadata WHERE oid = %s", [large_object]
        ).fetchone()
    assert owner == (seed.DATABASE_ADMIN,)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_roles_that_are_not_entra_roles_are_refused(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    for args in (["create", "--name", "postgres", *ids(flavor, app), "--replace"], ["drop", "--name", "postgres"]):
        result = role(world, flavor, *args)
        assert result.returncode == 1 and "not a Microsoft Entra role" in error(result)
    assert catalog(world, flavor) == before


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_entra_administrator_is_never_dropped_or_replaced(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    dropped = role(world, flavor, "drop", "--name", "aadadmin", "--force")
    assert dropped.returncode == 1 and "is a Microsoft Entra administrator" in error(dropped), dropped.stderr
    # Creating the admin's own name is refused before any write: from the input where --admin-user tells
    # (exit 2), from the server's current_user where only the server does (Single Server, --flavor auto).
    names = ["aadadmin", f"aadadmin@{seed.SINGLE_SERVER}"] if flavor == "single" else ["aadadmin"]
    for name in names:
        for flavor_option in ("auto", flavor):
            created = role(
                world, flavor, "create", "--name", name, *ids(flavor, app), "--replace", "--flavor", flavor_option
            )
            told_by_input = not (flavor == "single" and flavor_option == "auto" and name == "aadadmin")
            assert created.returncode == (2 if told_by_input else 1), created.stderr
            assert "is the administrator" in error(created), created.stderr
    assert catalog(world, flavor) == before


# --- dry run ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_dry_run_prints_the_exact_sql_and_leaves_the_catalog_untouched(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    planned = role(world, flavor, "create", "--name", "myuser", *ids(flavor, app), dry_run=True)
    assert planned.returncode == 3
    plan = output(planned)
    assert plan["dryRun"] is True and plan["changed"] is True
    assert plan["actions"][0]["request"]["sql"] == plan["statements"][: len(plan["actions"][0]["request"]["sql"])]
    assert catalog(world, flavor) == before

    text = role(world, flavor, "create", "--name", "myuser", *ids(flavor, app), dry_run=True, output_format="text")
    assert text.returncode == 3
    for statement in plan["statements"]:
        assert f"  {statement}" in text.stdout
    assert catalog(world, flavor) == before


# --- concurrency ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flavor", FLAVORS)
def test_ten_concurrent_creates_make_exactly_one_role_and_all_succeed(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    with ThreadPoolExecutor(max_workers=10) as pool:
        runs = list(pool.map(lambda _: role(world, flavor, "create", "--name", "myuser", *ids(flavor, app)), range(10)))
    assert [run.returncode for run in runs] == [0] * 10, [run.stderr for run in runs if run.returncode]
    assert sorted(output(run)["changed"] for run in runs) == [False] * 9 + [True]
    assert sum(row[0] == "myuser" for row in catalog(world, flavor)["roles"]) == 1
    assert log_in_as(world, flavor, "myuser", app["clientId"]) == "myuser"


# --- hostile names ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flavor", FLAVORS)
def test_names_with_quotes_semicolons_spaces_and_non_ascii_are_harmless(world: Any, flavor: str) -> None:
    app = make_identity(world, "idApp")
    before = catalog(world, flavor)
    for name in HOSTILE_NAMES:
        created = role(world, flavor, "create", "--name", name, *ids(flavor, app))
        assert created.returncode == 0, created.stderr
        after = catalog(world, flavor)
        assert role_names(after) - role_names(before) == {name}
        assert [row for row in after["roles"] if row[0] != name] == before["roles"]
        assert after["tables"] == before["tables"] and after["databases"] == before["databases"]
        assert log_in_as(world, flavor, name, app["clientId"]) == name
        assert role(world, flavor, "drop", "--name", name).returncode == 0
        assert catalog(world, flavor) == before


# --- the admin's login ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_refused_admin_login_says_so_without_the_password(world: Any, flavor: str) -> None:
    secret = "not-the-admin-token-5f1e"
    result = role(world, flavor, "list", env={"PGPASSWORD": secret})
    assert result.returncode == 1
    assert "refused the administrator login" in error(result) and "The password was PGPASSWORD" in error(result)
    assert secret not in result.stderr + result.stdout


def test_single_server_admin_without_the_server_name_is_told_the_form(world: Any) -> None:
    result = role(world, "single", "list", admin_user=seed.DATABASE_ADMIN)
    assert result.returncode == 1
    assert "refused the administrator login 'aadadmin'" in error(result) and "name@servername" in error(result)
    assert "eyJ" not in result.stderr + result.stdout
