"""Machines made by a PUT, driven by the real SDK (azure-mgmt-compute's begin_create_or_update): a minimal
body, Azure's 201 and Creating -> Succeeded, the profiles Compute fills in, PUT semantics for identity on an
existing machine, Azure's permissions, and refused bodies that make nothing."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from test_emulator_arm import IDENTITIES_PATH, RG, SUB, compute_client, create_identity, raw, user_ids

from provision.emulator import seed

pytestmark = pytest.mark.integration

GROUP = f"/subscriptions/{SUB}/resourceGroups/{RG}"
OPERATOR = seed.OPERATOR_PRINCIPAL_ID
MISSING = f"{IDENTITIES_PATH}/nobody"  # an identity that does not exist


@pytest.fixture
def env(fresh_emulator, emulator_environ):
    fresh_emulator.set_operation_seconds(0.2)
    return emulator_environ


def machine_names(emulator, kind: str = "virtualMachines") -> list[str]:
    listed = raw(emulator.env, "GET", f"{GROUP}/providers/Microsoft.Compute/{kind}", api_version="2024-11-01")
    return sorted(m["name"] for m in listed.json()["value"])


def test_begin_create_or_update_makes_a_vm_from_a_location(env, fresh_emulator):
    mark = fresh_emulator.mark()
    vm = compute_client(env).virtual_machines.begin_create_or_update(RG, "vm-new", {"location": "westeurope"}).result()
    assert vm.provisioning_state == "Succeeded"
    assert vm.hardware_profile.vm_size == "Standard_D2s_v3"
    assert vm.storage_profile.os_disk.os_type == "Linux" and vm.storage_profile.image_reference.publisher
    assert vm.os_profile.computer_name == "vm-new"
    assert vm.network_profile.network_interfaces[0].id.endswith("/networkInterfaces/vm-newVMNic")
    writes = [r for r in fresh_emulator.requests(since=mark, service="arm") if r["method"] == "PUT"]
    assert [w["status"] for w in writes] == [201]
    assert "vm-new" in machine_names(fresh_emulator)


def test_the_first_answer_says_creating(env):
    response = raw(
        env, "PUT", f"{GROUP}/providers/Microsoft.Compute/virtualMachines/vm-new", {"location": "westeurope"}
    )
    assert response.status_code == 201
    assert response.json()["properties"]["provisioningState"] == "Creating"
    assert "Retry-After" not in response.headers and "Azure-AsyncOperation" in response.headers


def test_begin_create_or_update_makes_a_scale_set(env):
    body = {"location": "westeurope", "sku": {"name": "Standard_B1s", "capacity": 3}}
    scale_set = compute_client(env).virtual_machine_scale_sets.begin_create_or_update(RG, "ss-new", body).result()
    assert scale_set.provisioning_state == "Succeeded"
    assert (scale_set.sku.name, scale_set.sku.capacity) == ("Standard_B1s", 3)
    assert scale_set.upgrade_policy.mode == "Manual"


def test_a_created_vm_with_identities_then_a_put_that_replaces_them(env):
    first, second = create_identity(env, "id-one"), create_identity(env, "id-two")
    client = compute_client(env)
    both = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {first: {}, second: {}}}
    vm = client.virtual_machines.begin_create_or_update(RG, "vm-new", {"location": "westeurope", "identity": both})
    created = vm.result()
    assert created.identity.type == "SystemAssigned, UserAssigned" and user_ids(created) == sorted(
        [first.lower(), second.lower()]
    )
    created.identity = {"type": "UserAssigned", "userAssignedIdentities": {second: {}}}
    replaced = client.virtual_machines.begin_create_or_update(RG, "vm-new", created).result()
    assert replaced.identity.type == "UserAssigned" and user_ids(replaced) == [second.lower()]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "LocationRequired"),
        ({"location": "mars"}, "LocationNotAvailableForResourceType"),
        ({"location": "westeurope", "identity": {"type": "UserAssigned", "userAssignedIdentities": {MISSING: {}}}},
         "FailedIdentityOperation"),
    ],
)  # fmt: skip
def test_a_refused_create_makes_nothing(env, fresh_emulator, body, code):
    with pytest.raises(HttpResponseError) as refused:
        compute_client(env).virtual_machines.begin_create_or_update(RG, "vm-new", body).result()
    assert (refused.value.status_code, refused.value.error.code) == (400, code)
    assert machine_names(fresh_emulator) == [seed.VM_NAME]


def test_a_bad_name_is_refused(env, fresh_emulator):
    response = raw(env, "PUT", f"{GROUP}/providers/Microsoft.Compute/virtualMachines/vm-", {"location": "westeurope"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "InvalidResourceName")
    assert machine_names(fresh_emulator) == [seed.VM_NAME]


def test_creating_needs_write_permission_and_assign_on_each_identity(env, fresh_emulator):
    other = create_identity(env, "id-other")
    fresh_emulator.grant(OPERATOR, "Reader", f"/subscriptions/{SUB}")
    fresh_emulator.revoke(OPERATOR, "Owner", f"/subscriptions/{SUB}")
    try:
        with pytest.raises(HttpResponseError) as no_write:
            compute_client(env).virtual_machines.begin_create_or_update(RG, "vm-new", {"location": "westeurope"})
        assert no_write.value.status_code == 403 and no_write.value.error.code == "AuthorizationFailed"
        assert "'Microsoft.Compute/virtualMachines/write'" in no_write.value.error.message
        fresh_emulator.grant(OPERATOR, "Virtual Machine Contributor", GROUP)
        attach = {"type": "UserAssigned", "userAssignedIdentities": {other: {}}}
        with pytest.raises(HttpResponseError) as no_assign:
            compute_client(env).virtual_machines.begin_create_or_update(
                RG, "vm-new", {"location": "westeurope", "identity": attach}
            )
        assert no_assign.value.status_code == 403 and no_assign.value.error.code == "LinkedAuthorizationFailed"
        assert machine_names(fresh_emulator) == [seed.VM_NAME]
    finally:
        fresh_emulator.reset()
    assert raw(env, "GET", f"{IDENTITIES_PATH}/id-other", api_version="2024-11-30").status_code == 404
