"""Azure's permissions in the emulated subscription: built-in roles, role assignments of principals at
scopes, and the checks Resource Manager makes before a request reaches its resource provider.

Principals are known by object id (a token's `oid`): the operator (myVM's system-assigned identity, Owner
of the subscription by default), every managed identity, anyone tests grant a role to. A request needs its
action on its scope; a machine write also needs `Microsoft.ManagedIdentity/userAssignedIdentities/assign/
action` on every user-assigned identity its body names (the linked scopes).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from provision.emulator import seed
from provision.emulator.arm.world import MACHINE_KINDS, ArmError

ASSIGN_IDENTITY = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"


@dataclass(frozen=True)
class Role:
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()


# The built-in roles' actions that concern this emulator, as learn.microsoft.com lists them
# (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/: privileged.md, general.md,
# identity.md, compute.md; Virtual Machine Contributor as Role Definitions - List answers it).
ROLES = {
    "Owner": Role(("*",)),
    "Contributor": Role(
        ("*",),
        (
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ),
    ),
    "Reader": Role(("*/read",)),
    "Managed Identity Contributor": Role(
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/revokeTokens/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
        )
    ),
    "Managed Identity Operator": Role(
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
        )
    ),
    "Virtual Machine Contributor": Role(
        (
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/availabilitySets/*",
            "Microsoft.Compute/locations/*",
            "Microsoft.Compute/virtualMachines/*",
            "Microsoft.Compute/virtualMachineScaleSets/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        )
    ),
}

SUBSCRIPTION_SCOPE = f"/subscriptions/{seed.SUBSCRIPTION_ID}"
# Resource Manager's own types, in the casing its action names use.
RESOURCE_TYPES = {t.lower(): t for t in ("subscriptions", "resourceGroups", "locations")}


@dataclass(frozen=True)
class RoleAssignment:
    principal: str  # object id, lower case
    role: str
    scope: str  # as given, without a trailing slash

    def covers(self, scope: str) -> bool:
        """Whether this assignment applies at `scope`: its own scope and everything below it."""
        mine, theirs = self.scope.lower(), scope.rstrip("/").lower()
        return theirs == mine or theirs.startswith(mine + "/")


def role_permits(role: Role, action: str) -> bool:
    return any(action_matches(p, action) for p in role.actions) and not any(
        action_matches(p, action) for p in role.not_actions
    )


def action_matches(pattern: str, action: str) -> bool:
    """Azure's action wildcards, ignoring case: `*` stands for any characters, and `/*/` also for a single `/`
    (Managed Identity Operator reads identities, `userAssignedIdentities/read`, with `userAssignedIdentities/*/read`
    alone: built-in-roles/identity.md, "Read and Assign User Assigned Identity")."""
    regex = "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern))
    regex = regex.replace("/.*/", "/(?:.*/)?")
    return re.fullmatch(regex, action, re.IGNORECASE) is not None


def required_action(method: str, path: str) -> str:
    """The action a request needs: `{namespace}/{type}[/{child type}...]/read|write|delete`, the types taken
    from the path after its last `providers` (Resource Manager's own types before any)."""
    segments = [s for s in path.split("/") if s]
    verb = {"GET": "read", "DELETE": "delete"}.get(method.upper(), "write")
    lower = [s.lower() for s in segments]
    if "providers" not in lower:
        types = [RESOURCE_TYPES.get(s.lower(), s) for s in segments[0::2]]
        return "/".join(["Microsoft.Resources", *types, verb])
    at = len(lower) - 1 - lower[::-1].index("providers")
    return "/".join([segments[at + 1], *segments[at + 2 :: 2], verb])


def linked_identities(method: str, path: str, body: Any) -> list[str]:
    """The user-assigned identities a machine write asks to have: the keys of its `userAssignedIdentities` with
    a value. Resource Manager checks assign/action on each identity the request names, whether or not the machine
    already has it: a VM CreateOrUpdate naming four identities, all attached earlier, was refused listing all
    four as linked scopes (Azure/aad-pod-identity#339). An entry set to null removes, so assigns nothing."""
    lower = [s.lower() for s in path.split("/") if s]
    kinds = {k.lower() for k in MACHINE_KINDS}
    is_machine = len(lower) == 8 and lower[4:6] == ["providers", "microsoft.compute"] and lower[6] in kinds
    if method.upper() not in ("PUT", "PATCH") or not is_machine or not isinstance(body, dict):
        return []
    identity = body.get("identity")
    identities = identity.get("userAssignedIdentities") if isinstance(identity, dict) else None
    if not isinstance(identities, dict):
        return []
    return [resource_id for resource_id, value in identities.items() if value is not None]


def _checked(path: str) -> bool:
    """Whether Resource Manager authorizes this request here. Not: paths outside the emulated subscription
    (their route answers SubscriptionNotFound or no such resource type), and Compute's operation status, which
    the writer polls: a Virtual Machine Contributor of one resource group completes `az vm update`."""
    lower = [s.lower() for s in path.split("/") if s]
    if len(lower) < 2 or lower[0] != "subscriptions" or lower[1] != seed.SUBSCRIPTION_ID:
        return False
    return lower[2:5] != ["providers", "microsoft.compute", "locations"]


class Directory:
    """The role assignments of the subscription, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Back to the seed's assignments: the operator is Owner of the subscription; the CI pipeline's service
        principal is Contributor of the resource group it deploys to, as Microsoft Learn's pipeline module grants
        one (training/modules/authenticate-azure-deployment-pipeline-service-principals, "Grant a service principal
        access to Azure"), which lets it assign the identities there too."""
        with self._lock:
            self._assignments = [
                RoleAssignment(seed.OPERATOR_PRINCIPAL_ID, "Owner", SUBSCRIPTION_SCOPE),
                RoleAssignment(
                    seed.CI_PRINCIPAL_ID, "Contributor", f"{SUBSCRIPTION_SCOPE}/resourceGroups/{seed.RESOURCE_GROUP}"
                ),
            ]

    def assignments(self) -> list[dict[str, str]]:
        with self._lock:
            return [asdict(a) for a in self._assignments]

    def grant(self, spec: Any, principals: Iterable[str]) -> dict[str, str]:
        assignment = _assignment(spec, principals)
        with self._lock:
            if assignment not in self._assignments:
                self._assignments.append(assignment)
        return asdict(assignment)

    def revoke(self, spec: Any, principals: Iterable[str]) -> dict[str, str]:
        assignment = _assignment(spec, principals)
        with self._lock:
            if assignment not in self._assignments:
                raise ArmError(404, "RoleAssignmentNotFound", f"No such role assignment: {asdict(assignment)}.")
            self._assignments.remove(assignment)
        return asdict(assignment)

    def permits(self, principal: str, action: str, scope: str) -> bool:
        with self._lock:
            held = [a for a in self._assignments if a.principal == principal.lower() and a.covers(scope)]
        return any(role_permits(ROLES[a.role], action) for a in held)

    def authorize(self, principal: str, method: str, path: str, body: Any) -> None:
        """Nothing when the caller may make this request; else Azure's 403, worded as Azure words it:
        AuthorizationFailed (MicrosoftDocs/azure-docs#77897) or LinkedAuthorizationFailed, naming every identity
        the caller may not assign (Azure/aad-pod-identity#613, #339)."""
        if not _checked(path):
            return
        action = required_action(method, path)
        if not self.permits(principal, action, path):
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{principal}' with object id '{principal}' does not have authorization to perform"
                f" action '{action}' over scope '{path}' or the scope is invalid. If access was recently granted,"
                " please refresh your credentials.",
            )
        refused = [i for i in linked_identities(method, path, body) if not self.permits(principal, ASSIGN_IDENTITY, i)]
        if refused:
            raise ArmError(
                403,
                "LinkedAuthorizationFailed",
                f"The client '{principal}' with object id '{principal}' has permission to perform action '{action}'"
                f" on scope '{path}'; however, it does not have permission to perform action '{ASSIGN_IDENTITY}'"
                f" on the linked scope(s) '{','.join(refused)}' or the linked scope(s) are invalid.",
            )


def _assignment(spec: Any, principals: Iterable[str]) -> RoleAssignment:
    """A role assignment from an admin request {principal, role, scope}, validated as Azure validates one."""
    if not isinstance(spec, dict) or set(spec) != {"principal", "role", "scope"}:
        raise ArmError(400, "InvalidRoleAssignment", "a role assignment is {principal, role, scope}")
    principal, role, scope = spec["principal"], spec["role"], spec["scope"]
    try:
        principal = str(uuid.UUID(str(principal)))
    except ValueError:
        raise ArmError(400, "InvalidPrincipalId", f"The principal id '{principal}' is not a GUID.") from None
    if principal not in {p.lower() for p in principals}:
        # Azure's answer to an assignment for an unknown principal (azure-cli's role assignment create retries
        # while a new one replicates, on " does not exist in the directory ").
        raise ArmError(
            400,
            "PrincipalNotFound",
            f"Principal {principal.replace('-', '')} does not exist in the directory {seed.TENANT_ID}.",
        )
    if role not in ROLES:
        raise ArmError(400, "RoleDefinitionDoesNotExist", f"The role '{role}' is not one of: {', '.join(ROLES)}.")
    if not isinstance(scope, str) or not RoleAssignment("", role, SUBSCRIPTION_SCOPE).covers(scope):
        raise ArmError(400, "InvalidScope", f"The scope '{scope}' is not in subscription {seed.SUBSCRIPTION_ID}.")
    return RoleAssignment(principal, role, scope.rstrip("/"))
