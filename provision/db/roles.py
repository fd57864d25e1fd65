"""The PostgreSQL role a managed identity logs in as, on Azure Database for PostgreSQL Single and
Flexible Server.

Every command is one transaction. Writing commands first take an advisory lock on the role name, so
pipelines that create the same role at once run one after the other: the first creates it, the
others find it mapped. Each command detects the flavor, reads the role's state, plans Steps (an
Action and the SQL it needs) and runs the SQL unless it is a dry run: the same path with the writes
skipped and the transaction rolled back. All SQL text lives in the package provision.sql."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from provision import validate
from provision.db import verifiers
from provision.errors import Conflict, DatabaseError, Forbidden, InvalidInput, NotFound, ProvisionError
from provision.plan import Action, Result

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

log = logging.getLogger("provision.db")

FLAVORS = ("single", "flexible")
EVIDENCE = {"single": "role azure_ad_user", "flexible": "function pgaadauth_create_principal_with_oid"}
SINGLE_GROUP = "azure_ad_user"
SINGLE_ADMIN_GROUP = "azure_ad_admin"  # Single Server's Entra administrators
CLIENT_ID_RECORD = "provision: client id "  # the role comment that records a Single Server role's client id
ATTEMPTS = 3  # a concurrent CREATE by something that does not take our lock: re-check this often
LOCK_WAIT = "60s"  # longest wait for another run on the same role (lock_timeout)
SHOWN_OBJECTS = 20  # objects listed in a refusal; the rest are counted

T = TypeVar("T")


# --- SQL text ---------------------------------------------------------------------------------------


@functools.cache
def statements(family: str) -> dict[str, str]:
    """The named statements of sql/<family>.sql: sections start with `-- name: NAME`; comments are dropped."""
    text = resources.files("provision.sql").joinpath(f"{family}.sql").read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            current = found.setdefault(line.removeprefix("-- name:").strip(), [])
        elif line.strip() and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in found.items()}


def statement(
    family: str, name: str, identifiers: dict[str, str] | None = None, literals: dict[str, str] | None = None
) -> sql.SQL | sql.Composed:
    """One statement with its `{placeholders}` filled: names quoted as identifiers, values as literals."""
    from psycopg import sql

    text = sql.SQL(statements(family)[name])  # our own files, never user input
    if not identifiers and not literals:
        return text
    parts: dict[str, sql.Composable] = {key: sql.Identifier(value) for key, value in (identifiers or {}).items()}
    parts.update({key: sql.Literal(value) for key, value in (literals or {}).items()})
    return text.format(**parts)


def _rows(conn: psycopg.Connection, family: str, name: str, params: dict[str, Any] | None = None) -> list[dict]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(statement(family, name), params)
        return [{str(key).lower(): value for key, value in row.items()} for row in cursor.fetchall()]


# --- What the user asked for ------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityIds:
    """Which managed identity a role maps to: Single Server keys on the client id, Flexible on the object id."""

    client_id: str | None = None
    object_id: str | None = None

    def __post_init__(self) -> None:
        # Tokens carry ids in lower case: a client id stored in upper case would never match one.
        object.__setattr__(self, "client_id", validate.optional_guid(self.client_id, "--client-id"))
        object.__setattr__(self, "object_id", validate.optional_guid(self.object_id, "--object-id"))

    def fields(self) -> dict[str, Any]:
        return {"clientId": self.client_id, "objectId": self.object_id}


def require_ids(flavor: str, identity: IdentityIds) -> None:
    """InvalidInput when the flavor needs the id the user did not give."""
    if flavor == "single" and not identity.client_id:
        raise InvalidInput(
            "Single Server maps a role to the identity's client id: give --client-id,"
            " or --identity/--identity-id to read it from Resource Manager"
        )
    if flavor == "flexible" and not identity.object_id:
        raise InvalidInput(
            "Flexible Server maps a role to the identity's object (principal) id: give --object-id,"
            " or --identity/--identity-id to read it from Resource Manager"
        )


@dataclass(frozen=True)
class RoleRequest:
    name: str
    identity: IdentityIds
    member_of: tuple[str, ...] = ()
    replace: bool = False

    def __post_init__(self) -> None:
        validate.role_name(self.name)
        for group in self.member_of:
            validate.role_name(group, "--member-of")
        if self.name in self.member_of:
            raise InvalidInput(f"--member-of {self.name!r}: a role cannot be a member of itself")


# --- What the server says ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    flavor: str
    detected_by: str  # what told the flavor apart, for the output
    admin: str
    database: str
    reads_verifiers: bool  # superuser: may read pg_authid (never on Azure)
    grants_connect: bool  # the admin may grant CONNECT on this database
    public_connect: bool  # PUBLIC has CONNECT on this database

    def fields(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "detectedBy": self.detected_by, "database": self.database}


def detect(conn: psycopg.Connection, wanted: str) -> Server:
    """The flavor, from one query: Flexible has pgaadauth_create_principal_with_oid, Single has azure_ad_user."""
    (row,) = _rows(conn, "detect", "server")
    present = [flavor for flavor in FLAVORS if row[flavor]]
    if wanted == "auto":
        if len(present) == len(FLAVORS):
            raise InvalidInput(
                f"this server has both the {EVIDENCE['single']} (Single Server) and the {EVIDENCE['flexible']}"
                " (Flexible Server): choose one with --flavor"
            )
        if not present:
            raise NotFound(
                f"this server has neither the {EVIDENCE['flexible']} (Flexible Server) nor the"
                f" {EVIDENCE['single']} (Single Server)",
                hint="Is Microsoft Entra authentication enabled on the server, and is --admin-user its Entra"
                " administrator? On Flexible Server, connect to the postgres database (--database postgres).",
            )
        flavor, detected_by = present[0], f"found {EVIDENCE[present[0]]}"
    elif wanted in present:
        flavor, detected_by = wanted, f"--flavor {wanted} ({EVIDENCE[wanted]} present)"
    else:
        raise NotFound(f"--flavor {wanted}: this server has no {EVIDENCE[wanted]}")
    log.info("flavor %s: %s", flavor, detected_by)
    return Server(
        flavor,
        detected_by,
        row["admin"],
        row["database"],
        row["reads_verifiers"],
        row["grants_connect"],
        row["public_connect"],
    )


@dataclass(frozen=True)
class Dependency:
    """Something a role owns or holds privileges on (pg_shdepend)."""

    owned: bool
    database: str | None  # None: a shared object (a database, a tablespace)
    here: bool  # in the connected database or shared, so this connection can act on it
    description: str | None  # only where this connection can see the catalogs


@dataclass(frozen=True)
class RoleState:
    name: str
    exists: bool = False
    entra: bool = False  # Single: member of azure_ad_user; Flexible: registered by pgaadauth
    can_login: bool = False
    member_of: tuple[str, ...] = ()
    connect_granted: bool = False  # an explicit CONNECT grant on the connected database
    admin_has_privileges: bool = False  # the admin may act as the role (REASSIGN/DROP OWNED need it)
    object_id: str | None = None  # Flexible: the registered object id
    principal_type: str | None = None  # Flexible: service, user, group
    administrator: bool = False  # an Entra admin of the server, which Azure's control plane manages
    verifier: str | None = None  # Single: the stored password verifier, when the admin may read it
    recorded_client_id: str | None = None  # Single: the client id provision recorded when it created the role
    dependencies: tuple[Dependency, ...] = ()

    @property
    def owned(self) -> list[Dependency]:
        return [dependency for dependency in self.dependencies if dependency.owned]


def read_role(conn: psycopg.Connection, server: Server, name: str) -> RoleState:
    rows = _rows(conn, "role_state", "role", {"role": name})
    if not rows:
        return RoleState(name)
    (row,) = rows
    member_of = tuple(row["member_of"])
    dependencies = tuple(
        Dependency(dep["owned"], dep["database"], dep["here"], dep["object"])
        for dep in _rows(conn, "role_state", "dependencies", {"oid": row["oid"]})
    )
    common = {
        "exists": True,
        "can_login": row["can_login"],
        "member_of": member_of,
        "connect_granted": row["connect_granted"],
        "admin_has_privileges": row["admin_has_privileges"],
        "dependencies": dependencies,
    }
    if server.flavor == "flexible":
        principals = _rows(conn, "role_state", "principal", {"role": name})
        principal = principals[0] if principals else {}
        return RoleState(
            name,
            entra=bool(principal),
            object_id=principal.get("objectid"),
            principal_type=principal.get("principaltype"),
            administrator=bool(principal.get("isadmin")),
            **common,
        )
    verifier = None
    if server.reads_verifiers:
        (stored,) = _rows(conn, "role_state", "verifier", {"role": name})
        verifier = stored["rolpassword"]
    description = row["description"] or ""
    return RoleState(
        name,
        entra=SINGLE_GROUP in member_of,
        verifier=verifier,
        recorded_client_id=description.removeprefix(CLIENT_ID_RECORD)
        if description.startswith(CLIENT_ID_RECORD)
        else None,
        administrator=SINGLE_ADMIN_GROUP in member_of,
        **common,
    )


# --- Plans ------------------------------------------------------------------------------------------


@dataclass
class Step:
    action: Action
    sql: list[sql.SQL | sql.Composed] = field(default_factory=list)


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)


def plan_create(server: Server, state: RoleState, request: RoleRequest) -> Plan:
    """The steps that map `request.name` to the identity, grant CONNECT and the memberships; raises
    Conflict when the name is taken by another identity (without --replace) or by a non-Entra role."""
    name, identity = request.name, request.identity
    require_ids(server.flavor, identity)
    plan = Plan(fields={"role": name, **server.fields(), **identity.fields()})
    target = f"role {name}"
    if state.exists and not state.entra:
        how = f"not a member of {SINGLE_GROUP}" if server.flavor == "single" else "not registered by pgaadauth"
        raise Conflict(
            f"role {name} already exists and is not a Microsoft Entra role ({how}); it is left as it is",
            hint="Choose another --name. provision maps only roles it can tell apart from ordinary ones.",
        )
    mapped = _mapping(server, state, request, plan)
    if mapped is True:
        reason = (
            f"already mapped to client id {identity.client_id}"
            if server.flavor == "single"
            else f"already mapped to object id {identity.object_id}"
        )
        plan.steps.append(Step(Action("noop", target, reason)))
        kept = state
    elif mapped is None:  # Single Server, and the admin cannot read the verifier
        plan.steps.append(
            Step(Action("noop", target, f"already in {SINGLE_GROUP}; its client id cannot be verified here"))
        )
        plan.warnings.append(
            f"role {name} exists in {SINGLE_GROUP}, but whether its password is client id {identity.client_id}"
            f" cannot be checked: PostgreSQL shows password verifiers only to superusers, and {server.admin} is"
            " not one (on Azure the admin never is). If the identity cannot log in, run again with --replace."
        )
        kept = state
    else:
        if state.exists:
            steps = _drop_sql(
                state,
                force=False,
                hint="Drop it first with `provision role drop --force` (its objects go to the admin),"
                " then create it again",
            )
            create = Step(Action("replace", target, mapped), steps + _create_sql(server, request))
            lost = sorted(set(state.member_of) - set(request.member_of) - {SINGLE_GROUP})
            if lost:
                plan.warnings.append(
                    f"the re-created role {name} is no longer a member of {', '.join(lost)}; "
                    "pass --member-of to keep a membership"
                )
        else:
            create = Step(Action("create", target, "missing"), _create_sql(server, request))
        plan.steps.append(create)
        kept = RoleState(name, exists=True, entra=True, member_of=(SINGLE_GROUP,) if server.flavor == "single" else ())
    plan.steps.append(_connect_step(server, kept))
    plan.steps.extend(_membership_steps(kept, request.member_of))
    return plan


def _mapping(server: Server, state: RoleState, request: RoleRequest, plan: Plan) -> Literal[True] | str | None:
    """True: mapped to this identity. None: cannot tell (Single Server, verifier unreadable) and not
    asked to --replace. A string: the role must be (re-)created, and why."""
    name, identity = request.name, request.identity
    if not state.exists:
        return "missing"
    if server.flavor == "flexible":
        if (state.object_id or "").lower() == (identity.object_id or "").lower():
            return True
        current = f"object id {state.object_id}"
        wanted = f"object id {identity.object_id}"
    else:
        wanted = f"client id {identity.client_id}"
        plan.fields["clientIdVerified"] = server.reads_verifiers
        if server.reads_verifiers:
            if verifiers.made_from(state.verifier, identity.client_id or "", name):
                return True
            current = "another client id (stored only as a password verifier, so it cannot be shown)"
        elif state.recorded_client_id is not None:
            # Not the password itself, but what provision recorded beside it when it created the role.
            plan.fields["recordedClientId"] = state.recorded_client_id
            if state.recorded_client_id == identity.client_id:
                return True
            current = f"client id {state.recorded_client_id} (as recorded when provision created it)"
        else:
            return "--replace: re-created because its client id cannot be verified" if request.replace else None
    if request.replace:
        return f"--replace: mapped to {current}, re-created for {wanted}"
    raise Conflict(
        f"role {name} is already mapped to {current}, not {wanted}",
        hint="Use another --name, or --replace to drop the role and create it again for this identity"
        " (its grants and memberships go with it).",
    )


def _create_sql(server: Server, request: RoleRequest) -> list[sql.SQL | sql.Composed]:
    if server.flavor == "single":
        return [
            statement("role_create", "single_trust_client_id"),
            statement(
                "role_create",
                "single",
                identifiers={"role": request.name},
                literals={"client_id": request.identity.client_id or ""},
            ),
            statement(
                "role_create",
                "single_record_client_id",
                identifiers={"role": request.name},
                literals={"record": CLIENT_ID_RECORD + (request.identity.client_id or "")},
            ),
        ]
    return [
        statement(
            "role_create",
            "flexible",
            literals={"role": request.name, "object_id": request.identity.object_id or ""},
        )
    ]


def _connect_step(server: Server, state: RoleState) -> Step:
    target = f"CONNECT on database {server.database} to role {state.name}"
    if state.connect_granted:
        return Step(Action("noop", target, "already granted"))
    if server.grants_connect:
        return Step(
            Action("grant", target, "not granted yet"),
            [statement("role_grant", "connect", identifiers={"database": server.database, "role": state.name})],
        )
    if server.public_connect:
        return Step(Action("noop", target, "the admin may not grant it; the role connects through PUBLIC"))
    raise Forbidden(
        f"the admin {server.admin} may not grant CONNECT on database {server.database}, and PUBLIC does not have"
        f" it: role {state.name} could not log in there",
        hint=f"Ask the owner of {server.database} to grant CONNECT (or grant option) to the admin, then run again.",
    )


def _membership_steps(state: RoleState, groups: tuple[str, ...]) -> list[Step]:
    steps = []
    for group in dict.fromkeys(groups):
        target = f"membership of role {state.name} in {group}"
        if group in state.member_of:
            steps.append(Step(Action("noop", target, "already a member")))
        else:
            steps.append(
                Step(
                    Action("grant", target, "not a member yet"),
                    [statement("role_grant", "member", identifiers={"group": group, "role": state.name})],
                )
            )
    return steps


def plan_drop(server: Server, state: RoleState, force: bool) -> Plan:
    plan = Plan(fields={"role": state.name, **server.fields()})
    target = f"role {state.name}"
    if not state.exists:
        plan.steps.append(Step(Action("noop", target, "does not exist")))
        return plan
    if not state.entra:
        raise Conflict(
            f"role {state.name} is not a Microsoft Entra role; provision drops only the roles it maps",
            hint="Drop it with DROP ROLE yourself if that is what you want.",
        )
    if force and state.owned:
        plan.fields["reassignedTo"] = server.admin
    reason = f"--force: its {_objects(len(state.owned))} go to {server.admin}" if force and state.owned else "exists"
    hint = "--force reassigns them to the admin (REASSIGN OWNED) and then drops the role"
    plan.steps.append(Step(Action("delete", target, reason), _drop_sql(state, force, hint)))
    return plan


def _drop_sql(state: RoleState, force: bool, hint: str) -> list[sql.SQL | sql.Composed]:
    """The statements that drop a role, after the checks that keep DROP ROLE from failing halfway or
    taking other people's objects with it."""
    if state.administrator:
        raise Conflict(
            f"role {state.name} is a Microsoft Entra administrator of the server; provision never drops or"
            " re-creates one",
            hint="Administrators are managed on the server's Authentication settings in Azure.",
        )
    elsewhere = sorted({dep.database or "" for dep in state.dependencies if not dep.here})
    if elsewhere:
        raise Conflict(
            f"role {state.name} owns objects or holds privileges in other databases: {', '.join(elsewhere)}",
            hint="Connect to each of them and reassign or revoke those (REASSIGN OWNED BY / DROP OWNED BY), then"
            " run again.",
        )
    owned = state.owned
    if owned and not force:
        shown = [dep.description or "?" for dep in owned[:SHOWN_OBJECTS]]
        more = f" and {len(owned) - SHOWN_OBJECTS} more" if len(owned) > SHOWN_OBJECTS else ""
        raise Conflict(f"role {state.name} owns {_objects(len(owned))}: {'; '.join(shown)}{more}", hint=hint + ".")
    result = []
    if state.dependencies and not state.admin_has_privileges:
        result.append(statement("role_drop", "admin_joins", identifiers={"role": state.name}))
    if owned:
        result.append(statement("role_drop", "reassign_owned", identifiers={"role": state.name}))
    if state.dependencies:
        result.append(statement("role_drop", "drop_owned", identifiers={"role": state.name}))
    result.append(statement("role_drop", "drop", identifiers={"role": state.name}))
    return result


def _objects(count: int) -> str:
    return f"{count} object" if count == 1 else f"{count} objects"


# --- Commands ---------------------------------------------------------------------------------------


def create_role(conn: psycopg.Connection, flavor: str, request: RoleRequest, dry_run: bool) -> Result:
    """Map a role to a managed identity, grant CONNECT on the connected database and the memberships."""
    from psycopg import errors

    def attempt() -> Result:
        server = detect(conn, flavor)
        state = read_role(conn, server, request.name)
        missing = sorted(set(request.member_of) - _existing(conn, request.member_of))
        if missing:
            raise NotFound(f"--member-of: no role named {', '.join(missing)} on this server")
        return _apply(conn, plan_create(server, state, request), dry_run)

    with _explained(f"creating role {request.name}"):
        tries = 1
        while True:
            try:
                return _locked(conn, request.name, attempt, dry_run)
            except (errors.DuplicateObject, errors.UniqueViolation):
                # Created between our check and our CREATE by something that does not take our lock.
                if tries == ATTEMPTS:
                    raise
                tries += 1
                log.info("role %s appeared while creating it; reading it again", request.name)


def drop_role(conn: psycopg.Connection, flavor: str, name: str, force: bool, dry_run: bool) -> Result:
    """Drop a Microsoft Entra role; with `force`, what it owns first goes to the admin."""

    def attempt() -> Result:
        server = detect(conn, flavor)
        return _apply(conn, plan_drop(server, read_role(conn, server, name), force), dry_run)

    with _explained(f"dropping role {name}"):
        return _locked(conn, name, attempt, dry_run)


def show_role(conn: psycopg.Connection, flavor: str, name: str) -> Result:
    """One role's mapping, memberships and what it owns."""
    with _explained(f"reading role {name}"), conn.transaction():
        server = detect(conn, flavor)
        state = read_role(conn, server, name)
    if not state.exists:
        raise NotFound(f"role {name} does not exist on this server")
    fields: dict[str, Any] = {"role": name, **server.fields(), "entra": state.entra}
    if server.flavor == "flexible":
        fields.update(objectId=state.object_id, principalType=state.principal_type)
    else:
        fields.update(recordedClientId=state.recorded_client_id)
    fields.update(
        administrator=state.administrator,
        canLogin=state.can_login,
        memberOf=list(state.member_of),
        connect="granted" if state.connect_granted else "through PUBLIC" if server.public_connect else "not granted",
        ownedObjects=len(state.owned),
    )
    return Result(fields=fields)


def list_roles(conn: psycopg.Connection, flavor: str) -> Result:
    """Every Microsoft Entra principal: pgaadauth_list_principals on Flexible, azure_ad_user's members on Single."""
    with _explained("listing roles"), conn.transaction():
        server = detect(conn, flavor)
        rows = _rows(conn, "principals", server.flavor)
    if server.flavor == "flexible":
        principals = [
            {
                "role": row.get("rolname"),
                "type": row.get("principaltype"),
                "objectId": row.get("objectid"),
                "admin": bool(row.get("isadmin")),
            }
            for row in rows
        ]
    else:
        principals = [{"role": row["role"], "canLogin": row["can_login"]} for row in rows]
    return Result(fields={**server.fields(), "principals": principals})


def _existing(conn: psycopg.Connection, names: tuple[str, ...]) -> set[str]:
    if not names:
        return set()
    return {row["rolname"] for row in _rows(conn, "role_state", "existing", {"roles": list(names)})}


def _locked(conn: psycopg.Connection, name: str, body: Callable[[], T], dry_run: bool) -> T:
    """Run `body` in one transaction that holds the role name's advisory lock; a dry run rolls back."""
    import psycopg

    with conn.transaction() as transaction:
        conn.execute(statement("lock", "timeout"), {"wait": LOCK_WAIT})
        try:
            conn.execute(statement("lock", "role"), {"role": name})
        except psycopg.errors.LockNotAvailable:
            raise Conflict(
                f"another session has held the lock on role {name} for {LOCK_WAIT} (another provision run,"
                " or a transaction left open); nothing was changed",
                hint="Run again once it has finished; pg_locks shows who holds the advisory lock.",
            ) from None
        result = body()
        if dry_run:
            raise psycopg.Rollback(transaction)
    return result


def _apply(conn: psycopg.Connection, plan: Plan, dry_run: bool) -> Result:
    """Run each step's SQL (or, in a dry run, only render it) and describe what was done."""
    rendered: list[str] = []
    for step in plan.steps:
        texts = [composed.as_string(conn) for composed in step.sql]
        if texts:
            step.action.request = {"sql": texts}
        for composed, text in zip(step.sql, texts, strict=True):
            if not dry_run:
                log.info("running: %s", text)
                conn.execute(composed)
        rendered.extend(texts)
    return Result(
        dry_run=dry_run,
        actions=[step.action for step in plan.steps],
        fields={**plan.fields, "statements": rendered},
        warnings=plan.warnings,
    )


@contextlib.contextmanager
def _explained(subject: str) -> Iterator[None]:
    """PostgreSQL errors as messages that say what was refused."""
    import psycopg
    from psycopg import errors

    try:
        yield
    except ProvisionError:
        raise
    except errors.InsufficientPrivilege as error:
        raise Forbidden(
            f"PostgreSQL refused {subject}: {_message(error)}",
            hint="The admin needs CREATEROLE and the right to grant the roles involved; on Azure, connect as the"
            " server's Microsoft Entra administrator.",
        ) from None
    except psycopg.Error as error:
        if isinstance(error, psycopg.OperationalError) and (error.sqlstate or "57P").startswith("57P"):
            # The session ended (the server stopped or terminated it, or the network went): its open
            # transaction was rolled back, or its commit had gone through; a re-run finishes the job.
            raise DatabaseError(
                f"the connection to PostgreSQL was lost while {subject} ({_message(error)}); an unfinished"
                " transaction changes nothing: run the command again"
            ) from None
        raise DatabaseError(f"PostgreSQL failed {subject}: {_message(error)}") from None


def _message(error: psycopg.Error) -> str:
    text = error.diag.message_primary or str(error)
    detail = error.diag.message_detail
    return f"{text} ({detail})" if detail else text
