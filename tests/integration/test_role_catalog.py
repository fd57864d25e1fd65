"""The role library against a real PostgreSQL catalog: a throwaway cluster where the Entra administrator
is, as on Azure, a CREATEROLE role that is not a superuser.

The database `postgres` looks like a Single Server (the role azure_ad_user; the admin does not own
the database). The database `flex` also has stand-ins for Flexible Server's pgaadauth functions, and
the admin owns it. Single Server's `SET aad_validate_oids_in_tenant` exists only behind the emulator's
gateway, so creating Single Server roles is tested in test_role_cli.py."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from emulator_fixtures import selected_versions

from provision import deadline
from provision.cloud import get_cloud
from provision.db import admin, roles
from provision.db.roles import IdentityIds, RoleRequest, commands
from provision.db.roles.sql_text import statement
from provision.db.roles.state import RoleState
from provision.db.target import Target
from provision.emulator.postgres.cluster import SUPERUSER, Clusters, Installation, installations
from provision.errors import Conflict, Forbidden, NotFound, OutcomeUnknown, ProvisionError, TimedOut

CLIENT_ID = "0b5e8f3a-1c2d-4e6f-8a9b-c0d1e2f3a4b5"
OBJECT_ID = "6d1f0c2e-3b4a-4c5d-9e8f-7a6b5c4d3e2f"
OTHER_ID = "11111111-2222-4333-8444-555555555555"

# "LOG:  statement: ..." (simple protocol) and "LOG:  execute <unnamed>: ..." (extended protocol).
LOGGED = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)")
WRITES = re.compile(r"^\s*(CREATE|ALTER|DROP|GRANT|REVOKE|REASSIGN|COMMENT|SET aad)|pgaadauth_create_principal", re.I)

# Stand-ins with Flexible Server's signatures; the registration lives in the role's shared comment,
# so it goes away with the role like Azure's security label does.
PGAADAUTH = """
CREATE FUNCTION pgaadauth_create_principal_with_oid(rolename text, objectid text, objecttype text,
    isadmin boolean, ismfa boolean) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN', rolename);
    EXECUTE format('COMMENT ON ROLE %I IS %L', rolename, 'aad:' || objecttype || ':' || objectid);
    RETURN 'Created role for ' || rolename;
END $$;
CREATE FUNCTION pgaadauth_list_principals(isadminvalue boolean)
RETURNS TABLE(rolname name, principaltype text, objectid text, tenantid text, ismfa integer, isadmin integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT r.rolname, split_part(d.description, ':', 2), split_part(d.description, ':', 3), NULL, 0, 0
    FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
    WHERE d.description LIKE 'aad:%'
$$;
"""


class Cluster:
    """One throwaway cluster from the emulator's cluster helper, reached over its Unix socket."""

    def __init__(self, installation: Installation) -> None:
        self._base = Path(tempfile.mkdtemp(prefix="provision-role-"))
        self._base.chmod(0o755)  # the server user must be able to enter it
        self._clusters = Clusters(["catalog"], self._base, installation)
        self._clusters.start()
        self.socket_dir = str(self._clusters.socket_dir("catalog"))

    def superuser(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.socket_dir, user=SUPERUSER, dbname=database, autocommit=True)

    def target(self, database: str, user: str = "aadadmin") -> Target:
        # Over a Unix socket libpq uses no TLS, whatever the sslmode.
        return Target(self.socket_dir, user, database=database)

    def log_size(self) -> int:
        return self._clusters.log("catalog").stat().st_size

    def statements_since(self, position: int) -> list[str]:
        """The statements the server logged since `position` (aadadmin's sessions log every statement)."""
        with self._clusters.log("catalog").open(errors="replace") as log:
            log.seek(position)
            return [match.group(1) for match in LOGGED.finditer(log.read())]

    def close(self) -> None:
        self._clusters.close()
        shutil.rmtree(self._base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    # The suite's base version, as the session emulator runs (the per-version runs are test_role_cli's).
    cluster = Cluster(installations()[selected_versions(pytestconfig)[0]])
    try:
        with cluster.superuser() as conn:
            conn.execute("CREATE ROLE aadadmin LOGIN CREATEROLE")
            # The server's own record of what reached it: a dry run must leave no write in it.
            conn.execute("ALTER ROLE aadadmin SET log_statement = 'all'")
            conn.execute("CREATE ROLE azure_ad_user NOLOGIN")
            conn.execute("GRANT azure_ad_user TO aadadmin WITH ADMIN OPTION")
            conn.execute("CREATE ROLE app_readers NOLOGIN")
            conn.execute("CREATE DATABASE flex OWNER aadadmin")
            # An explicit ACL, so that granting and revoking CONNECT leaves it as it was.
            conn.execute("GRANT CONNECT ON DATABASE flex TO app_readers")
        with cluster.superuser("flex") as conn:
            conn.execute(PGAADAUTH)
            conn.execute("CREATE TABLE bystander (id int)")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(autouse=True)
def admin_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # Local connections are trusted; PGPASSWORD keeps the credential chain out of it.
    monkeypatch.setenv("PGPASSWORD", "unused")


@pytest.fixture
def clean(cluster: Cluster) -> Iterator[None]:
    yield
    with cluster.superuser() as conn:
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'"
            " AND rolname NOT IN ('postgres', 'aadadmin', 'azure_ad_user', 'app_readers')"
        ).fetchall():
            for database in ("postgres", "flex"):
                with cluster.superuser(database) as there:
                    there.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(name)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))


def run(cluster: Cluster, database: str, command: Any, *args: Any, user: str = "aadadmin") -> Any:
    with admin.connect(cluster.target(database, user), get_cloud("AzureCloud")) as conn:
        return command(conn, *args)


def flex_request(name: str = "myuser", object_id: str = OBJECT_ID, **kwargs: Any) -> RoleRequest:
    return RoleRequest(name, IdentityIds(object_id=object_id), **kwargs)


def catalog(cluster: Cluster) -> dict[str, Any]:
    """Everything a role command could touch, in both databases."""
    snapshot: dict[str, Any] = {}
    with cluster.superuser() as conn:
        snapshot["roles"] = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcanlogin, rolpassword FROM pg_authid ORDER BY 1"
        ).fetchall()
        snapshot["members"] = conn.execute(
            "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members ORDER BY 1, 2"
        ).fetchall()
        snapshot["databases"] = conn.execute("SELECT datname, datacl::text FROM pg_database ORDER BY 1").fetchall()
        snapshot["comments"] = conn.execute("SELECT objoid, description FROM pg_shdescription ORDER BY 1").fetchall()
    with cluster.superuser("flex") as conn:
        snapshot["tables"] = conn.execute(
            "SELECT relname, relowner::regrole::text FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchall()
    return snapshot


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean")]


def test_flexible_create_registers_the_object_id_and_grants_connect(cluster: Cluster) -> None:
    result = run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_readers",)), False)
    assert result.changed and [a.verb for a in result.actions] == ["create", "grant", "grant"]
    assert result.fields["flavor"] == "flexible" and result.fields["objectId"] == OBJECT_ID
    assert result.fields["statements"] == [
        f"SELECT * FROM pgaadauth_create_principal_with_oid('myuser', '{OBJECT_ID}', 'service', false, false)",
        'GRANT CONNECT ON DATABASE "flex" TO "myuser"',
        'GRANT "app_readers" TO "myuser"',
    ]
    shown = run(cluster, "flex", roles.show_role, "flexible", "myuser")
    assert shown.fields["objectId"] == OBJECT_ID and shown.fields["memberOf"] == ["app_readers"]
    assert shown.fields["connect"] == "granted" and shown.fields["entra"] is True

    again = run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_readers",)), False)
    assert not again.changed and again.fields["statements"] == []


def test_another_object_id_is_refused_then_replaced(cluster: Cluster) -> None:
    run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_readers",)), False)
    with pytest.raises(Conflict, match=f"mapped to object id {OBJECT_ID}, not object id {OTHER_ID}"):
        run(cluster, "flex", roles.create_role, "flexible", flex_request(object_id=OTHER_ID), False)

    replaced = run(
        cluster, "flex", roles.create_role, "flexible", flex_request(object_id=OTHER_ID, replace=True), False
    )
    assert [a.verb for a in replaced.actions] == ["replace", "grant"]
    assert "no longer a member of app_readers" in replaced.warnings[0]
    listed = run(cluster, "flex", roles.list_roles, "flexible")
    assert listed.fields["principals"] == [{"role": "myuser", "type": "service", "objectId": OTHER_ID, "admin": False}]


def test_dry_run_prints_the_sql_and_leaves_the_catalog_untouched(cluster: Cluster) -> None:
    before = catalog(cluster)
    logged_from = cluster.log_size()
    result = run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_readers",)), True)
    assert result.dry_run and result.changed and len(result.fields["statements"]) == 3
    assert result.actions[0].request == {"sql": [result.fields["statements"][0]]}
    assert catalog(cluster) == before
    # Not sent and rolled back, but never sent: the server's statement log holds the reads and no write.
    logged = cluster.statements_since(logged_from)
    assert any("pgaadauth_list_principals" in text for text in logged), logged  # the log does record this run
    assert [text for text in logged if WRITES.search(text)] == []
    assert not set(result.fields["statements"]) & set(logged)


def test_auto_detection_refuses_a_server_with_both_flavors(cluster: Cluster) -> None:
    with pytest.raises(ProvisionError, match="choose one with --flavor") as refused:
        run(cluster, "flex", roles.create_role, "auto", flex_request(), False)
    assert refused.value.exit_status == 2
    assert run(cluster, "postgres", roles.list_roles, "auto").fields["flavor"] == "single"


@pytest.mark.parametrize(
    "name",
    ['x"; DROP ROLE aadadmin; --', "Robert'); DROP TABLE bystander;--", "with  spaces", "ünïcødé ✓", "a$$b$$"],
)
def test_hostile_names_create_exactly_one_role_and_change_nothing_else(cluster: Cluster, name: str) -> None:
    before = catalog(cluster)
    run(cluster, "flex", roles.create_role, "flexible", flex_request(name), False)
    after = catalog(cluster)
    assert {row[0] for row in after["roles"]} - {row[0] for row in before["roles"]} == {name}
    assert [row for row in before["roles"] if row in after["roles"]] == before["roles"]
    assert after["tables"] == before["tables"]
    run(cluster, "flex", roles.drop_role, "flexible", name, False, False)
    assert catalog(cluster) == before


def test_ten_concurrent_creates_make_one_role_and_all_succeed(cluster: Cluster) -> None:
    results: list[Any] = []
    failures: list[BaseException] = []

    def create() -> None:
        try:
            results.append(run(cluster, "flex", roles.create_role, "flexible", flex_request(), False))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(result.changed for result in results) == [False] * 9 + [True]
    with cluster.superuser() as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'myuser'").fetchone() == (1,)


def test_a_role_created_behind_the_lock_is_read_again_not_failed(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cluster.superuser("flex") as conn:
        conn.execute(f"SELECT pgaadauth_create_principal_with_oid('myuser', '{OBJECT_ID}', 'service', false, false)")
    real_read = commands.read_role
    reads: list[str] = []

    def stale_first(conn: Any, server: Any, name: str) -> Any:
        reads.append(name)
        return RoleState(name) if len(reads) == 1 else real_read(conn, server, name)

    monkeypatch.setattr(commands, "read_role", stale_first)
    result = run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)
    assert len(reads) == 2
    assert [action.verb for action in result.actions] == ["noop", "grant"]  # CONNECT was still missing


def test_single_server_client_id_is_verified_only_where_verifiers_are_readable(cluster: Cluster) -> None:
    with cluster.superuser() as conn:
        conn.execute(f"CREATE ROLE vec LOGIN PASSWORD '{CLIENT_ID}' IN ROLE azure_ad_user")
    same = RoleRequest("vec", IdentityIds(CLIENT_ID))

    unverified = run(cluster, "postgres", roles.create_role, "auto", same, False)
    assert not unverified.changed and unverified.fields["clientIdVerified"] is False
    assert "cannot be checked" in unverified.warnings[0]
    # The admin does not own `postgres`: CONNECT comes from PUBLIC, and the output says so.
    assert unverified.actions[1].reason == "the admin may not grant it; the role connects through PUBLIC"

    verified = run(cluster, "postgres", roles.create_role, "auto", same, False, user="postgres")
    assert verified.actions[0].verb == "noop" and verified.fields["clientIdVerified"] is True
    with pytest.raises(Conflict, match=f"another client id .* not client id {OTHER_ID}"):
        run(
            cluster,
            "postgres",
            roles.create_role,
            "auto",
            RoleRequest("vec", IdentityIds(OTHER_ID)),
            False,
            user="postgres",
        )


def test_roles_that_are_not_entra_roles_are_never_touched(cluster: Cluster) -> None:
    before = catalog(cluster)
    for request in (flex_request("app_readers"), flex_request("app_readers", replace=True)):
        with pytest.raises(Conflict, match="not a Microsoft Entra role"):
            run(cluster, "flex", roles.create_role, "flexible", request, False)
    with pytest.raises(Conflict, match="not a Microsoft Entra role"):
        run(cluster, "flex", roles.drop_role, "flexible", "app_readers", True, False)
    with pytest.raises(NotFound, match="--member-of: no role named nobody"):
        run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("nobody",)), False)
    assert catalog(cluster) == before


def test_drop_refuses_owned_objects_until_forced_then_gives_them_to_the_admin(cluster: Cluster) -> None:
    run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)
    with cluster.superuser("flex") as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute('ALTER TABLE orders OWNER TO "myuser"')
    with pytest.raises(Conflict, match="owns 1 object: table orders"):
        run(cluster, "flex", roles.drop_role, "flexible", "myuser", False, False)

    dropped = run(cluster, "flex", roles.drop_role, "flexible", "myuser", True, False)
    assert dropped.fields["statements"] == [
        'GRANT "myuser" TO CURRENT_USER',
        'REASSIGN OWNED BY "myuser" TO CURRENT_USER',
        'DROP OWNED BY "myuser"',
        'DROP ROLE "myuser"',
    ]
    with cluster.superuser("flex") as conn:
        assert conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE relname = 'orders'").fetchone() == (
            "aadadmin",
        )
        conn.execute("DROP TABLE orders")
    again = run(cluster, "flex", roles.drop_role, "flexible", "myuser", False, False)
    assert not again.changed and again.actions[0].reason == "does not exist"


def test_the_role_lock_makes_a_second_run_wait_for_the_first(cluster: Cluster) -> None:
    """Another run holds the role's advisory lock mid-transaction: a create must wait for it, and create
    the role only once it is released. Without the lock the create would go ahead at once (the retry on a
    duplicate role cannot hide that)."""
    outcome: list[Any] = []
    with cluster.superuser("flex") as holder, cluster.superuser() as watcher:
        holder.autocommit = False
        holder.execute(statement("lock", "role"), {"role": "myuser"})  # held until holder's transaction ends
        creating = threading.Thread(
            target=lambda: outcome.append(run(cluster, "flex", roles.create_role, "flexible", flex_request(), False))
        )
        creating.start()
        try:
            waiting: list[Any] = []
            while not waiting:
                assert creating.is_alive(), "the create went ahead while another session held the role's lock"
                waiting = watcher.execute(
                    "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.usename = 'aadadmin'"
                ).fetchall()
                time.sleep(0.02)
            assert watcher.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'myuser'").fetchone() == (0,)
        finally:
            holder.rollback()
            creating.join(timeout=60)
    assert [result.changed for result in outcome] == [True]


@pytest.mark.parametrize(
    ("setup", "group", "message"),
    [
        (["CREATE ROLE app_login LOGIN"], "app_login", "app_login can log in"),
        (["CREATE ROLE app_creators CREATEROLE"], "app_creators", "app_creators has CREATEROLE"),
        (
            ["CREATE ROLE app_owners SUPERUSER", "CREATE ROLE app_team", "GRANT app_owners TO app_team"],
            "app_team",
            "app_team is a member of app_owners, and that role has SUPERUSER",
        ),
        (
            ["CREATE ROLE azure_pg_admin", "CREATE ROLE app_ops", "CREATE ROLE app_deep"]
            + ["GRANT azure_pg_admin TO app_ops", "GRANT app_ops TO app_deep"],
            "app_deep",
            "app_deep is a member of app_ops -> azure_pg_admin, and that role is Azure's administrators' role",
        ),
        (
            ["CREATE ROLE app_files", "GRANT pg_read_server_files TO app_files"],
            "app_files",
            "is a member of pg_read_server_files, and that role reaches the server's operating system",
        ),
        (
            ["CREATE ROLE app_everything", "GRANT pg_read_all_data TO app_everything"],
            "app_everything",
            "--allow-predefined pg_read_all_data",
        ),
        (
            [f"SELECT pgaadauth_create_principal_with_oid('app_admins', '{OTHER_ID}', 'group', true, false)"],
            "app_admins",
            "app_admins can log in",
        ),
    ],
)
def test_groups_with_more_power_than_a_group_are_refused_before_any_write(
    cluster: Cluster, setup: list[str], group: str, message: str
) -> None:
    with cluster.superuser("flex") as conn:
        for text in setup:
            conn.execute(text)
    before = catalog(cluster)
    logged_from = cluster.log_size()
    with pytest.raises(Forbidden, match=f"^--member-of {group}: ") as refused:
        run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_readers", group)), False)
    assert message in str(refused.value)
    assert catalog(cluster) == before
    assert [text for text in cluster.statements_since(logged_from) if WRITES.search(text)] == []


def test_a_flexible_entra_admin_is_refused_as_a_group(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    with cluster.superuser("flex") as conn:
        conn.execute("CREATE ROLE app_entra_admins")
    # The stand-in lists nobody as admin; Azure's pgaadauth_list_principals marks its admins with isadmin.
    admins = frozenset({"app_entra_admins"})
    monkeypatch.setattr(commands, "entra_admins", lambda conn, server: admins)
    with pytest.raises(Forbidden, match="app_entra_admins is a Microsoft Entra administrator of the server"):
        run(cluster, "flex", roles.create_role, "flexible", flex_request(member_of=("app_entra_admins",)), False)


def stall_first_read(monkeypatch: pytest.MonkeyPatch, stall: str) -> None:
    """The server stalls inside the command's transaction, before the role is read."""
    real_read = commands.read_role

    def stalled(conn: Any, server: Any, name: str) -> Any:
        conn.execute(stall)
        return real_read(conn, server, name)

    monkeypatch.setattr(commands, "read_role", stalled)


def test_a_stalled_statement_ends_within_the_time_budget(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    before = catalog(cluster)
    stall_first_read(monkeypatch, "SELECT pg_sleep(30)")
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(1.5))
    with pytest.raises(TimedOut, match=r"^PostgreSQL did not finish creating role myuser within 1\.5 s \(canceling"):
        run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)
    assert catalog(cluster) == before


def test_a_lock_held_by_another_session_ends_within_the_time_budget(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = catalog(cluster)
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(1.5))
    with cluster.superuser("flex") as holder:
        holder.autocommit = False
        holder.execute("GRANT CONNECT ON DATABASE flex TO app_readers")  # holds the row GRANT CONNECT updates
        try:
            with pytest.raises(
                TimedOut, match=r"within 1\.5 s \(canceling statement due to (lock|statement) timeout"
            ) as stalled:
                run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)
        finally:
            holder.rollback()
    assert "nothing was changed" in str(stalled.value)
    assert catalog(cluster) == before


def test_a_commit_whose_acknowledgement_is_lost_is_reported_as_unknown(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server commits, then its answer never arrives: COMMIT waits for a synchronous standby that
    does not exist (the commit is already durable locally) and the session is terminated meanwhile."""
    with cluster.superuser() as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        conn.execute("SELECT pg_reload_conf()")
    failures: list[BaseException] = []

    def create() -> None:
        try:
            run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)
        except BaseException as error:  # noqa: BLE001 - examined below
            failures.append(error)

    monkeypatch.setenv("PGOPTIONS", "-c synchronous_commit=on")
    creating = threading.Thread(target=create)
    try:
        creating.start()
        with cluster.superuser() as watcher:
            committing: list[Any] = []
            while not committing:
                assert creating.is_alive(), failures
                committing = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = 'aadadmin' AND wait_event = 'SyncRep'"
                ).fetchall()
                time.sleep(0.02)
            watcher.execute("SELECT pg_terminate_backend(%s)", committing[0])
        creating.join(timeout=60)
    finally:
        with cluster.superuser() as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("SELECT pg_reload_conf()")
    monkeypatch.delenv("PGOPTIONS")
    (error,) = failures
    assert isinstance(error, OutcomeUnknown) and error.outcome == "unknown" and error.exit_status == 1
    assert "during the commit while creating role myuser" in error.message
    assert "role myuser may have been created, or not. Run the command again: it will show whether it was" in (
        error.message
    )
    again = run(cluster, "flex", roles.create_role, "flexible", flex_request(), False)  # it had been created
    assert [action.verb for action in again.actions] == ["noop", "noop"]
