"""The emulator's permissions on their own: action wildcards, the action a request needs, scopes, and the
identities a machine write links."""

from __future__ import annotations

import pytest

from provision.emulator import seed
from provision.emulator.arm.world import ArmError
from provision.emulator.directory import (
    ASSIGN_IDENTITY,
    ROLES,
    Directory,
    RoleAssignment,
    action_matches,
    linked_identities,
    required_action,
    role_permits,
)

SUB = f"/subscriptions/{seed.SUBSCRIPTION_ID}"
GROUP = f"{SUB}/resourceGroups/{seed.RESOURCE_GROUP}"
VM = f"{GROUP}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"
IDENTITY = f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app"
OPERATOR = seed.OPERATOR_PRINCIPAL_ID
IDENTITIES = "Microsoft.ManagedIdentity/userAssignedIdentities"


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("*", "Microsoft.Compute/virtualMachines/write", True),
        ("*/read", "Microsoft.Compute/virtualMachines/read", True),
        ("*/read", "Microsoft.Compute/virtualMachines/write", False),
        (f"{IDENTITIES}/*/read", f"{IDENTITIES}/read", True),
        (f"{IDENTITIES}/*/read", f"{IDENTITIES}/federatedIdentityCredentials/read", True),
        (f"{IDENTITIES}/*/assign/action", ASSIGN_IDENTITY, True),
        (f"{IDENTITIES}/*/assign/action", f"{IDENTITIES}/write", False),
        ("Microsoft.Compute/virtualMachines/*", "microsoft.compute/VIRTUALMACHINES/write", True),
        ("Microsoft.Compute/virtualMachines/*", "Microsoft.Compute/virtualMachineScaleSets/write", False),
        ("Microsoft.Authorization/*/Write", "Microsoft.Authorization/roleAssignments/write", True),
    ],
)  # fmt: skip
def test_action_wildcards(pattern: str, action: str, matches: bool) -> None:
    assert action_matches(pattern, action) is matches


@pytest.mark.parametrize(
    ("role", "action", "permitted"),
    [
        ("Contributor", ASSIGN_IDENTITY, True),
        ("Contributor", "Microsoft.Authorization/roleAssignments/write", False),
        ("Reader", "Microsoft.ManagedIdentity/userAssignedIdentities/read", True),
        ("Reader", "Microsoft.ManagedIdentity/userAssignedIdentities/write", False),
        ("Managed Identity Contributor", "Microsoft.ManagedIdentity/userAssignedIdentities/write", True),
        ("Managed Identity Contributor", ASSIGN_IDENTITY, False),
        ("Managed Identity Operator", ASSIGN_IDENTITY, True),
        ("Managed Identity Operator", "Microsoft.ManagedIdentity/userAssignedIdentities/write", False),
        ("Virtual Machine Contributor", "Microsoft.Compute/virtualMachineScaleSets/write", True),
        ("Virtual Machine Contributor", ASSIGN_IDENTITY, False),
    ],
)  # fmt: skip
def test_built_in_roles(role: str, action: str, permitted: bool) -> None:
    assert role_permits(ROLES[role], action) is permitted


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("GET", SUB, "Microsoft.Resources/subscriptions/read"),
        ("GET", f"{SUB}/locations", "Microsoft.Resources/subscriptions/locations/read"),
        ("GET", GROUP.lower(), "Microsoft.Resources/subscriptions/resourceGroups/read"),
        ("PATCH", VM, "Microsoft.Compute/virtualMachines/write"),
        ("DELETE", IDENTITY, "Microsoft.ManagedIdentity/userAssignedIdentities/delete"),
        ("PUT", f"{IDENTITY}/federatedIdentityCredentials/x",
         "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write"),
        ("PATCH", f"{IDENTITY}/providers/Microsoft.Resources/tags/default", "Microsoft.Resources/tags/write"),
        ("GET", f"{SUB}/providers/Microsoft.Compute/virtualMachines", "Microsoft.Compute/virtualMachines/read"),
    ],
)  # fmt: skip
def test_the_action_a_request_needs(method: str, path: str, action: str) -> None:
    assert required_action(method, path) == action


def test_an_assignment_covers_its_scope_and_below_only() -> None:
    assignment = RoleAssignment(OPERATOR, "Reader", GROUP)
    assert assignment.covers(GROUP.lower() + "/") and assignment.covers(VM)
    assert not assignment.covers(SUB) and not assignment.covers(GROUP + "2")


def test_a_machine_write_links_the_identities_it_names_with_a_value() -> None:
    body = {"identity": {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}, "/gone": None}}}
    assert linked_identities("PATCH", VM, body) == [IDENTITY]
    assert linked_identities("PUT", VM.replace("virtualMachines", "virtualMachineScaleSets"), body) == [IDENTITY]
    assert linked_identities("GET", VM, body) == []
    assert linked_identities("PATCH", IDENTITY, body) == []
    assert linked_identities("PATCH", VM, "not json") == []


def test_authorize_names_only_the_identities_the_caller_may_not_assign() -> None:
    directory = Directory()
    other = IDENTITY.replace("/app", "/other")
    directory.grant({"principal": OPERATOR, "role": "Virtual Machine Contributor", "scope": VM}, [OPERATOR])
    directory.grant({"principal": OPERATOR, "role": "Managed Identity Operator", "scope": IDENTITY}, [OPERATOR])
    directory.revoke({"principal": OPERATOR, "role": "Owner", "scope": SUB}, [OPERATOR])
    body = {"identity": {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}, other: {}}}}
    with pytest.raises(ArmError) as refused:
        directory.authorize(OPERATOR, "PATCH", VM, body)
    assert refused.value.code == "LinkedAuthorizationFailed"
    assert f"linked scope(s) '{other}' or" in refused.value.message
    with pytest.raises(ArmError) as refused:
        directory.authorize(OPERATOR, "GET", GROUP, None)
    assert refused.value.code == "AuthorizationFailed"
    directory.reset()
    directory.authorize(OPERATOR, "PATCH", VM, body)  # Owner again
