"""`provision role`: SQL composition, flavor detection, the plans, the admin login, and input checks."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from click.testing import CliRunner

from provision.cli import cli
from provision.db import admin, roles, verifiers
from provision.db.roles import IdentityIds, RoleRequest, planning, sql_text
from provision.db.roles import flavor as flavor_module
from provision.db.roles.commands import Bounds
from provision.db.roles.flavor import EVIDENCE, Server, detect
from provision.db.roles.request import SINGLE_GROUP
from provision.db.roles.state import Dependency, Reached, RoleState
from provision.db.target import Target
from provision.deadline import Deadline
from provision.errors import Conflict, DatabaseError, Forbidden, InvalidInput, NotFound, TimedOut
from provision.plan import Action, Result

CLIENT_ID = "0b5e8f3a-1c2d-4e6f-8a9b-c0d1e2f3a4b5"
OBJECT_ID = "6d1f0c2e-3b4a-4c5d-9e8f-7a6b5c4d3e2f"
OTHER_ID = "11111111-2222-4333-8444-555555555555"
# Made by PostgreSQL 15 from CLIENT_ID: CREATE ROLE vec LOGIN PASSWORD '<CLIENT_ID>', with
# password_encryption scram-sha-256 and then md5 (md5 salts with the role name, here vec5).
SCRAM_VERIFIER = (
    "SCRAM-SHA-256$4096:AqNq2cAyfVIKcB1RwbL9jw==$n+HEtl07xq5qbgvzh2pTTSuS1jH+Lx0Bk392f1lycHg="
    ":+/C/BchP4xV+30bxcgfnQ+4Ikz3az9lhKKynaQxwNPk="
)
MD5_VERIFIER = "md57ef644a46c565f23203a7673692c3628"
HOSTILE_NAME = 'x"; DROP ROLE aadadmin; --é'


def server(flavor: str = "flexible", **overrides: Any) -> Server:
    values: dict[str, Any] = {
        "flavor": flavor,
        "detected_by": f"found {EVIDENCE[flavor]}",
        "admin": "aadadmin",
        "database": "postgres",
        "reads_verifiers": False,
        "grants_connect": True,
        "public_connect": True,
    }
    values.update(overrides)
    return Server(**values)


def request(name: str = "myuser", **overrides: Any) -> RoleRequest:
    values: dict[str, Any] = {"identity": IdentityIds(CLIENT_ID, OBJECT_ID)}
    values.update(overrides)
    return RoleRequest(name, **values)


def entra_role(flavor: str = "flexible", name: str = "myuser", **overrides: Any) -> RoleState:
    values: dict[str, Any] = {"exists": True, "entra": True, "can_login": True, "connect_granted": True}
    if flavor == "flexible":
        values.update(object_id=OBJECT_ID, principal_type="service")
    else:
        values.update(member_of=(SINGLE_GROUP,))
    values.update(overrides)
    return RoleState(name, **values)


def rendered(plan: planning.Plan) -> list[str]:
    return [composed.as_string(None) for step in plan.steps for composed in step.sql]


def verbs(plan: planning.Plan) -> list[str]:
    return [step.action.verb for step in plan.steps]


# --- SQL text and composition -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "family", ["detect", "lock", "role_state", "principals", "role_create", "role_grant", "role_drop"]
)
def test_every_statement_family_loads_from_the_package(family: str) -> None:
    named = sql_text.statements(family)
    assert named
    for text in named.values():
        assert text and not text.endswith(";") and "--" not in text


def test_single_server_create_is_the_walkthrough_statement_with_the_name_quoted() -> None:
    plan = planning.plan_create(server("single"), RoleState(HOSTILE_NAME), request(HOSTILE_NAME))
    assert rendered(plan)[:2] == [
        "SET aad_validate_oids_in_tenant = off",
        f'CREATE ROLE "x""; DROP ROLE aadadmin; --é" WITH LOGIN PASSWORD \'{CLIENT_ID}\' IN ROLE azure_ad_user',
    ]


def test_flexible_create_passes_the_name_and_object_id_as_literals() -> None:
    plan = planning.plan_create(server(), RoleState("O'Brien"), request("O'Brien"))
    assert rendered(plan)[0] == (
        f"SELECT * FROM pgaadauth_create_principal_with_oid('O''Brien', '{OBJECT_ID}', 'service', false, false)"
    )


@pytest.mark.parametrize("replace", [False, True])
def test_flexible_plans_never_send_the_single_server_setting(replace: bool) -> None:
    state = entra_role(object_id=OTHER_ID) if replace else RoleState("myuser")
    plan = planning.plan_create(server(), state, request(replace=replace))
    assert plan.steps and not any("aad_validate_oids_in_tenant" in text for text in rendered(plan))


def test_a_new_role_gets_connect_and_the_memberships_and_nothing_more() -> None:
    plan = planning.plan_create(server(), RoleState("myuser"), request(member_of=("app_readers", "app_readers")))
    assert verbs(plan) == ["create", "grant", "grant"]
    assert rendered(plan)[1:] == [
        'GRANT CONNECT ON DATABASE "postgres" TO "myuser"',
        'GRANT "app_readers" TO "myuser"',
    ]
    assert not any("ALL" in text for text in rendered(plan))
    assert plan.fields == {
        "role": "myuser",
        "flavor": "flexible",
        "detectedBy": "found function pgaadauth_create_principal_with_oid",
        "database": "postgres",
        "clientId": CLIENT_ID,
        "objectId": OBJECT_ID,
    }


# --- Flavor detection -------------------------------------------------------------------------------


def detection_row(single: bool, flexible: bool) -> dict[str, Any]:
    return {
        "single": single,
        "flexible": flexible,
        "admin": "aadadmin",
        "database": "postgres",
        "reads_verifiers": False,
        "grants_connect": True,
        "public_connect": True,
    }


@pytest.mark.parametrize(
    ("single", "flexible", "wanted", "flavor", "detected_by"),
    [
        (True, False, "auto", "single", "found role azure_ad_user"),
        (False, True, "auto", "flexible", "found function pgaadauth_create_principal_with_oid"),
        (True, True, "single", "single", "--flavor single (role azure_ad_user present)"),
    ],
)
def test_detect_says_which_flavor_it_found_and_why(
    monkeypatch: pytest.MonkeyPatch, single: bool, flexible: bool, wanted: str, flavor: str, detected_by: str
) -> None:
    monkeypatch.setattr(flavor_module, "rows", lambda *args, **kwargs: [detection_row(single, flexible)])
    found = detect(object(), wanted)  # type: ignore[arg-type]
    assert (found.flavor, found.detected_by) == (flavor, detected_by)


@pytest.mark.parametrize(
    ("single", "flexible", "wanted", "error", "message"),
    [
        (True, True, "auto", InvalidInput, "choose one with --flavor"),
        (False, False, "auto", NotFound, "neither the function pgaadauth_create_principal_with_oid"),
        (True, False, "flexible", NotFound, "--flavor flexible: this server has no function"),
    ],
)
def test_detect_refuses_what_it_cannot_tell(
    monkeypatch: pytest.MonkeyPatch, single: bool, flexible: bool, wanted: str, error: type, message: str
) -> None:
    monkeypatch.setattr(flavor_module, "rows", lambda *args, **kwargs: [detection_row(single, flexible)])
    with pytest.raises(error, match=message.replace("(", r"\(")):
        detect(object(), wanted)  # type: ignore[arg-type]


# --- Single Server: the client id behind a password verifier ----------------------------------------


def test_client_id_matches_a_scram_verifier_only_for_the_same_id() -> None:
    assert verifiers.made_from(SCRAM_VERIFIER, CLIENT_ID, "vec")
    assert not verifiers.made_from(SCRAM_VERIFIER, OTHER_ID, "vec")


def test_client_id_matches_an_md5_verifier_salted_with_the_role_name() -> None:
    assert verifiers.made_from(MD5_VERIFIER, CLIENT_ID, "vec5")
    assert not verifiers.made_from(MD5_VERIFIER, CLIENT_ID, "other")
    assert not verifiers.made_from(MD5_VERIFIER, OTHER_ID, "vec5")


@pytest.mark.parametrize("verifier", [None, "", "SCRAM-SHA-256$garbage", "SCRAM-SHA-256$4096:!!$x:y", CLIENT_ID])
def test_client_id_never_matches_a_missing_or_unknown_verifier(verifier: str | None) -> None:
    assert not verifiers.made_from(verifier, CLIENT_ID, "vec")


# --- Re-runs: same identity, another identity, not an Entra role ------------------------------------


def test_flexible_same_object_id_in_any_case_changes_nothing() -> None:
    state = entra_role(object_id=OBJECT_ID.upper(), member_of=("app_readers",))
    plan = planning.plan_create(server(), state, request(member_of=("app_readers",)))
    assert verbs(plan) == ["noop", "noop", "noop"]
    assert plan.steps[0].action.reason == f"already mapped to object id {OBJECT_ID}"
    assert rendered(plan) == []


def test_flexible_another_object_id_is_refused_naming_both_and_the_way_out() -> None:
    with pytest.raises(Conflict) as refused:
        planning.plan_create(server(), entra_role(object_id=OTHER_ID), request())
    assert f"mapped to object id {OTHER_ID}, not object id {OBJECT_ID}" in str(refused.value)
    assert "--replace" in str(refused.value)


def test_replace_drops_and_recreates_and_warns_about_lost_memberships() -> None:
    state = entra_role(object_id=OTHER_ID, member_of=("app_writers",), admin_has_privileges=True)
    plan = planning.plan_create(server(), state, request(replace=True))
    assert verbs(plan) == ["replace", "grant"]
    assert rendered(plan) == [
        'DROP ROLE "myuser"',
        f"SELECT * FROM pgaadauth_create_principal_with_oid('myuser', '{OBJECT_ID}', 'service', false, false)",
        'GRANT CONNECT ON DATABASE "postgres" TO "myuser"',
    ]
    assert plan.warnings == [
        "the re-created role myuser is no longer a member of app_writers; pass --member-of to keep a membership"
    ]


def test_replace_refuses_a_role_that_owns_objects() -> None:
    owned = (Dependency(True, "postgres", True, "table public.orders"),)
    with pytest.raises(Conflict, match="owns 1 object: table public.orders") as refused:
        planning.plan_create(server(), entra_role(object_id=OTHER_ID, dependencies=owned), request(replace=True))
    assert "provision role drop --force" in str(refused.value)


@pytest.mark.parametrize("flavor", ["single", "flexible"])
@pytest.mark.parametrize("replace", [False, True])
def test_a_role_that_is_not_an_entra_role_is_always_refused(flavor: str, replace: bool) -> None:
    state = RoleState("myuser", exists=True, entra=False)
    with pytest.raises(Conflict, match="already exists and is not a Microsoft Entra role"):
        planning.plan_create(server(flavor), state, request(replace=replace))


def test_single_verified_client_id_changes_nothing() -> None:
    state = entra_role("single", "vec", verifier=SCRAM_VERIFIER)
    plan = planning.plan_create(server("single", reads_verifiers=True), state, request("vec"))
    assert verbs(plan) == ["noop", "noop"]
    assert plan.steps[0].action.reason == f"already mapped to client id {CLIENT_ID}"
    assert plan.fields["clientIdVerified"] is True


def test_single_other_client_id_is_refused_without_showing_a_verifier() -> None:
    state = entra_role("single", "vec", verifier=SCRAM_VERIFIER)
    with pytest.raises(Conflict) as refused:
        planning.plan_create(
            server("single", reads_verifiers=True), state, request("vec", identity=IdentityIds(OTHER_ID))
        )
    message = str(refused.value)
    assert f"not client id {OTHER_ID}" in message and "cannot be shown" in message and "--replace" in message
    assert "SCRAM" not in message


def test_single_unverifiable_client_id_is_reported_honestly() -> None:
    plan = planning.plan_create(server("single"), entra_role("single"), request())
    assert verbs(plan) == ["noop", "noop"]
    assert "cannot be verified" in plan.steps[0].action.reason
    assert plan.fields["clientIdVerified"] is False
    assert "only to superusers" in plan.warnings[0] and "--replace" in plan.warnings[0]


def test_single_unverifiable_with_replace_recreates() -> None:
    state = entra_role("single", admin_has_privileges=True)
    plan = planning.plan_create(server("single"), state, request(replace=True))
    assert verbs(plan) == ["replace", "grant"]
    assert rendered(plan)[:3] == [
        'DROP ROLE "myuser"',
        "SET aad_validate_oids_in_tenant = off",
        f"CREATE ROLE \"myuser\" WITH LOGIN PASSWORD '{CLIENT_ID}' IN ROLE azure_ad_user",
    ]


@pytest.mark.parametrize(
    ("flavor", "identity", "needed"),
    [("single", IdentityIds(object_id=OBJECT_ID), "--client-id"), ("flexible", IdentityIds(CLIENT_ID), "--object-id")],
)
def test_the_flavor_names_the_id_it_needs(flavor: str, identity: IdentityIds, needed: str) -> None:
    with pytest.raises(InvalidInput, match=needed):
        planning.plan_create(server(flavor), RoleState("myuser"), request(identity=identity))


# --- CONNECT on the database ------------------------------------------------------------------------


def test_connect_from_public_only_is_a_noop_that_says_so() -> None:
    plan = planning.plan_create(server(grants_connect=False), RoleState("myuser"), request())
    assert verbs(plan) == ["create", "noop"]
    assert plan.steps[1].action.reason == "the admin may not grant it; the role connects through PUBLIC"
    assert plan.warnings == []


def test_no_way_to_connect_is_refused_before_anything_runs() -> None:
    with pytest.raises(Forbidden, match="may not grant CONNECT on database postgres, and PUBLIC does not"):
        planning.plan_create(server(grants_connect=False, public_connect=False), RoleState("myuser"), request())


# --- Drop -------------------------------------------------------------------------------------------


def test_drop_of_a_missing_role_is_a_noop() -> None:
    plan = planning.plan_drop(server(), RoleState("myuser"), force=False)
    assert verbs(plan) == ["noop"] and rendered(plan) == []


def test_drop_refuses_a_role_that_is_not_an_entra_role() -> None:
    with pytest.raises(Conflict, match="not a Microsoft Entra role"):
        planning.plan_drop(server(), RoleState("app_owner", exists=True), force=True)


def test_drop_revokes_privileges_with_drop_owned_when_there_are_some() -> None:
    privileges = (Dependency(False, None, True, "database postgres"),)
    plan = planning.plan_drop(server(), entra_role(dependencies=privileges), force=False)
    assert rendered(plan) == ['GRANT "myuser" TO CURRENT_USER', 'DROP OWNED BY "myuser"', 'DROP ROLE "myuser"']


def test_drop_refuses_owned_objects_listing_them_unless_forced() -> None:
    owned = tuple(Dependency(True, "postgres", True, f"table public.t{i}") for i in range(25))
    with pytest.raises(Conflict) as refused:
        planning.plan_drop(server(), entra_role(dependencies=owned), force=False)
    message = str(refused.value)
    assert "owns 25 objects: table public.t0; table public.t1" in message
    assert "table public.t19 and 5 more" in message and "--force" in message

    plan = planning.plan_drop(server(), entra_role(dependencies=owned, admin_has_privileges=True), force=True)
    assert rendered(plan) == [
        'REASSIGN OWNED BY "myuser" TO CURRENT_USER',
        'DROP OWNED BY "myuser"',
        'DROP ROLE "myuser"',
    ]
    assert plan.fields["reassignedTo"] == "aadadmin"


def test_drop_refuses_what_it_cannot_reach_in_other_databases_even_when_forced() -> None:
    elsewhere = (Dependency(True, "sales", False, None),)
    with pytest.raises(Conflict, match="in other databases: sales"):
        planning.plan_drop(server(), entra_role(dependencies=elsewhere), force=True)


# --- Requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "--name: a role name cannot be empty"),
        ({"name": "a\x00b"}, "cannot contain NUL"),
        ({"name": "é" * 32}, "at most 63 bytes"),
        ({"member_of": ("",)}, "--member-of: a role name cannot be empty"),
        ({"member_of": ("myuser",)}, "cannot be a member of itself"),
    ],
)
def test_role_requests_are_validated(kwargs: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"name": "myuser", "identity": IdentityIds(CLIENT_ID)}
    values.update(kwargs)
    with pytest.raises(InvalidInput, match=message):
        RoleRequest(**values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_id": "not-a-guid"}, "--client-id 'not-a-guid': expected a GUID"),
        ({"object_id": "1234"}, "--object-id '1234': expected a GUID"),
    ],
)
def test_identity_ids_are_validated(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        IdentityIds(**kwargs)


def test_identity_ids_are_stored_in_lower_case_as_tokens_carry_them() -> None:
    ids = IdentityIds(CLIENT_ID.upper(), CLIENT_ID.upper())
    assert (ids.client_id, ids.object_id) == (CLIENT_ID.lower(), CLIENT_ID.lower())


# --- The administrator's login ----------------------------------------------------------------------


def test_pgpassword_wins_over_the_credential_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.azure import credentials

    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    monkeypatch.setattr(credentials, "default_credential", lambda **kwargs: pytest.fail("credential used"))
    assert admin.admin_password(roles_cloud(), None) == ("from-the-environment", "PGPASSWORD")


def test_without_pgpassword_the_token_is_for_the_clouds_database_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.azure import credentials

    asked: list[Any] = []
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr(credentials, "default_credential", lambda **kwargs: asked.append(kwargs) or "credential")
    monkeypatch.setattr(credentials, "token_for", lambda credential, scope, purpose: asked.append(scope) or "tok")
    password, source = admin.admin_password(roles_cloud("AzureChinaCloud"), CLIENT_ID)
    assert password == "tok" and source == "an access token for https://ossrdbms-aad.database.chinacloudapi.cn"
    assert asked == [
        {"managed_identity_client_id": CLIENT_ID},
        "https://ossrdbms-aad.database.chinacloudapi.cn/.default",
    ]


def roles_cloud(name: str = "AzureCloud") -> Any:
    from provision.cloud import get_cloud

    return get_cloud(name)


TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"


def test_a_refused_login_is_forbidden_and_never_shows_the_password() -> None:
    target = Target("db.example.com", "aadadmin@demo", 5432)
    error = admin.connection_error(
        f'connection failed: connection to server at "10.0.0.4", port 5432 failed: FATAL:  password authentication'
        f' failed for user "aadadmin@demo" (password {TOKEN})',
        target,
        TOKEN,
        "an access token for https://ossrdbms-aad.database.windows.net",
    )
    assert isinstance(error, Forbidden)
    assert TOKEN not in str(error) and "eyJ" not in str(error)
    assert "refused the administrator login 'aadadmin@demo'" in str(error) and "name@servername" in str(error)


def test_tls_and_other_connection_failures_are_database_errors_with_a_hint() -> None:
    target = Target("db.example.com", "aadadmin", 5432)
    error = admin.connection_error("SSL error: certificate verify failed", target, "pw", "PGPASSWORD")
    assert isinstance(error, DatabaseError) and "--sslrootcert" in str(error)
    refused = admin.connection_error("Connection refused", target, "pw", "PGPASSWORD")
    assert isinstance(refused, DatabaseError) and refused.hint is None


# --- The command line: bad input exits 2 before any connection --------------------------------------

BASE = ["role", "create", "--host", "db.example.com", "--admin-user", "aadadmin", "--name", "myuser"]


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "connect", lambda *args, **kwargs: pytest.fail("connected despite bad input"))
    from provision.azure import identities

    monkeypatch.setattr(identities, "get_identity", lambda *args: pytest.fail("Resource Manager called"))


@pytest.mark.usefixtures("no_connection")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (BASE[:-1] + ["a" * 64, "--client-id", CLIENT_ID], "--name 'aaaa"),
        (BASE + ["--client-id", "nope"], "--client-id 'nope': expected a GUID"),
        (BASE, "which identity?"),
        (BASE + ["--client-id", CLIENT_ID, "--identity", "myManagedIdentity", "-g", "rg"], "one way"),
        (BASE + ["--identity", "myManagedIdentity"], "--identity needs -g/--resource-group"),
        (BASE + ["--client-id", CLIENT_ID, "-g", "rg"], "-g/--resource-group goes with --identity"),
        (BASE + ["--identity-id", "/subscriptions/x"], "--identity-id '/subscriptions/x'"),
        (BASE + ["--identity", "bad name!", "-g", "rg"], "--identity 'bad name!'"),
        (BASE + ["--flavor", "flexible", "--client-id", CLIENT_ID], "give --object-id"),
        (BASE + ["--flavor", "single", "--object-id", OBJECT_ID], "give --client-id"),
        (BASE + ["--client-id", CLIENT_ID, "--member-of", "myuser"], "cannot be a member of itself"),
        (BASE + ["--client-id", CLIENT_ID, "--admin-client-id", "x"], "--admin-client-id 'x'"),
        (BASE + ["--client-id", CLIENT_ID, "--port", "0"], "--port '0'"),
        (BASE + ["--client-id", CLIENT_ID, "--sslmode", "prefer"], "--sslmode prefer: refused"),
        (BASE + ["--client-id", CLIENT_ID, "--sslrootcert", "/nonexistent/ca.pem"], "--sslrootcert '/nonexistent"),
        (["role", "create", "--host", "db;rm", "--admin-user", "a", "--name", "r", "--client-id", CLIENT_ID], "--host"),
        (
            ["role", "create", "--host", "h", "--admin-user", "", "--name", "r", "--client-id", CLIENT_ID],
            "--admin-user",
        ),
        (["role", "drop", "--host", "h", "--admin-user", "a", "--name", ""], "--name: a role name cannot be empty"),
        (["role", "show", "--host", "h", "--admin-user", "a", "--name", "a\x00"], "cannot contain NUL"),
        (["role", "list", "--host", "h", "--admin-user", "a", "--admin-client-id", "1"], "--admin-client-id '1'"),
        *[
            (BASE[:-1] + [name, "--client-id", CLIENT_ID], message)
            for name, message in [
                (" myuser", "cannot start or end with whitespace"),
                ("myuser\n", "cannot start or end with whitespace"),
                ("my\nuser", "U+000A"),
                ("my\u200buser", "U+200B (ZERO WIDTH SPACE)"),
                ("my\u202euser", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
                ("my\u00a0user", "U+00A0 (NO-BREAK SPACE)"),
                ("my\u2028user", "U+2028 (LINE SEPARATOR)"),
                *[
                    (reserved, "reserved by Azure or PostgreSQL")
                    for reserved in ("azure_ad_user", "azure_ad_admin", "azure_pg_admin", "azuresu")
                ],
                *[(reserved, "reserved by Azure or PostgreSQL") for reserved in ("azure_superuser", "public", "pg_x")],
                ("aadadmin", "--name 'aadadmin' is the administrator --admin-user 'aadadmin' itself"),
            ]
        ],
        *[
            (
                ["role", "create", "--host", "h", "--admin-user", "aadadmin@srv", "--flavor", "single"]
                + ["--name", name, "--client-id", CLIENT_ID],
                "is the administrator --admin-user 'aadadmin@srv' itself",
            )
            for name in ("aadadmin", "aadadmin@srv")
        ],
        *[
            (BASE + ["--client-id", CLIENT_ID, *extra], message)
            for extra, message in [
                (["--member-of", "pg_execute_server_program"], "reaches the server's operating system"),
                (["--member-of", "pg_read_server_files"], "reaches the server's operating system"),
                (["--member-of", "pg_write_server_files"], "reaches the server's operating system"),
                (
                    ["--member-of", "pg_execute_server_program", "--allow-predefined", "pg_execute_server_program"],
                    "--allow-predefined 'pg_execute_server_program': it reaches the server's operating system",
                ),
                (["--member-of", "pg_monitor"], "name it with --allow-predefined pg_monitor"),
                (["--member-of", "pg_read_all_data"], "name it with --allow-predefined pg_read_all_data"),
                (["--member-of", "azure_pg_admin"], "Azure's own role"),
                (["--member-of", "azure_ad_admin"], "Azure's own role"),
                (["--member-of", " app"], "--member-of ' app': a role name cannot start or end with whitespace"),
                (["--member-of", "app", "--allow-predefined", "app"], "not a predefined (pg_*) role"),
                (["--allow-predefined", "pg_monitor"], "not among the --member-of roles"),
            ]
        ],
    ],
)
def test_bad_input_exits_2_before_connecting(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


@pytest.mark.usefixtures("no_connection")
def test_identity_lookup_needs_a_subscription() -> None:
    result = CliRunner().invoke(cli, BASE + ["--identity", "myManagedIdentity", "-g", "rg"])
    assert result.exit_code == 2 and "--subscription (or AZURE_SUBSCRIPTION_ID) is required" in result.stderr


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """admin.connect yields a stand-in connection; roles.create_role records what it was asked."""
    calls: list[Any] = []

    @contextlib.contextmanager
    def connect(target: Target, cloud: Any, admin_client_id: str | None) -> Any:
        calls.append((target, cloud.name, admin_client_id))
        yield "connection"

    def create_role(connection: Any, flavor: str, request: RoleRequest, dry_run: bool) -> Result:
        calls.append((flavor, request, dry_run))
        action = Action("create", f"role {request.name}", "missing", {"sql": ["CREATE ROLE ..."]})
        fields = {"role": request.name, "flavor": "single", **request.identity.fields(), "statements": ["CREATE"]}
        return Result(dry_run=dry_run, actions=[action], fields=fields)

    monkeypatch.setattr(admin, "connect", connect)
    monkeypatch.setattr(roles, "create_role", create_role)
    return calls


def test_identity_by_name_reads_both_ids_from_resource_manager(
    monkeypatch: pytest.MonkeyPatch, fake_server: list[Any]
) -> None:
    from provision.azure import identities

    looked_up: list[Any] = []

    def get_identity(arm: Any, resource_group: str, name: str) -> Any:
        looked_up.append((arm.subscription, arm.endpoint, resource_group, name))
        return identities.Identity("/x", name, "westeurope", client_id=CLIENT_ID, principal_id=OBJECT_ID)

    monkeypatch.setattr(identities, "get_identity", get_identity)
    subscription = "00000000-1111-2222-3333-444444444444"
    args = ["--subscription", subscription, "--arm-endpoint", "https://127.0.0.1:1", "-o", "json"]
    result = CliRunner().invoke(cli, args + BASE + ["--identity", "myManagedIdentity", "-g", "rg"])
    assert result.exit_code == 0, result.output
    assert looked_up == [(subscription, "https://127.0.0.1:1", "rg", "myManagedIdentity")]
    assert fake_server[1][1].identity == IdentityIds(CLIENT_ID, OBJECT_ID)
    output = json.loads(result.stdout)
    assert output["clientId"] == CLIENT_ID and output["objectId"] == OBJECT_ID and output["statements"] == ["CREATE"]


def test_text_output_leaves_the_statements_to_the_dry_run(fake_server: list[Any]) -> None:
    result = CliRunner().invoke(cli, BASE + ["--client-id", CLIENT_ID])
    assert result.exit_code == 0
    assert "create: role myuser (missing)" in result.stdout and "statements" not in result.stdout

    dry = CliRunner().invoke(cli, ["--dry-run", *BASE, "--client-id", CLIENT_ID])
    assert dry.exit_code == 3
    assert "would create: role myuser (missing)\n  CREATE ROLE ..." in dry.stdout
    assert fake_server[-1][2] is True


def test_a_firewall_refusal_is_not_blamed_on_the_admin_login() -> None:
    from provision.db.admin import connection_error

    target = Target("myflex.postgres.database.azure.com", "aadadmin")
    error = connection_error(
        'connection failed: FATAL:  no pg_hba.conf entry for host "203.0.113.9", user "aadadmin"',
        target,
        "eyJ0eXAi.pw.sig",
        "x",
    )
    assert isinstance(error, DatabaseError) and not isinstance(error, Forbidden)
    assert "does not let this machine in" in str(error) and "firewall rule" in str(error)


# --- What --member-of may grant ---------------------------------------------------------------------


def reached(*path: str, can_login: bool = False, powers: tuple[str, ...] = (), grantable: bool = True) -> Reached:
    return Reached(path, can_login, powers, grantable)


@pytest.mark.parametrize(
    ("found", "message"),
    [
        (reached("app", can_login=True), "app can log in"),
        (reached("app", powers=("CREATEROLE",)), "app has CREATEROLE"),
        (reached("app", "owners", powers=("SUPERUSER", "BYPASSRLS")), "app is a member of owners, and that role has"),
        (reached("app", "team", "azure_pg_admin"), "member of team -> azure_pg_admin, and that role is Azure's"),
        (reached("app", "alice@contoso.com"), "is a Microsoft Entra administrator of the server"),
        (reached("app", "pg_read_server_files"), "reaches the server's operating system"),
        (reached("app", "pg_read_all_data"), "name it with --allow-predefined pg_read_all_data"),
        (reached("app", "replicators", powers=("REPLICATION",)), "has REPLICATION"),
        (reached("app", "creators", powers=("CREATEDB",)), "has CREATEDB"),
    ],
)
def test_a_group_that_reaches_more_than_an_ordinary_group_is_refused(found: Reached, message: str) -> None:
    with pytest.raises(Forbidden, match="^--member-of app: ") as refused:
        planning.refuse_groups(request(member_of=("app",)), [reached("app"), found], frozenset({"alice@contoso.com"}))
    assert message in str(refused.value) and "ordinary group roles only" in str(refused.value)


def test_an_allowed_predefined_role_brings_its_own_predefined_roles_but_never_the_operating_system() -> None:
    asked = request(member_of=("pg_monitor",), allow_predefined=("pg_monitor",))
    planning.refuse_groups(asked, [reached("pg_monitor"), reached("pg_monitor", "pg_read_all_stats")], frozenset())
    with pytest.raises(Forbidden, match="reaches the server's operating system"):
        planning.refuse_groups(
            asked, [reached("pg_monitor"), reached("pg_monitor", "pg_read_server_files")], frozenset()
        )


def test_ordinary_groups_pass_and_missing_ones_are_named() -> None:
    planning.refuse_groups(request(member_of=("app",)), [reached("app"), reached("app", "readers")], frozenset())
    with pytest.raises(NotFound, match="no role named nobody"):
        planning.refuse_groups(request(member_of=("app", "nobody")), [reached("app")], frozenset())


def test_a_group_the_admin_may_not_grant_is_refused_with_what_is_missing() -> None:
    ungrantable = [reached("pg_monitor", grantable=False), reached("pg_monitor", "pg_read_all_stats", grantable=False)]
    with pytest.raises(Forbidden, match="^--member-of pg_monitor: aadadmin may not grant pg_monitor") as refused:
        planning.refuse_ungrantable("aadadmin", RoleState("myuser"), ungrantable)
    assert "ADMIN OPTION" in str(refused.value) and "PostgreSQL 16" in str(refused.value)
    assert "GRANT pg_monitor TO aadadmin WITH ADMIN OPTION" in (refused.value.hint or "")
    # Already a member: nothing to grant, nothing refused; roles reached through the group are not granted.
    planning.refuse_ungrantable("aadadmin", RoleState("myuser", exists=True, member_of=("pg_monitor",)), ungrantable)
    planning.refuse_ungrantable("aadadmin", RoleState("myuser"), [reached("app"), reached("app", "x", grantable=False)])


@pytest.mark.parametrize("flavor", ["single", "flexible"])
def test_the_connected_admin_is_never_the_role_created(flavor: str) -> None:
    names = ["aadadmin", "aadadmin@mydemoserver"] if flavor == "single" else ["aadadmin"]
    for name in names:
        with pytest.raises(Conflict, match=f"--name '{name}' is the administrator aadadmin"):
            planning.plan_create(server(flavor), RoleState(name), request(name))


# --- Bounded waits ----------------------------------------------------------------------------------


def budget(seconds: float | None, remaining: float | None = None) -> Deadline:
    clock = iter([0.0] + [(seconds or 0) - (remaining if remaining is not None else seconds or 0)] * 10)
    return Deadline(seconds, clock=lambda: next(clock), option="--timeout")  # a command's budget


def test_waits_keep_their_fixed_bounds_without_a_budget_and_shrink_to_what_is_left() -> None:
    assert Bounds.within(budget(None), "x").settings() == {"statement": "60000ms", "lock": "60000ms"}
    assert Bounds.within(budget(600, remaining=2.5), "x").settings() == {"statement": "2500ms", "lock": "2500ms"}


def test_a_nearly_spent_budget_never_turns_the_timeouts_off() -> None:
    # 0 means "no timeout" to PostgreSQL: the last fraction of a millisecond must still bound the wait.
    assert Bounds.within(budget(600, remaining=0.0001), "x").settings() == {"statement": "1ms", "lock": "1ms"}


def test_a_spent_budget_starts_no_transaction() -> None:
    with pytest.raises(TimedOut, match="--timeout 600 s ran out while creating role myuser"):
        Bounds.within(budget(600, remaining=0), "creating role myuser")
