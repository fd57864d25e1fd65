"""The plans: from what was asked and what the server says, the Steps (an Action and the SQL it
needs) that make it so, or the refusal. Pure: nothing here talks to the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provision.db import verifiers
from provision.db.roles.flavor import Server
from provision.db.roles.request import (
    AZURE_ADMIN_ROLES,
    OS_ROLES,
    PREDEFINED_PREFIX,
    SINGLE_GROUP,
    RoleRequest,
    require_ids,
)
from provision.db.roles.sql_text import statement
from provision.db.roles.state import CLIENT_ID_RECORD, Reached, RoleState
from provision.errors import Conflict, Forbidden, NotFound
from provision.plan import Action

if TYPE_CHECKING:
    from psycopg import sql

SHOWN_OBJECTS = 20  # objects listed in a refusal; the rest are counted


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
    if name == server.admin or (server.flavor == "single" and name.startswith(server.admin + "@")):
        # Single Server logs the admin in as name@server: that form names the admin too.
        raise Conflict(f"--name {name!r} is the administrator {server.admin} this command connected as")
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


def refuse_groups(request: RoleRequest, reached: list[Reached], admins: frozenset[str]) -> None:
    """NotFound for a --member-of group that does not exist; Forbidden for one that gives more than an
    ordinary group: a member can SET ROLE to every role the group reaches, so each of them must be harmless."""
    missing = sorted(set(request.member_of) - {found.group for found in reached})
    if missing:
        raise NotFound(f"--member-of: no role named {', '.join(missing)} on this server")
    for found in reached:
        why = _why_refused(found, request.allow_predefined, admins)
        if why:
            through = "" if len(found.path) == 1 else f"is a member of {' -> '.join(found.path[1:])}, and that role "
            raise Forbidden(
                f"--member-of {found.group}: {found.group} {through}{why}; provision grants ordinary group roles only",
                hint="Grant it yourself if this identity really needs it, or choose a group without these powers.",
            )


def refuse_ungrantable(admin: str, state: RoleState, reached: list[Reached]) -> None:
    """Forbidden, before any write, for a --member-of group the role is not in yet and the admin may
    not grant: from PostgreSQL 16 that takes ADMIN OPTION on the group, which CREATEROLE no longer
    implies (Azure Flexible Server 16+ answers "permission denied to grant role", e.g.
    Azure/azure-service-operator#4639)."""
    for found in reached:
        if len(found.path) == 1 and not found.grantable and found.group not in state.member_of:
            raise Forbidden(
                f"--member-of {found.group}: {admin} may not grant {found.group}: from PostgreSQL 16 granting a"
                f" role takes ADMIN OPTION on it, and {admin} has none on {found.group}",
                hint=f"Ask a role that holds ADMIN OPTION on {found.group} to run"
                f" `GRANT {found.group} TO {admin} WITH ADMIN OPTION` (for a PostgreSQL predefined role on Azure,"
                " that is the service itself: Azure support), or to grant it to the role directly; or choose a"
                f" group {admin} created (its creator holds ADMIN OPTION on it). Then run again.",
            )


def _why_refused(found: Reached, allowed: tuple[str, ...], admins: frozenset[str]) -> str | None:
    role = found.role
    if role in AZURE_ADMIN_ROLES:
        return "is Azure's administrators' role"
    if role in admins:
        return "is a Microsoft Entra administrator of the server"
    if found.can_login:
        return "can log in"
    if found.powers:
        return f"has {', '.join(found.powers)}"
    if role in OS_ROLES:
        return "reaches the server's operating system"
    if role.startswith(PREDEFINED_PREFIX) and not set(found.path) & set(allowed):
        return f"is a PostgreSQL predefined role (name it with --allow-predefined {role} to grant it)"
    return None


# What Flexible Server's pgaadauth_create_principal_with_oid answers when Microsoft Entra ID does not know the
# object id as a service principal, in Azure's words (its SQLSTATE is XX000, internal_error, for both):
# MicrosoftDocs/azure-docs#117206 (unknown object) and #102814 (another type).
UNKNOWN_OBJECT = "Could not validate AAD user "
WRONG_TYPE = "incorrect object type provided for principal"
OBJECT_ID_HINT = (
    "--object-id takes the managed identity's object (principal) id: `provision identity show -g RG -n NAME` prints"
    " it as principalId, or give --identity NAME -g RG and provision reads it. Nothing was changed."
)


def entra_refusal(message: str, object_id: str) -> NotFound | Conflict | None:
    """The refusal to report when the server's message is Entra's answer about `object_id`; else None."""
    if message.startswith(UNKNOWN_OBJECT):
        return NotFound(
            f"the server's Microsoft Entra tenant has no object with id {object_id} (a client id is not an object"
            f" id): PostgreSQL said {message!r}",
            hint=OBJECT_ID_HINT,
        )
    if message.startswith(WRONG_TYPE):
        return Conflict(
            f"object id {object_id} is not a service principal (a managed identity) in the server's Microsoft Entra"
            f" tenant: PostgreSQL said {message!r}",
            hint=OBJECT_ID_HINT,
        )
    return None
