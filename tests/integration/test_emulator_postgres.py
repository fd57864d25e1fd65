"""The emulated Azure Database for PostgreSQL (Single and Flexible Server) with real psql and psycopg.

Every connection goes through TLS with sslmode=verify-full against the emulator's CA and logs in
with an access token as the password, as on Azure."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from provision.emulator import seed
from provision.emulator.arm.world import ManagedIdentity
from provision.emulator.entra import Entra
from provision.emulator.keys import Authority
from provision.emulator.postgres import cluster, databases
from provision.emulator.postgres.cluster import Clusters

pytestmark = pytest.mark.integration

PSQL = "/usr/bin/psql"
# Arguments: role name, object id, object type, is admin (MFA is never asked for here).
CREATE_WITH_OID = "SELECT * FROM pgaadauth_create_principal_with_oid(%s, %s, %s, %s, false)"
OPERATOR = {
    "client_id": seed.OPERATOR_CLIENT_ID,
    "principal_id": seed.OPERATOR_PRINCIPAL_ID,
    "resource_id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{seed.RESOURCE_GROUP}"
    f"/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}",
}


# Every managed identity the tests make, as Resource Manager would hold it: Entra has a service principal for each.
MADE = [ManagedIdentity(seed.VM_NAME, seed.OPERATOR_CLIENT_ID, seed.OPERATOR_PRINCIPAL_ID, OPERATOR["resource_id"])]


def new_identity(name: str) -> ManagedIdentity:
    identity = ManagedIdentity(
        name,
        str(uuid.uuid4()),
        str(uuid.uuid4()),
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourcegroups/{seed.RESOURCE_GROUP}"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
    )
    MADE.append(identity)
    return identity


class ResourceManagerStandIn:
    """What Entra asks Resource Manager: its managed identities."""

    def managed_identities(self) -> list[ManagedIdentity]:
        return list(MADE)


@dataclass
class Servers:
    databases: databases.Databases
    authority: Authority
    entra: Entra
    env: dict[str, str]

    def token(self, identity: dict[str, str] | ManagedIdentity = OPERATOR, **extra: Any) -> str:
        subject = identity.token_subject() if isinstance(identity, ManagedIdentity) else identity
        lifetime = extra.pop("lifetime", 3600)
        audience = extra.pop("audience", seed.DATABASE_AUDIENCE)
        return self.authority.mint_token(audience, subject, lifetime, **extra)[0]

    def port(self, flavor: str) -> str:
        return self.env["PROVISION_SINGLE_PORT" if flavor == "single" else "PROVISION_FLEX_PORT"]

    def psql(self, flavor: str, user: str, token: str, *sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.psql_argv(flavor, user, *sql), env=self.psql_env(token), capture_output=True, text=True, timeout=60
        )

    def psql_argv(self, flavor: str, user: str, *sql: str) -> list[str]:
        argv = [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.env["PROVISION_SINGLE_HOST"]]
        argv += ["-p", self.port(flavor), "-U", user, "-d", "postgres"]
        for statement in sql:
            argv += ["-c", statement]
        return argv

    def psql_env(self, token: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGPASSWORD": token,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": self.env["PGSSLROOTCERT"],
            "PGCONNECT_TIMEOUT": "10",
        }

    def connect(self, flavor: str, user: str, token: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.env["PROVISION_FLEX_HOST"],
            port=int(self.port(flavor)),
            user=user,
            password=token,
            dbname="postgres",
            sslmode="verify-full",
            sslrootcert=self.env["PGSSLROOTCERT"],
            autocommit=True,
            connect_timeout=10,
        )

    def admin(self, flavor: str) -> psycopg.Connection[Any]:
        user = self.env["PROVISION_SINGLE_ADMIN" if flavor == "single" else "PROVISION_FLEX_ADMIN"]
        return self.connect(flavor, user, self.token())

    def single_role(self, name: str, client_id: str, *, in_azure_ad_user: bool = True) -> None:
        membership = " IN ROLE azure_ad_user" if in_azure_ad_user else ""
        with self.admin("single") as conn:
            conn.execute("SET aad_validate_oids_in_tenant = off")
            conn.execute(
                psycopg.sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}" + membership).format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(client_id)
                )
            )

    def flexible_role(self, name: str, object_id: str) -> None:
        with self.admin("flexible") as conn:
            conn.execute(CREATE_WITH_OID, [name, object_id, "service", False])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    state = tmp_path_factory.mktemp("databases")
    authority = Authority.load_or_create(state)
    entra = Entra(ResourceManagerStandIn())
    running = databases.start(
        state, authority, entra, "127.0.0.1", 0, 0, cluster.find_installation(), databases.DEFAULT_NAMES
    )
    try:
        yield Servers(running, authority, entra, running.exports())
    finally:
        running.close()


@pytest.fixture
def fresh(servers: Servers) -> Iterator[Servers]:
    servers.databases.reset()
    servers.entra.reset()
    del MADE[1:]
    yield servers


def user_for(flavor: str, role: str) -> str:
    return f"{role}@{seed.SINGLE_SERVER}" if flavor == "single" else role


def create_role(servers: Servers, flavor: str, role: str, identity: ManagedIdentity) -> None:
    if flavor == "single":
        servers.single_role(role, identity.client_id)
    else:
        servers.flexible_role(role, identity.principal_id)


def password_failed(user: str) -> str:
    return f'FATAL:  password authentication failed for user "{user}"'


def another_identity(flavor: str, user: str) -> str:
    """How each flavor refuses a valid token of another identity for a role that exists."""
    return password_failed(user) if flavor == "single" else f"FATAL:  Service Principal oid mismatch for role[{user}]."


# -- logins that work ---------------------------------------------------------------------------


def test_exports_point_at_both_servers(servers: Servers) -> None:
    env = servers.env
    assert env["PROVISION_SINGLE_HOST"] == env["PROVISION_FLEX_HOST"] == "127.0.0.1"
    assert env["PROVISION_SINGLE_PORT"] != env["PROVISION_FLEX_PORT"]
    assert env["PROVISION_SINGLE_ADMIN"] == "aadadmin@mydemoserver"
    assert env["PROVISION_FLEX_ADMIN"] == "aadadmin"
    assert env["PGSSLROOTCERT"] == str(servers.authority.ca_path)


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_psql_logs_in_with_a_token(fresh: Servers, flavor: str) -> None:
    app = new_identity("app-psql")
    create_role(fresh, flavor, "app_psql", app)
    done = fresh.psql(
        flavor,
        user_for(flavor, "app_psql"),
        fresh.token(app),
        "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    assert done.returncode == 0, done.stderr
    # The cluster itself sees a Unix socket; TLS ends at the gateway.
    assert done.stdout.strip() == "app_psql|f"


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_psycopg_logs_in_with_a_token(fresh: Servers, flavor: str) -> None:
    app = new_identity("app-psycopg")
    create_role(fresh, flavor, "app_psycopg", app)
    with fresh.connect(flavor, user_for(flavor, "app_psycopg"), fresh.token(app)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_psycopg",)
        assert conn.pgconn.ssl_in_use


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_admin_logs_in_by_object_id(servers: Servers, flavor: str) -> None:
    with servers.admin(flavor) as conn:
        row = conn.execute("SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == ("aadadmin", False, True)


def test_a_long_token_works(fresh: Servers) -> None:
    app = new_identity("app-long")
    create_role(fresh, "flexible", "app_long", app)
    token = fresh.token(app, padding="x" * 2600)
    assert len(token) > 2500
    done = fresh.psql("flexible", "app_long", token, "SELECT current_user")
    assert done.returncode == 0, done.stderr
    with fresh.connect("flexible", "app_long", token) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_long",)


def test_fifty_psql_sessions_at_once(fresh: Servers) -> None:
    app = new_identity("app-many")
    create_role(fresh, "single", "app_many", app)
    argv = fresh.psql_argv("single", "app_many@mydemoserver", "SELECT pg_sleep(0.2), current_user")
    env = fresh.psql_env(fresh.token(app))
    sessions = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(50)
    ]
    results = [session.communicate(timeout=120) for session in sessions]
    assert [session.returncode for session in sessions] == [0] * 50, [err for _, err in results if err][:3]
    assert {out.strip() for out, _ in results} == {"|app_many"}
    # And it keeps serving.
    done = fresh.psql("flexible", "aadadmin", fresh.token(), "SELECT 1")
    assert done.returncode == 0, done.stderr


# -- logins that are refused --------------------------------------------------------------------


@pytest.fixture(params=["single", "flexible"])
def app_role(request: pytest.FixtureRequest, fresh: Servers) -> tuple[Servers, str, str, ManagedIdentity]:
    """A role mapped to a fresh identity on one flavor: (servers, flavor, user name, identity)."""
    flavor: str = request.param
    app = new_identity("app-refused")
    create_role(fresh, flavor, "app_refused", app)
    return fresh, flavor, user_for(flavor, "app_refused"), app


def assert_refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stdout
    assert message in done.stderr
    assert "eyJ" not in done.stderr  # the token is never echoed back


def test_token_for_another_audience_is_refused(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, app = app_role
    done = servers.psql(flavor, user, servers.token(app, audience=seed.ARM_AUDIENCE), "SELECT 1")
    assert_refused(done, "The access token does not have a valid audience claim.")


def test_expired_token_is_refused(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, app = app_role
    done = servers.psql(flavor, user, servers.token(app, lifetime=-60), "SELECT 1")
    assert_refused(done, "FATAL:  The access token has expired. Please acquire a new token and retry.")


def test_token_not_yet_valid_is_refused(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, app = app_role
    done = servers.psql(flavor, user, servers.token(app, nbf=int(time.time()) + 600), "SELECT 1")
    assert_refused(done, password_failed(user))


def test_token_signed_by_another_key_is_refused(
    app_role: tuple[Servers, str, str, ManagedIdentity], tmp_path: Path
) -> None:
    servers, flavor, user, app = app_role
    forger = Authority.load_or_create(tmp_path / "forger")
    token = forger.mint_token(seed.DATABASE_AUDIENCE, app.token_subject(), 3600)[0]
    assert_refused(servers.psql(flavor, user, token, "SELECT 1"), password_failed(user))


def test_another_identitys_token_is_refused(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, _ = app_role
    done = servers.psql(flavor, user, servers.token(new_identity("someone-else")), "SELECT 1")
    assert_refused(done, another_identity(flavor, user))


def test_operator_token_does_not_open_an_app_role(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, _ = app_role
    assert_refused(servers.psql(flavor, user, servers.token(), "SELECT 1"), another_identity(flavor, user))


def test_not_a_token_is_refused(app_role: tuple[Servers, str, str, ManagedIdentity]) -> None:
    servers, flavor, user, _ = app_role
    assert_refused(servers.psql(flavor, user, "not-a-token", "SELECT 1"), password_failed(user))


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_admin_needs_the_operators_token(servers: Servers, flavor: str) -> None:
    user = user_for(flavor, "aadadmin")
    done = servers.psql(flavor, user, servers.token(new_identity("not-the-operator")), "SELECT 1")
    assert_refused(done, another_identity(flavor, user))


def test_tokens_never_reach_the_log(fresh: Servers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="provision.emulator")
    app = new_identity("app-logged")
    create_role(fresh, "single", "app_logged", app)
    tokens = [fresh.token(app), fresh.token(app, lifetime=-60), fresh.token(new_identity("app-other"))]
    for token in tokens:
        fresh.psql("single", "app_logged@mydemoserver", token, "SELECT 1")
    assert "password authentication failed" in caplog.text  # the refusals were logged...
    assert "eyJ" not in caplog.text  # ...and no token, whole or in part
    assert app.client_id not in caplog.text  # nor the client id that serves as the role's password


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_unknown_role_is_refused(fresh: Servers, flavor: str) -> None:
    user = user_for(flavor, "nobody_here")
    done = fresh.psql(flavor, user, fresh.token(new_identity("nobody-here")), "SELECT 1")
    assert_refused(done, password_failed(user))


def test_single_role_outside_azure_ad_user_is_refused(fresh: Servers) -> None:
    app = new_identity("app-plain")
    fresh.single_role("app_plain", app.client_id, in_azure_ad_user=False)
    done = fresh.psql("single", "app_plain@mydemoserver", fresh.token(app), "SELECT 1")
    assert_refused(done, password_failed("app_plain@mydemoserver"))


def test_single_client_id_mismatch_is_refused(fresh: Servers) -> None:
    app = new_identity("app-mismatch")
    fresh.single_role("app_mismatch", str(uuid.uuid4()))
    done = fresh.psql("single", "app_mismatch@mydemoserver", fresh.token(app), "SELECT 1")
    assert_refused(done, password_failed("app_mismatch@mydemoserver"))


@pytest.mark.parametrize("user", ["app_short", "app_short@myflex", "@mydemoserver"])
def test_single_user_must_name_the_server(fresh: Servers, user: str) -> None:
    app = new_identity("app-short")
    fresh.single_role("app_short", app.client_id)
    done = fresh.psql("single", user, fresh.token(app), "SELECT 1")
    assert_refused(done, "The Username should be in <username@hostname> format.")


def test_flexible_object_id_mismatch_is_refused(fresh: Servers) -> None:
    app = new_identity("app-oid")
    fresh.flexible_role("app_oid", new_identity("app-other").principal_id)
    assert_refused(
        fresh.psql("flexible", "app_oid", fresh.token(app), "SELECT 1"),
        "FATAL:  Service Principal oid mismatch for role[app_oid].",
    )


def test_flexible_user_role_refuses_a_service_principals_token(fresh: Servers) -> None:
    # A role for an Entra user, and an app-only token that carries the user's object id.
    with fresh.admin("flexible") as conn:
        conn.execute(CREATE_WITH_OID, ["app_as_user", seed.USER_PRINCIPAL_ID, "user", False])
    app = {"client_id": str(uuid.uuid4()), "principal_id": seed.USER_PRINCIPAL_ID, "resource_id": ""}
    assert_refused(
        fresh.psql("flexible", "app_as_user", fresh.token(app), "SELECT 1"),
        "FATAL:  Service Principals cannot generate AAD_AUTH_TOKENTYPE_APP_USER tokens for role[app_as_user]",
    )


def test_flexible_role_without_entra_mapping_is_refused(fresh: Servers) -> None:
    app = new_identity("app-unmapped")
    with fresh.admin("flexible") as conn:
        conn.execute("CREATE ROLE app_unmapped WITH LOGIN")
    assert_refused(
        fresh.psql("flexible", "app_unmapped", fresh.token(app), "SELECT 1"), password_failed("app_unmapped")
    )


def test_dropped_and_recreated_flexible_role_loses_its_mapping(fresh: Servers) -> None:
    app = new_identity("app-again")
    fresh.flexible_role("app_again", app.principal_id)
    with fresh.admin("flexible") as conn:
        conn.execute("DROP ROLE app_again")
        conn.execute("CREATE ROLE app_again WITH LOGIN")
        assert (
            conn.execute("SELECT * FROM pgaadauth_list_principals(false) WHERE rolname = 'app_again'").fetchall() == []
        )
    assert_refused(fresh.psql("flexible", "app_again", fresh.token(app), "SELECT 1"), password_failed("app_again"))


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_connection_without_tls_is_refused(servers: Servers, flavor: str) -> None:
    env = {**servers.psql_env(servers.token()), "PGSSLMODE": "disable"}
    argv = servers.psql_argv(flavor, user_for(flavor, "aadadmin"), "SELECT 1")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert_refused(done, "SSL connection is required. Please specify SSL options and retry.")


def test_psql_cancels_a_running_query(servers: Servers) -> None:
    """Ctrl-C in psql sends a CancelRequest on a new plain connection, with the backend's key."""
    argv = servers.psql_argv("flexible", "aadadmin", "SELECT pg_sleep(30)")
    session = subprocess.Popen(argv, env=servers.psql_env(servers.token()), stderr=subprocess.PIPE, text=True)
    with servers.admin("flexible") as watcher:
        running = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        deadline = time.monotonic() + 10
        while watcher.execute(running).fetchone() != (1,):
            if time.monotonic() > deadline or session.poll() is not None:
                session.kill()
                pytest.fail(f"the query never ran: {session.communicate()[1]}")
            time.sleep(0.02)
    session.send_signal(signal.SIGINT)
    _, stderr = session.communicate(timeout=10)
    assert "canceling statement due to user request" in stderr


def test_psycopg_cancels_over_tls(servers: Servers) -> None:
    """libpq 17+ sends the CancelRequest inside TLS (`cancel_safe`)."""
    with servers.admin("flexible") as conn:
        cancel = threading.Timer(0.3, conn.cancel_safe)
        cancel.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(30)")
        finally:
            cancel.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- Single Server: the walkthrough -------------------------------------------------------------


WALKTHROUGH = (
    "SET aad_validate_oids_in_tenant = off;\n"
    "CREATE ROLE myuser WITH LOGIN PASSWORD '{client_id}' IN ROLE azure_ad_user;"
)


def test_walkthrough_sql_in_one_message(fresh: Servers) -> None:
    app = new_identity("myIdentity")
    done = fresh.psql("single", "aadadmin@mydemoserver", fresh.token(), WALKTHROUGH.format(client_id=app.client_id))
    assert done.returncode == 0, done.stderr
    done = fresh.psql("single", "myuser@mydemoserver", fresh.token(app), "SELECT current_user")
    assert (done.returncode, done.stdout.strip()) == (0, "myuser"), done.stderr


def test_walkthrough_sql_statement_by_statement(fresh: Servers) -> None:
    app = new_identity("myIdentity")
    set_validation, create_role_sql = WALKTHROUGH.format(client_id=app.client_id).split("\n")
    done = fresh.psql("single", "aadadmin@mydemoserver", fresh.token(), set_validation, create_role_sql)
    assert done.returncode == 0, done.stderr
    assert fresh.psql("single", "myuser@mydemoserver", fresh.token(app), "SELECT 1").returncode == 0


def test_walkthrough_setting_through_the_extended_protocol(fresh: Servers) -> None:
    with fresh.admin("single") as conn:
        conn.execute("SET aad_validate_oids_in_tenant = off")
        conn.execute("SELECT %s::text", ["SET aad_validate_oids_in_tenant = off"])


def test_single_shows_its_oid_validation_setting_on_until_turned_off(fresh: Servers) -> None:
    show = "SHOW aad_validate_oids_in_tenant"
    done = fresh.psql(
        "single", "aadadmin@mydemoserver", fresh.token(), show, "SET aad_validate_oids_in_tenant = off", show
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["on", "SET", "off"]
    with fresh.admin("single") as conn:  # the extended protocol, and the column named as SHOW names it
        cursor = conn.execute(show)
        assert cursor.fetchone() == ("on",)
        assert cursor.description is not None and cursor.description[0].name == "aad_validate_oids_in_tenant"


def test_single_keeps_client_ids_as_scram_verifiers_the_admin_cannot_read(fresh: Servers) -> None:
    app = new_identity("app-stored")
    fresh.single_role("app_stored", app.client_id)
    done = fresh.psql("single", "aadadmin@mydemoserver", fresh.token(), "SELECT rolpassword FROM pg_authid")
    assert done.returncode != 0  # the admin is not a superuser
    with fresh.admin("single") as conn:
        assert conn.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)


# -- what tells the flavors apart -----------------------------------------------------------------


FLAVOR_MARKERS = (
    "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname LIKE 'pgaadauth%'),"
    " EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'azure_ad_user')"
)


def test_single_has_azure_ad_user_and_no_pgaadauth(servers: Servers) -> None:
    with servers.admin("single") as conn:
        assert conn.execute(FLAVOR_MARKERS).fetchone() == (False, True)


def test_flexible_has_pgaadauth_and_no_azure_ad_user(servers: Servers) -> None:
    with servers.admin("flexible") as conn:
        assert conn.execute(FLAVOR_MARKERS).fetchone() == (True, False)


def test_flexible_refuses_single_servers_setting(servers: Servers) -> None:
    done = servers.psql("flexible", "aadadmin", servers.token(), "SET aad_validate_oids_in_tenant = off")
    assert done.returncode == 1
    assert 'unrecognized configuration parameter "aad_validate_oids_in_tenant"' in done.stderr


# -- Azure's host names ---------------------------------------------------------------------------


def psql_by_name(servers: Servers, host_name: str, port: str, user: str, sql: str) -> subprocess.CompletedProcess[str]:
    """psql as the walkthrough runs it, `-h NAME.postgres.database.azure.com`, reaching loopback through
    PGHOSTADDR and verifying the name (verify-full)."""
    env = {**servers.psql_env(servers.token()), "PGHOSTADDR": servers.env["PROVISION_SINGLE_HOST"], "PGPORT": port}
    argv = [PSQL, "-X", "-At", "-h", host_name, "-U", user, "-d", "postgres", "-c", sql]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("port_of", ["single", "flexible"])
@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_the_azure_host_name_picks_the_server_on_either_port(servers: Servers, flavor: str, port_of: str) -> None:
    prefix = "PROVISION_SINGLE" if flavor == "single" else "PROVISION_FLEX"
    assert (
        servers.env[f"{prefix}_NAME"]
        == f"{seed.SINGLE_SERVER if flavor == 'single' else seed.FLEXIBLE_SERVER}.postgres.database.azure.com"
    )
    done = psql_by_name(
        servers, servers.env[f"{prefix}_NAME"], servers.port(port_of), servers.env[f"{prefix}_ADMIN"], FLAVOR_MARKERS
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("f|t" if flavor == "single" else "t|f")


def test_a_name_the_emulator_does_not_serve_fails_verification(servers: Servers) -> None:
    done = psql_by_name(
        servers, "otherserver.postgres.database.azure.com", servers.port("single"), "aadadmin@otherserver", "SELECT 1"
    )
    assert done.returncode == 2
    assert 'does not match host name "otherserver.postgres.database.azure.com"' in done.stderr


def test_the_exports_reach_both_servers_by_name(servers: Servers) -> None:
    env = servers.env
    assert (env["PGHOSTADDR"], env["PGPORT"]) == (env["PROVISION_SINGLE_HOST"], env["PROVISION_SINGLE_PORT"])
    for prefix in ("PROVISION_SINGLE", "PROVISION_FLEX"):
        done = psql_by_name(servers, env[f"{prefix}_NAME"], env["PGPORT"], env[f"{prefix}_ADMIN"], "SELECT 1")
        assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr


# -- Flexible Server's pgaadauth functions --------------------------------------------------------


def test_create_principal_with_oid_and_list(fresh: Servers) -> None:
    app = new_identity("app-listed")
    with fresh.admin("flexible") as conn:
        created = conn.execute(
            "SELECT * FROM pgaadauth_create_principal_with_oid('app_listed', %s, 'service', false, false)",
            [app.principal_id],
        ).fetchone()
        assert created == ('Created role for "app_listed"',)
        cursor = conn.execute("SELECT * FROM pgaadauth_list_principals(false)")
        assert [column.name for column in cursor.description or []] == [
            "rolname",
            "principaltype",
            "objectid",
            "tenantid",
            "ismfa",
            "isadmin",
        ]
        assert cursor.fetchall() == [
            ("aadadmin", "service", seed.OPERATOR_PRINCIPAL_ID, seed.TENANT_ID, 0, 1),
            ("app_listed", "service", app.principal_id, seed.TENANT_ID, 0, 0),
        ]
        admins = conn.execute("SELECT rolname FROM pgaadauth_list_principals(true)").fetchall()
        assert admins == [("aadadmin",)]


def test_create_principal_by_name_asks_the_directory(fresh: Servers) -> None:
    app = new_identity("myIdentity")
    with fresh.admin("flexible") as conn:
        assert conn.execute("SELECT pgaadauth_create_principal('myIdentity', false, false)").fetchone() == (
            'Created role for "myIdentity"',
        )
        with pytest.raises(
            psycopg.errors.InternalError_,
            match="Could not validate AAD user noSuchIdentity because its name is not found in the tenant",
        ):
            conn.execute("SELECT pgaadauth_create_principal('noSuchIdentity', false, false)")
    with fresh.connect("flexible", "myIdentity", fresh.token(app)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("myIdentity",)


def test_admin_principal_can_create_roles_itself(fresh: Servers) -> None:
    admin, app = new_identity("second-admin"), new_identity("app-by-second")
    with fresh.admin("flexible") as conn:
        conn.execute(CREATE_WITH_OID, ["second_admin", admin.principal_id, "service", True])
    with fresh.connect("flexible", "second_admin", fresh.token(admin)) as conn:
        conn.execute(CREATE_WITH_OID, ["app_by_second", app.principal_id, "service", False])
        conn.execute("DROP ROLE app_by_second")


def test_only_entra_admins_create_principals(fresh: Servers) -> None:
    app = new_identity("app-not-admin")
    fresh.flexible_role("app_not_admin", app.principal_id)
    with fresh.connect("flexible", "app_not_admin", fresh.token(app)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a Microsoft Entra admin"):
            conn.execute(CREATE_WITH_OID, ["app_escalated", app.principal_id, "service", True])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pgaadauth.principals")


@pytest.mark.parametrize(
    ("object_id", "object_type", "message"),
    [
        ("not-a-guid", "service", "invalid objectId"),
        ("0b6f1a52-3c1e-4d7a-9f35-6a2e8c4d1b90", "robot", "invalid objectType"),
    ],
)
def test_create_principal_with_oid_checks_its_arguments(
    servers: Servers, object_id: str, object_type: str, message: str
) -> None:
    with servers.admin("flexible") as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(CREATE_WITH_OID, ["app_bad", object_id, object_type, False])


# -- reset --------------------------------------------------------------------------------------


def test_reset_drops_every_role_and_database_made_since_the_seed(servers: Servers) -> None:
    servers.databases.reset()
    app = new_identity("app-reset")
    create_role(servers, "single", "app_reset", app)
    create_role(servers, "flexible", "app_reset", app)
    with servers.admin("flexible") as conn:
        conn.execute("GRANT app_reset TO CURRENT_USER")
        conn.execute("CREATE DATABASE scratch OWNER app_reset")
    with servers.connect("flexible", "app_reset", servers.token(app)) as conn:
        # Something the role owns in the seed database too, which DROP ROLE alone would refuse.
        conn.execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO aadadmin")
        servers.databases.reset()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # its session was ended
    for flavor in ("single", "flexible"):
        with servers.admin(flavor) as conn:
            roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'app%'").fetchall()
            assert roles == []
            assert conn.execute("SELECT datname FROM pg_database WHERE datname = 'scratch'").fetchall() == []
    with servers.admin("flexible") as conn:
        assert conn.execute("SELECT rolname FROM pgaadauth_list_principals(false)").fetchall() == [("aadadmin",)]


def test_cluster_files_live_in_an_enterable_state_directory() -> None:
    state = Path(tempfile.mkdtemp(prefix="provision-test-"))
    try:
        state.chmod(0o755)
        clusters = Clusters(("one",), state)
        try:
            assert clusters.directory == state / "postgres"
            clusters.start()
            assert clusters.socket("one").is_socket()
        finally:
            clusters.close()
        assert not (state / "postgres").exists()
    finally:
        state.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the servers as another user")
def test_an_installation_the_server_user_cannot_enter_is_run_from_a_copy(tmp_path: Path) -> None:
    relocatable = [i for i in cluster.installations().values() if i.root.is_relative_to(cluster.PROJECT_CACHE)]
    if not relocatable:
        pytest.skip("no relocatable PostgreSQL in the project cache (`make postgres`)")
    hidden = tmp_path / "home-of-root"  # pytest's tmp_path is 0700 under root, like /root
    shutil.copytree(relocatable[0].root, hidden / "pg", symlinks=True)
    state = Path(tempfile.mkdtemp(prefix="provision-test-"))
    try:
        state.chmod(0o755)
        clusters = Clusters(("one",), state, cluster.Installation(relocatable[0].major, hidden / "pg"))
        try:
            clusters.start()
            assert clusters.socket("one").is_socket()
        finally:
            clusters.close()
    finally:
        shutil.rmtree(state, ignore_errors=True)
