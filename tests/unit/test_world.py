"""The emulated Azure world on its own: seed, identity resources, machine updates and their operations."""

from __future__ import annotations

import time

import pytest

from provision.emulator import seed
from provision.emulator.arm.world import (
    EXISTING_CLIENT_ID,
    SCALE_SETS,
    VIRTUAL_MACHINES,
    ArmError,
    World,
)

SUB = seed.SUBSCRIPTION_ID
RG = seed.RESOURCE_GROUP


@pytest.fixture
def world() -> World:
    # Operations end at once: the next read settles them.
    return World(operation_seconds=0, token_lifetime=3600)


def identity_id(name: str, resource_group: str = RG) -> str:
    provider = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    return f"/subscriptions/{SUB}/resourceGroups/{resource_group}/{provider}/{name}"


def vm(world: World) -> dict:
    return world.get_machine(SUB, VIRTUAL_MACHINES, RG, seed.VM_NAME)


def patch_vm(world: World, identity: dict, if_match: str | None = None, fails: bool = False) -> dict:
    return world.update_machine(SUB, VIRTUAL_MACHINES, RG, seed.VM_NAME, {"identity": identity}, if_match, fails)[0]


def user_ids(machine: dict) -> list[str]:
    return sorted(k.lower() for k in machine.get("identity", {}).get("userAssignedIdentities", {}))


def error_of(call, *args) -> ArmError:
    with pytest.raises(ArmError) as caught:
        call(*args)
    return caught.value


def test_seed_vm_has_the_operator_and_the_existing_identity(world):
    machine = vm(world)
    assert machine["etag"] == '"1"'
    assert machine["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert machine["identity"]["principalId"] == seed.OPERATOR_PRINCIPAL_ID
    assert list(machine["identity"]["userAssignedIdentities"]) == [identity_id(seed.EXISTING_IDENTITY_NAME)]
    system, user = world.vm_identities()
    assert system is not None and system.client_id == seed.OPERATOR_CLIENT_ID
    assert [i.client_id for i in user] == [EXISTING_CLIENT_ID]


def test_seed_scale_set_has_a_manual_upgrade_policy_and_no_identity(world):
    scale_set = world.get_machine(SUB, SCALE_SETS, RG, seed.VMSS_NAME)
    assert scale_set["properties"]["upgradePolicy"] == {"mode": "Manual"}
    assert "identity" not in scale_set


def test_put_creates_once_and_keeps_the_ids(world):
    created, was_created = world.put_identity(SUB, RG, "id1", {"location": "West Europe", "tags": {"a": "b"}})
    again, created_again = world.put_identity(SUB, "MYRESOURCEGROUP", "ID1", {"location": "westeurope"})
    assert (was_created, created_again) == (True, False)
    assert again["properties"]["clientId"] == created["properties"]["clientId"]
    assert again["properties"]["principalId"] == created["properties"]["principalId"]
    assert (
        again["id"]
        == f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
    )
    assert created["location"] == "westeurope"
    assert again["tags"] == {}


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("id1", {}, "LocationRequired"),
        ("x", {"location": "westeurope"}, "InvalidResourceName"),
        ("bad name", {"location": "westeurope"}, "InvalidResourceName"),
        (seed.EXISTING_IDENTITY_NAME, {"location": "eastus"}, "InvalidResourceLocation"),
        ("id1", {"location": "westeurope", "tags": ["a"]}, "InvalidParameter"),
    ],
)
def test_put_refuses_bad_requests(world, name, body, code):
    error = error_of(world.put_identity, SUB, RG, name, body)
    assert (error.status, error.code) == (400, code)


def test_scope_errors(world):
    assert error_of(world.get_identity, "11111111-1111-1111-1111-111111111111", RG, "x").code == "SubscriptionNotFound"
    assert error_of(world.get_identity, SUB, "otherGroup", "x").code == "ResourceGroupNotFound"
    missing = error_of(world.get_identity, SUB, RG, "missing")
    assert (missing.status, missing.code) == (404, "ResourceNotFound")
    assert error_of(world.get_machine, SUB, VIRTUAL_MACHINES, RG, "otherVM").code == "ResourceNotFound"


def test_patch_merges_user_assigned_identities_and_keeps_the_system_one(world):
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    machine = patch_vm(
        world, {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}}
    )
    assert machine["properties"]["provisioningState"] == "Updating"
    assert machine["etag"] == '"2"'
    machine = vm(world)
    assert machine["properties"]["provisioningState"] == "Succeeded"
    assert machine["identity"]["principalId"] == seed.OPERATOR_PRINCIPAL_ID
    assert user_ids(machine) == sorted([identity_id(seed.EXISTING_IDENTITY_NAME).lower(), identity_id("id1").lower()])


def test_null_removes_one_entry_and_type_is_authoritative(world):
    existing = identity_id(seed.EXISTING_IDENTITY_NAME)
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    patch_vm(world, {"type": "UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}})
    machine = vm(world)
    assert machine["identity"]["type"] == "UserAssigned"
    assert "principalId" not in machine["identity"]
    patch_vm(world, {"type": "UserAssigned", "userAssignedIdentities": {existing.upper(): None}})
    assert user_ids(vm(world)) == [identity_id("id1").lower()]
    patch_vm(world, {"type": "None"})
    assert "identity" not in vm(world)


def test_enabling_system_assigned_again_makes_a_new_principal(world):
    patch_vm(world, {"type": "UserAssigned"})
    patch_vm(world, {"type": "SystemAssigned, UserAssigned"})
    machine = vm(world)
    assert machine["identity"]["principalId"] not in (None, seed.OPERATOR_PRINCIPAL_ID)


@pytest.mark.parametrize(
    ("identity", "code"),
    [
        ({"type": "UserAssigned", "userAssignedIdentities": {identity_id("nobody"): {}}}, "FailedIdentityOperation"),
        ({"userAssignedIdentities": {}}, "InvalidParameter"),
        ({"type": "Everything"}, "InvalidParameter"),
        (
            {"type": "SystemAssigned", "userAssignedIdentities": {identity_id(seed.EXISTING_IDENTITY_NAME): {}}},
            "InvalidParameter",
        ),
        (
            {"type": "UserAssigned", "userAssignedIdentities": {identity_id(seed.EXISTING_IDENTITY_NAME): None}},
            "InvalidParameter",
        ),
    ],
)
def test_refused_patches_change_nothing(world, identity, code):
    before = vm(world)
    error = error_of(patch_vm, world, identity)
    assert (error.status, error.code) == (400, code)
    assert vm(world) == before


def test_if_match(world):
    error = error_of(patch_vm, world, {"type": "SystemAssigned"}, '"7"')
    assert (error.status, error.code) == (412, "PreconditionFailed")
    assert patch_vm(world, {"type": "SystemAssigned"}, '"1"')["etag"] == '"2"'
    assert patch_vm(world, {"type": "SystemAssigned"}, "*")["etag"] == '"3"'


def test_an_update_in_progress_blocks_another_and_counts_only_when_done():
    world = World(operation_seconds=0.2, token_lifetime=3600)
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    patch_vm(world, {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}})
    assert len(user_ids(vm(world))) == 2
    assert len(world.vm_identities()[1]) == 1  # not effective yet
    assert error_of(patch_vm, world, {"type": "SystemAssigned"}).status == 409
    time.sleep(0.25)
    assert len(world.vm_identities()[1]) == 2
    assert vm(world)["properties"]["provisioningState"] == "Succeeded"


def test_a_failed_operation_restores_the_earlier_identities(world):
    before = user_ids(vm(world))
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    _, operation_id = world.update_machine(
        SUB,
        VIRTUAL_MACHINES,
        RG,
        seed.VM_NAME,
        {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}}},
        None,
        True,
    )
    status = world.operation_status(SUB, operation_id)
    assert status["status"] == "Failed" and status["error"]["code"]
    machine = vm(world)
    assert user_ids(machine) == before
    assert machine["properties"]["provisioningState"] == "Failed"


def test_encryption_identity_cannot_be_removed(world):
    existing = identity_id(seed.EXISTING_IDENTITY_NAME)
    body = {"properties": {"securityProfile": {"encryptionIdentity": {"userAssignedIdentityResourceId": existing}}}}
    world.update_machine(SUB, VIRTUAL_MACHINES, RG, seed.VM_NAME, body, None)
    assert (
        vm(world)["properties"]["securityProfile"]["encryptionIdentity"]["userAssignedIdentityResourceId"] == existing
    )
    error = error_of(patch_vm, world, {"type": "SystemAssigned"})
    assert (error.status, error.code) == (400, "InvalidParameter")
    assert "encryptionIdentity" in error.message


def test_scale_set_upgrade_policy_and_identity(world):
    body = {
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id(seed.EXISTING_IDENTITY_NAME): {}}},
        "properties": {"upgradePolicy": {"mode": "Automatic"}},
    }
    world.update_machine(SUB, SCALE_SETS, RG, seed.VMSS_NAME, body, None)
    scale_set = world.get_machine(SUB, SCALE_SETS, RG, seed.VMSS_NAME)
    assert scale_set["identity"]["type"] == "UserAssigned"
    assert scale_set["properties"]["upgradePolicy"] == {"mode": "Automatic"}


def test_deleted_identities_stay_listed_but_get_no_tokens(world):
    assert world.delete_identity(SUB, RG, seed.EXISTING_IDENTITY_NAME) is True
    assert world.delete_identity(SUB, RG, seed.EXISTING_IDENTITY_NAME) is False
    assert len(user_ids(vm(world))) == 1
    assert world.vm_identities()[1] == []


def test_lookup_helpers(world):
    created, _ = world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    found = world.identity_by_client_id(created["properties"]["clientId"].upper())
    assert found is not None and found.resource_id.endswith("/userAssignedIdentities/id1")
    operator = world.identity_by_client_id(seed.OPERATOR_CLIENT_ID)
    assert operator is not None and operator.principal_id == seed.OPERATOR_PRINCIPAL_ID
    assert operator.resource_id.endswith(
        f"/resourcegroups/{RG}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"
    )
    assert world.identity_by_client_id("00000000-0000-0000-0000-000000000000") is None


def test_someone_elses_change_moves_the_etag(world):
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    world.change_concurrently(SUB, VIRTUAL_MACHINES, RG, seed.VM_NAME, identity_id("id1"))
    machine = vm(world)
    assert machine["etag"] == '"2"' and identity_id("id1").lower() in user_ids(machine)
    world.change_concurrently(SUB, VIRTUAL_MACHINES, RG, seed.VM_NAME, None)
    assert vm(world)["etag"] == '"3"'


def test_reset_restores_the_seed_and_settings_and_tells_listeners(world):
    calls = []
    world.on_reset(lambda: calls.append("reset"))
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    patch_vm(world, {"type": "None"})
    world.configure(operation_seconds=3, token_lifetime=60)
    seeded = World(operation_seconds=0, token_lifetime=3600)
    world.reset()
    assert vm(world) == vm(seeded)
    assert world.list_identities(SUB, RG) == seeded.list_identities(SUB, RG)
    assert world.configure() == {"operation_seconds": 0, "token_lifetime": 3600, "imds_identity_delay": 0.0}
    assert calls == ["reset"]


# -- machines made by a PUT --------------------------------------------------------------------------


def put(world: World, name: str, body: dict, kind: str = VIRTUAL_MACHINES, if_match=None, fails=False):
    return world.put_machine(SUB, kind, RG, name, body, if_match, fails)


def test_a_put_creates_a_vm_from_a_location_alone_creating_then_succeeded():
    slow = World(operation_seconds=60, token_lifetime=3600)
    body, operation_id, created = put(slow, "vm-new", {"location": "West Europe"})
    assert created and body["properties"]["provisioningState"] == "Creating"
    assert body["location"] == "westeurope" and body["tags"] == {} and "identity" not in body
    properties = body["properties"]
    assert properties["hardwareProfile"] == {"vmSize": "Standard_D2s_v3"}
    assert properties["storageProfile"]["osDisk"]["osType"] == "Linux"
    assert properties["osProfile"]["computerName"] == "vm-new"
    assert properties["networkProfile"]["networkInterfaces"][0]["id"].endswith("/networkInterfaces/vm-newVMNic")
    assert slow.operation_status(SUB, operation_id)["status"] == "InProgress"
    world = World(operation_seconds=0, token_lifetime=3600)
    _, operation_id, _ = put(world, "vm-new", {"location": "westeurope"})
    assert world.get_machine(SUB, VIRTUAL_MACHINES, RG, "vm-new")["properties"]["provisioningState"] == "Succeeded"
    assert world.operation_status(SUB, operation_id)["status"] == "Succeeded"
    assert [m["name"] for m in world.list_machines(SUB, VIRTUAL_MACHINES)["value"]] == ["myVM", "vm-new"]


def test_a_created_vm_gets_the_identities_and_size_its_body_names(world):
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    body = {
        "location": "westeurope",
        "tags": {"a": "b"},
        "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}},
        "properties": {"hardwareProfile": {"vmSize": "Standard_B2s"}},
    }
    created = put(world, "vm-new", body)[0]
    assert created["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert user_ids(created) == [identity_id("id1").lower()]
    assert created["tags"] == {"a": "b"}
    assert created["properties"]["hardwareProfile"] == {"vmSize": "Standard_B2s"}
    assert created["identity"]["principalId"] in {i.principal_id for i in world.managed_identities()}


def test_a_second_put_replaces_the_identity_map_and_answers_not_created(world):
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    world.put_identity(SUB, RG, "id2", {"location": "westeurope"})
    both = {identity_id("id1"): {}, identity_id("id2"): {}}
    put(
        world,
        "vm-new",
        {"location": "westeurope", "identity": {"type": "UserAssigned", "userAssignedIdentities": both}},
    )
    one = {"type": "UserAssigned", "userAssignedIdentities": {identity_id("id2"): {}}}
    body, _, created = put(world, "vm-new", {"location": "westeurope", "identity": one})
    assert not created and user_ids(body) == [identity_id("id2").lower()]


def test_a_scale_set_is_created_with_its_sku_and_upgrade_policy(world):
    body = {"location": "westeurope", "sku": {"name": "Standard_B1s", "capacity": 3}}
    created = put(world, "ss-new", {**body, "properties": {"upgradePolicy": {"mode": "Automatic"}}}, SCALE_SETS)[0]
    assert created["sku"] == {"name": "Standard_B1s", "tier": "Standard", "capacity": 3}
    assert created["properties"]["upgradePolicy"] == {"mode": "Automatic"}
    assert created["properties"]["provisioningState"] == "Creating"


def test_a_failed_create_leaves_the_machine_failed_with_what_was_asked(world):
    world.put_identity(SUB, RG, "id1", {"location": "westeurope"})
    identity = {"type": "UserAssigned", "userAssignedIdentities": {identity_id("id1"): {}}}
    put(world, "vm-new", {"location": "westeurope", "identity": identity}, fails=True)
    failed = world.get_machine(SUB, VIRTUAL_MACHINES, RG, "vm-new")
    assert failed["properties"]["provisioningState"] == "Failed"
    assert user_ids(failed) == [identity_id("id1").lower()]


@pytest.mark.parametrize(
    ("name", "body", "if_match", "status", "code"),
    [
        ("vm-new", {}, None, 400, "LocationRequired"),
        ("vm-new", {"location": "mars"}, None, 400, "LocationNotAvailableForResourceType"),
        ("vm new", {"location": "westeurope"}, None, 400, "InvalidResourceName"),
        ("vm-", {"location": "westeurope"}, None, 400, "InvalidResourceName"),
        ("v" * 65, {"location": "westeurope"}, None, 400, "InvalidResourceName"),
        ("vm-new", {"location": "westeurope", "identity": {"type": "Magic"}}, None, 400, "InvalidParameter"),
        (
            "vm-new",
            {"location": "westeurope", "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/x": {}}}},
            None,
            400,
            "FailedIdentityOperation",
        ),
        (
            "vm-new",
            {"location": "westeurope", "properties": {"hardwareProfile": {"vmSize": 3}}},
            None,
            400,
            "InvalidParameter",
        ),
        ("vm-new", {"location": "westeurope", "tags": {"a": 1}}, None, 400, "InvalidParameter"),
        ("vm-new", {"location": "westeurope"}, '"1"', 412, "PreconditionFailed"),
    ],
)
def test_a_refused_create_makes_nothing(world, name, body, if_match, status, code):
    error = error_of(put, world, name, body, VIRTUAL_MACHINES, if_match)
    assert (error.status, error.code) == (status, code)
    assert [m["name"] for m in world.list_machines(SUB, VIRTUAL_MACHINES)["value"]] == [seed.VM_NAME]
    assert world.operations == {}


def test_a_scale_set_with_a_bad_capacity_is_refused(world):
    error = error_of(put, world, "ss-new", {"location": "westeurope", "sku": {"capacity": -1}}, SCALE_SETS)
    assert (error.status, error.code) == (400, "InvalidParameter")
    assert [m["name"] for m in world.list_machines(SUB, SCALE_SETS)["value"]] == [seed.VMSS_NAME]


def test_a_put_in_a_missing_group_is_refused(world):
    error = error_of(world.put_machine, SUB, VIRTUAL_MACHINES, "nogroup", "vm-new", {"location": "westeurope"}, None)
    assert (error.status, error.code) == (404, "ResourceGroupNotFound")
