"""A machine's system-assigned identity through Microsoft.ManagedIdentity, driven by the real SDK
(azure-mgmt-msi's system_assigned_identities.get_by_scope): served for VMs and scale sets that have one,
Azure's 404 for those that do not."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError
from test_emulator_arm import RG, SUB, VM_PATH, compute_client, msi_client, raw

from provision.emulator import seed

pytestmark = pytest.mark.integration

SCALE_SET_PATH = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{seed.VMSS_NAME}"
)


@pytest.fixture
def env(fresh_emulator, emulator_environ):
    fresh_emulator.set_operation_seconds(0)
    return emulator_environ


def test_the_seed_vms_system_assigned_identity(env):
    identity = msi_client(env).system_assigned_identities.get_by_scope(VM_PATH.lstrip("/"))
    assert identity.id == f"{VM_PATH}/providers/Microsoft.ManagedIdentity/identities/default"
    assert (identity.name, identity.type, identity.location) == (
        "default",
        "Microsoft.ManagedIdentity/identities",
        seed.LOCATION,
    )
    assert (identity.principal_id, identity.client_id) == (seed.OPERATOR_PRINCIPAL_ID, seed.OPERATOR_CLIENT_ID)
    assert identity.tenant_id == seed.TENANT_ID
    assert identity.client_secret_url.startswith(
        f"https://control-{seed.LOCATION}.identity.azure.net{VM_PATH}/credentials?"
    )


def test_a_scale_set_without_one_gets_404_then_one_after_it_is_enabled(env):
    client = msi_client(env)
    with pytest.raises(ResourceNotFoundError) as missing:
        client.system_assigned_identities.get_by_scope(SCALE_SET_PATH.lstrip("/"))
    assert missing.value.error.code == "ResourceNotFound"
    compute = compute_client(env).virtual_machine_scale_sets
    updated = compute.begin_update(RG, seed.VMSS_NAME, {"identity": {"type": "SystemAssigned"}}).result()
    identity = client.system_assigned_identities.get_by_scope(SCALE_SET_PATH.lstrip("/"))
    assert identity.principal_id == updated.identity.principal_id


def test_a_created_vm_has_one_only_when_its_body_asks_for_it(env):
    vms = compute_client(env).virtual_machines
    with_one = {"location": seed.LOCATION, "identity": {"type": "SystemAssigned"}}
    created = vms.begin_create_or_update(RG, "vm-system", with_one).result()
    vms.begin_create_or_update(RG, "vm-plain", {"location": seed.LOCATION}).result()
    group = f"subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines"
    identities = msi_client(env).system_assigned_identities
    assert identities.get_by_scope(f"{group}/vm-system").principal_id == created.identity.principal_id
    with pytest.raises(ResourceNotFoundError):
        identities.get_by_scope(f"{group}/vm-plain")


def test_a_missing_machine_and_a_write_are_refused(env):
    path = f"{VM_PATH}x/providers/Microsoft.ManagedIdentity/identities/default"
    missing = raw(env, "GET", path, api_version="2024-11-30")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "ResourceNotFound")
    write = raw(
        env, "PUT", f"{VM_PATH}/providers/Microsoft.ManagedIdentity/identities/default", {}, api_version="2024-11-30"
    )
    assert write.status_code == 405
