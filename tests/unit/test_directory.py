"""The emulator's directory on its own: Entra's objects; permissions (action wildcards, the action a request
needs, scopes, and the identities a machine write links)."""

from __future__ import annotations

import pytest

from provision.emulator import seed
from provision.emulator.arm.world import SCALE_SETS, ArmError, World
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
from provision.emulator.entra import GROUP as GROUP_TYPE
from provision.emulator.entra import SERVICE_PRINCIPAL, USER, DirectoryObject, Entra

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


# -- Entra's objects ------------------------------------------------------------------------------


@pytest.fixture
def entra() -> Entra:
    return Entra(World(operation_seconds=0, token_lifetime=3600))


def test_the_seeded_tenant_holds_users_groups_and_a_service_principal_per_managed_identity(entra: Entra) -> None:
    objects = {o.display_name: o for o in entra.objects()}
    assert objects[seed.USER_NAME] == DirectoryObject(seed.USER_PRINCIPAL_ID, seed.USER_NAME, USER)
    assert objects[seed.GROUP_NAME] == DirectoryObject(seed.GROUP_PRINCIPAL_ID, seed.GROUP_NAME, GROUP_TYPE)
    assert objects[seed.CI_NAME] == DirectoryObject(
        seed.CI_PRINCIPAL_ID, seed.CI_NAME, SERVICE_PRINCIPAL, seed.CI_CLIENT_ID
    )
    # myVM's system-assigned identity (the operator), named after its machine, and the existing identity.
    assert objects[seed.VM_NAME] == DirectoryObject(
        seed.OPERATOR_PRINCIPAL_ID, seed.VM_NAME, SERVICE_PRINCIPAL, seed.OPERATOR_CLIENT_ID
    )
    assert objects[seed.EXISTING_IDENTITY_NAME].type == SERVICE_PRINCIPAL
    assert set(objects) == {seed.USER_NAME, seed.GROUP_NAME, seed.CI_NAME, seed.VM_NAME, seed.EXISTING_IDENTITY_NAME}


def test_an_identity_brings_its_service_principal_and_takes_it_away() -> None:
    world = World(operation_seconds=0, token_lifetime=3600)
    entra = Entra(world)
    created, _ = world.put_identity(seed.SUBSCRIPTION_ID, seed.RESOURCE_GROUP, "app1", {"location": seed.LOCATION})
    found = entra.find(created["properties"]["principalId"].upper())
    assert found == DirectoryObject(
        created["properties"]["principalId"], "app1", SERVICE_PRINCIPAL, created["properties"]["clientId"]
    )
    assert entra.find(created["properties"]["clientId"]) is None  # a client id is not an object id
    assert entra.find_by_name("APP1") == found
    world.delete_identity(seed.SUBSCRIPTION_ID, seed.RESOURCE_GROUP, "app1")
    assert entra.find(found.object_id) is None
    assert entra.find_by_name("app1") is None


def test_a_machines_system_assigned_identity_is_a_service_principal() -> None:
    world = World(operation_seconds=0, token_lifetime=3600)
    entra = Entra(world)
    body = {"identity": {"type": "SystemAssigned"}}
    world.update_machine(seed.SUBSCRIPTION_ID, SCALE_SETS, seed.RESOURCE_GROUP, seed.VMSS_NAME, body, None)
    scale_set = world.get_machine(seed.SUBSCRIPTION_ID, SCALE_SETS, seed.RESOURCE_GROUP, seed.VMSS_NAME)
    found = entra.find(scale_set["identity"]["principalId"])
    assert found is not None and (found.display_name, found.type) == (seed.VMSS_NAME, SERVICE_PRINCIPAL)


def test_users_and_groups_are_added_until_the_reset(entra: Entra) -> None:
    user = entra.add({"type": "User", "displayName": "bob@contoso.com"})
    group = entra.add({"type": "Group", "displayName": "readers"})
    assert (user.type, group.type) == (USER, GROUP_TYPE)
    assert entra.find(user.object_id) == user and entra.find_by_name("Readers") == group
    assert {user.object_id, group.object_id} <= entra.object_ids()
    entra.reset()
    assert entra.find(user.object_id) is None and entra.find(group.object_id) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "User"}, "a directory object is"),
        ({"type": "ServicePrincipal", "displayName": "x"}, "User or Group"),
        ({"type": "Group", "displayName": " "}, "non-empty"),
        ("bob", "a directory object is"),
    ],
)
def test_a_bad_directory_object_is_refused(entra: Entra, spec: object, message: str) -> None:
    before = entra.objects()
    with pytest.raises(ValueError, match=message):
        entra.add(spec)
    assert entra.objects() == before
