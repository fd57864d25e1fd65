"""`provision bind` / `unbind` end to end on the local Azure stack: identity, attach, role and grants
as one idempotent step, and its undoing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from helpers import admin_connection, admin_options, database_token, machine_identities, writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
SCHEMA = "bindapp"
DATABASE = "bindapp"
GRANTS = [
    f"USAGE ON SCHEMA {SCHEMA}",
    f"SELECT, INSERT ON ALL TABLES IN SCHEMA {SCHEMA}",
    f"SELECT ON FUTURE TABLES IN SCHEMA {SCHEMA} FOR ROLE {seed.DATABASE_ADMIN}",
]


def app_database(emulator: Any) -> psycopg.Connection:
    """The admin's connection to the test's own database (a reset drops it)."""
    return psycopg.connect(
        host=emulator.env["PROVISION_FLEX_HOST"],
        port=emulator.env["PROVISION_FLEX_PORT"],
        dbname=DATABASE,
        user=seed.DATABASE_ADMIN,
        password=database_token(),
        sslmode="verify-ca",
        sslrootcert=emulator.env["PGSSLROOTCERT"],
        autocommit=True,
    )


@pytest.fixture
def world(fresh_emulator: Any, emulator_environ: Any) -> Any:
    """The seed world, with a database of two tables on Flexible Server for the grants."""
    with admin_connection(fresh_emulator, "flexible", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with app_database(fresh_emulator) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"CREATE TABLE {SCHEMA}.orders (id int)")
        conn.execute(f"CREATE TABLE {SCHEMA}.items (id int)")
    return fresh_emulator


def run(emulator: Any, command: str, *args: str, identity: str = "app1-id", role: str = "app1", **kw: Any) -> Any:
    options = ["-g", RG, "--identity", identity, "--vm", seed.VM_NAME, "--role", role]
    options += [item for grant in kw.pop("grants", GRANTS) for item in ("--grant", grant)]
    global_options = ["-o", "json"] + (["--dry-run"] if kw.pop("dry_run", False) else [])
    server = [*admin_options(emulator, "flexible"), "--database", DATABASE]
    return emulator.run(*global_options, command, *server, *options, *args)


def privileges(emulator: Any, role: str) -> dict[str, Any]:
    """What the role may do, as PostgreSQL says (None: no such role)."""
    with app_database(emulator) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None:
            return {}
        (row,) = conn.execute(
            f"SELECT has_schema_privilege(%(r)s, '{SCHEMA}', 'USAGE'),"
            f" has_table_privilege(%(r)s, '{SCHEMA}.orders', 'SELECT'),"
            f" has_table_privilege(%(r)s, '{SCHEMA}.items', 'INSERT'),"
            f" has_table_privilege(%(r)s, '{SCHEMA}.items', 'DELETE')",
            {"r": role},
        ).fetchall()
        return dict(zip(("usage", "select", "insert", "delete"), row, strict=True))


def identity_tags(emulator: Any, name: str) -> dict[str, str] | None:
    result = emulator.run("-o", "json", "identity", "show", "-g", RG, "-n", name)
    return json.loads(result.stdout)["tags"] if result.returncode == 0 else None


def vm_identities(emulator: Any) -> list[str]:
    return machine_identities(emulator)[1]


def test_bind_dry_run_shows_every_write_and_makes_none(world: Any) -> None:
    mark = world.mark()
    result = run(world, "bind", dry_run=True)
    assert result.returncode == 3, result.stderr
    data = json.loads(result.stdout)
    verbs = [(a["action"], a["target"].split()[0]) for a in data["actions"]]
    assert verbs[:3] == [("create", "identity"), ("attach", "VM"), ("create", "role")]
    assert [a["action"] for a in data["actions"][3:]] == ["grant", "grant", "grant"]
    assert data["actions"][0]["request"]["body"]["tags"] == {"provision:created-by": "provision"}
    assert 'GRANT USAGE ON SCHEMA "bindapp" TO "app1"' in data["actions"][3]["request"]["sql"]
    assert writes(world, mark) == []
    assert privileges(world, "app1") == {}


@pytest.mark.slow
def test_bind_is_idempotent_and_unbind_undoes_it(world: Any) -> None:
    first = run(world, "bind")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] is True
    assert privileges(world, "app1") == {"usage": True, "select": True, "insert": True, "delete": False}
    assert identity_tags(world, "app1-id") == {"provision:created-by": "provision"}
    assert "app1-id" in vm_identities(world)
    mark = world.mark()
    again = run(world, "bind")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["changed"] is False, [a for a in data["actions"] if a["action"] != "noop"]
    assert writes(world, mark) == []

    # The future tables' default privilege reaches a table made after the bind.
    with app_database(world) as conn:
        conn.execute(f"CREATE TABLE {SCHEMA}.later (id int)")
        assert conn.execute(f"SELECT has_table_privilege('app1', '{SCHEMA}.later', 'SELECT')").fetchone() == (True,)

    # A grant taken away by hand is detected and given back, alone.
    with app_database(world) as conn:
        conn.execute(f"REVOKE INSERT ON {SCHEMA}.items FROM app1")
    healed = json.loads(run(world, "bind", dry_run=True).stdout)
    changed = [a for a in healed["actions"] if a["action"] != "noop"]
    assert [a["request"]["sql"] for a in changed] == [['GRANT INSERT ON ALL TABLES IN SCHEMA "bindapp" TO "app1"']]

    gone = run(world, "unbind", "--delete-identity")
    assert gone.returncode == 0, gone.stderr
    verbs = [a["action"] for a in json.loads(gone.stdout)["actions"]]
    assert verbs == ["revoke", "revoke", "revoke", "delete", "detach", "delete"]
    assert privileges(world, "app1") == {}
    assert identity_tags(world, "app1-id") is None
    assert "app1-id" not in vm_identities(world)

    mark = world.mark()
    twice = run(world, "unbind", "--delete-identity")
    assert twice.returncode == 0, twice.stderr
    assert json.loads(twice.stdout)["changed"] is False
    assert writes(world, mark) == []


def test_unbind_keeps_an_identity_provision_did_not_create(world: Any) -> None:
    bound = run(world, "bind", identity="existingIdentity", role="existing_app", grants=[])
    assert bound.returncode == 0, bound.stderr
    gone = run(world, "unbind", "--delete-identity", identity="existingIdentity", role="existing_app", grants=[])
    assert gone.returncode == 0, gone.stderr
    last = json.loads(gone.stdout)["actions"][-1]
    assert (last["action"], last["reason"].split(":")[0]) == ("noop", "kept")
    assert identity_tags(world, "existingIdentity") == {}


def test_unbind_leaves_a_role_mapped_to_another_identity(world: Any) -> None:
    assert run(world, "bind", grants=[]).returncode == 0
    refused = run(world, "unbind", identity="existingIdentity", grants=[])
    assert refused.returncode == 1
    assert "mapped to another identity" in json.loads(refused.stdout)["error"]["message"]
    assert privileges(world, "app1") != {}


def test_a_refusal_on_the_database_side_creates_nothing_in_azure(world: Any) -> None:
    mark = world.mark()
    result = run(world, "bind", grants=["USAGE ON SCHEMA nosuchschema"])
    assert result.returncode == 1, result.stdout
    assert "schema nosuchschema does not exist" in json.loads(result.stdout)["error"]["message"]
    assert writes(world, mark) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grant", "ALL ON SCHEMA app"], "ALL is not a privilege on schema"),
        (["--grant", "SELECT ON SCHEMA app; DROP ROLE aadadmin"], "unexpected ';"),
        (["--role", "pg_monitor"], "reserved"),
        (["--identity", "bad name!"], "--identity"),
        (["--vmss", "x"], "--vm and --vmss"),
    ],
)
def test_bad_input_exits_2_in_one_line_and_sends_nothing(fresh_emulator: Any, args: list[str], message: str) -> None:
    mark = fresh_emulator.mark()
    base = {"--identity": "app1-id", "--role": "app1"}
    for name, value in zip(args[::2], args[1::2], strict=True):
        base[name] = value
    options = [item for pair in base.items() for item in pair if pair[0] != "--grant"] + (
        ["--grant", base["--grant"]] if "--grant" in base else []
    )
    options = ["-g", RG, "--vm", seed.VM_NAME, *[o for o in options if o]]
    if "--vmss" in base:
        options = [o for o in options if o not in ("--vmss", "x")] + ["--vmss", "x"]
    result = fresh_emulator.run("bind", *admin_options(fresh_emulator, "flexible"), *options)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fresh_emulator.requests(since=mark) == []
