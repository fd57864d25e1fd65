"""`bind` and `unbind`: a user-assigned identity, attached to a machine, with its PostgreSQL role and
grants, as one idempotent step, and its symmetric undoing.

Order: identity, then attach, then role and grants (the role needs the identity's ids). `bind` plans
the whole step first (a dry run of both sides), so a refusal on the database side (a role mapped to
another identity, a missing group or schema) is found before anything is created in Azure."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision import validate
from provision.azure import identities, machines
from provision.azure.arm import Arm, resource_group_location
from provision.azure.machines import Machine
from provision.db import grants as grants_
from provision.db.grants import Grant
from provision.errors import Conflict
from provision.plan import Action, Result
from provision.validate import IdentityId

if TYPE_CHECKING:
    import psycopg
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient

    from provision.db.roles import IdentityIds, RoleRequest

Connect = Callable[[str], contextlib.AbstractContextManager["psycopg.Connection"]]  # to one database
# Roles are made through this database: Flexible Server has its pgaadauth functions only there
# (learn.microsoft.com/azure/postgresql/flexible-server/how-to-manage-azure-ad-users); grants go to the
# binding's database.
ROLE_DATABASE = "postgres"
Waiter = Callable[[float], None] | None
CREATED_BY = {identities.CREATED_BY_TAG: "provision"}


@dataclass(frozen=True)
class Binding:
    """One identity on one machine with one role: validated when made, before any request."""

    resource_group: str
    identity: str
    machine: Machine
    role: str
    member_of: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    database: str = ROLE_DATABASE  # where the grants are

    def __post_init__(self) -> None:
        validate.resource_group(self.resource_group)
        validate.identity_name(self.identity, "--identity")
        self.role_request(None)  # the role name and its groups, by the role commands' rules

    def role_request(self, ids: IdentityIds | None) -> RoleRequest:
        from provision.db.roles import IdentityIds, RoleRequest

        return RoleRequest(self.role, ids or IdentityIds(), self.member_of)

    def identity_id(self, subscription: str) -> str:
        return str(IdentityId(subscription, self.resource_group, self.identity))

    @property
    def label(self) -> str:
        return f"{self.identity} -> {self.machine.label} -> role {self.role}"


@dataclass(frozen=True)
class Databases:
    """The connections a binding's database side uses: roles through ROLE_DATABASE, grants in its own."""

    roles: psycopg.Connection
    grants: psycopg.Connection


@contextlib.contextmanager
def databases(connect: Connect, database: str) -> Iterator[Databases]:
    with contextlib.ExitStack() as stack:
        roles = stack.enter_context(connect(ROLE_DATABASE))
        yield Databases(roles, roles if database == ROLE_DATABASE else stack.enter_context(connect(database)))


# --- the steps, each usable alone (the manifest runs them phase by phase) ---------------------------


def ensure_identity(
    arm: Arm, msi: ManagedServiceIdentityClient, compute: ComputeManagementClient, binding: Binding, dry_run: bool
) -> tuple[identities.Identity, Action]:
    """The identity, created (tagged as provision's) when missing; an existing one is used as it is."""
    current = identities.read_identity(msi, arm, binding.resource_group, binding.identity)
    location = current.location if current else resource_group_location(compute, arm, binding.resource_group)
    tags = CREATED_BY if current is None else {}
    return identities.ensure_identity(
        msi, arm, binding.resource_group, binding.identity, location, tags, dry_run, current
    )


def ensure_role(
    conns: Databases, flavor: str, binding: Binding, identity: identities.Identity, dry_run: bool
) -> Result:
    """The role mapped to the identity, its memberships and grants (a transaction each)."""
    from provision.db import roles

    if identity.client_id is None:  # a dry run, and the identity is not created yet: its ids are unknown
        result = Result(dry_run=dry_run)
        result.add(
            Action("create", f"role {binding.role}", f"mapped to identity {binding.identity} once Azure creates it")
        )
    else:
        ids = roles.IdentityIds(identity.client_id, identity.principal_id)
        result = roles.create_role(conns.roles, flavor, binding.role_request(ids), dry_run)
        result.fields.pop("statements", None)
    granted = grants_.converge(conns.grants, binding.role, binding.grants, revoke=False, dry_run=dry_run)
    result.actions.extend(granted.actions)
    return result


def remove_role(
    conns: Databases, flavor: str, binding: Binding, identity: identities.Identity | None, dry_run: bool
) -> Result:
    """Revoke the declared grants and drop the role, only when it is this identity's role."""
    from provision.db import roles

    if identity is not None:
        _refuse_foreign_role(conns.roles, flavor, binding, identity)
    result = grants_.converge(conns.grants, binding.role, binding.grants, revoke=True, dry_run=dry_run)
    dropped = roles.drop_role(conns.roles, flavor, binding.role, force=False, dry_run=dry_run)
    result.actions.extend(dropped.actions)
    result.warnings.extend(dropped.warnings)
    return result


def _refuse_foreign_role(
    conn: psycopg.Connection, flavor: str, binding: Binding, identity: identities.Identity
) -> None:
    from provision.db import roles
    from provision.errors import NotFound

    try:
        shown = roles.show_role(conn, flavor, binding.role).fields
    except NotFound:
        return
    mapped = shown.get("objectId") or shown.get("recordedClientId")
    if mapped and mapped.lower() not in {(identity.principal_id or "").lower(), (identity.client_id or "").lower()}:
        raise Conflict(
            f"role {binding.role} is mapped to another identity ({mapped}), not {binding.identity}; left as it is",
            hint="Check the role name: unbind drops only the role of this identity.",
        )


def delete_identity(
    arm: Arm,
    msi: ManagedServiceIdentityClient,
    binding: Binding,
    dry_run: bool,
    warn: Callable[[str], None],
    machines: Callable[[], identities.Listing] | None = None,
) -> Action:
    """Delete the identity only when provision created it (its tag says so)."""
    current = identities.read_identity(msi, arm, binding.resource_group, binding.identity)
    target = f"identity {binding.identity}"
    if current is None:
        return Action("noop", target, "does not exist")
    if current.tags.get(identities.CREATED_BY_TAG) != CREATED_BY[identities.CREATED_BY_TAG]:
        return Action("noop", target, f"kept: provision did not create it (no tag {identities.CREATED_BY_TAG})")
    _, action = identities.delete_identity(
        msi, arm, binding.resource_group, binding.identity, dry_run, warn, machines, current
    )
    return action


# --- bind and unbind --------------------------------------------------------------------------------


def bind(arm: Arm, connect: Connect, flavor: str, binding: Binding, dry_run: bool, on_wait: Waiter = None) -> Result:
    """Identity, attach, role and grants; planned in full (a dry run of every step) before any write."""
    with databases(connect, binding.database) as conns:
        planned = _bind(arm, conns, flavor, binding, True, on_wait)
        if dry_run or not planned.changed:
            return planned
        return _bind(arm, conns, flavor, binding, False, on_wait)


def _bind(arm: Arm, conns: Databases, flavor: str, binding: Binding, dry_run: bool, on_wait: Waiter) -> Result:
    msi, compute = arm.identity_client(), arm.compute_client()
    result = Result(dry_run=dry_run)
    # The machine first: a typo in its name must not leave an orphan identity behind.
    state = machines.read_machine(compute, arm, binding.machine)
    identity, action = ensure_identity(arm, msi, compute, binding, dry_run)
    result.add(action)
    result.fields.update(_fields(binding, identity))
    applied = machines.attach(compute, arm, binding.machine, identity.id, dry_run, on_wait, state)
    result.add(applied.action)
    role = ensure_role(conns, flavor, binding, identity, dry_run)
    result.actions.extend(role.actions)
    result.warnings.extend(role.warnings)
    return result


def unbind(
    arm: Arm,
    connect: Connect,
    flavor: str,
    binding: Binding,
    delete: bool,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    """Revoke, drop the role, detach; with `delete`, delete the identity if provision created it."""
    msi, compute = arm.identity_client(), arm.compute_client()
    result = Result(dry_run=dry_run)
    identity = identities.read_identity(msi, arm, binding.resource_group, binding.identity)
    with databases(connect, binding.database) as conns:
        role = remove_role(conns, flavor, binding, identity, dry_run)
    result.actions.extend(role.actions)
    result.warnings.extend(role.warnings)
    identity_id = identity.id if identity else binding.identity_id(arm.subscription)
    result.add(machines.detach(compute, arm, binding.machine, identity_id, dry_run, on_wait).action)
    if delete:
        result.add(delete_identity(arm, msi, binding, dry_run, result.warnings.append))
    result.fields.update(_fields(binding, identity))
    return result


def _fields(binding: Binding, identity: identities.Identity | None) -> dict[str, Any]:
    return {
        "identity": binding.identity,
        "clientId": identity.client_id if identity else None,
        "principalId": identity.principal_id if identity else None,
        "machine": {"kind": binding.machine.kind, "name": binding.machine.name},
        "role": binding.role,
    }
