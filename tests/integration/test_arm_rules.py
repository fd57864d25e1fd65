"""Resource Manager's rules end to end, the real CLI and SDK against the emulator: the cloud metadata a
custom endpoint serves, tags merged without lost updates, the machines `identity delete` checks, and a
wrong subscription told apart from a missing identity (Azure's 403s: test_permissions)."""

from __future__ import annotations

import json
import ssl
import urllib.request
from typing import Any

import pytest
from helpers import writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
EXISTING = seed.EXISTING_IDENTITY_NAME
OTHER_SUBSCRIPTION = "99999999-1111-2222-3333-444444444444"


def existing_id() -> str:
    return (
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourcegroups/{RG}"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{EXISTING}"
    )


@pytest.fixture
def arm(fresh_emulator: Any, emulator_environ: dict[str, str]) -> Any:
    from provision.azure.arm import Arm

    with Arm.from_options(seed.SUBSCRIPTION_ID, "AzureCloud", emulator_environ["PROVISION_ARM_ENDPOINT"]) as opened:
        yield opened


def test_metadata_endpoints_need_no_token_and_give_the_audience_the_tool_uses(fresh_emulator: Any) -> None:
    base = fresh_emulator.env["PROVISION_ARM_ENDPOINT"]
    context = ssl.create_default_context(cafile=fresh_emulator.env["REQUESTS_CA_BUNDLE"])
    with urllib.request.urlopen(f"{base}/metadata/endpoints?api-version=2022-09-01", context=context) as response:
        metadata = json.loads(response.read())
    assert metadata["resourceManager"] == base
    # Both, in the order Azure lists them: the tool and az ask for the first.
    assert metadata["authentication"]["audiences"] == ["https://management.core.windows.net/", seed.ARM_AUDIENCE]

    mark = fresh_emulator.mark()
    result = fresh_emulator.run("identity", "show", "-g", RG, "-n", EXISTING)
    assert result.returncode == 0, result.stderr
    [discovery] = [r for r in fresh_emulator.requests(since=mark) if r["path"] == "/metadata/endpoints"]
    assert "authorization" not in {name.lower() for name in discovery["headers"]}

    mark = fresh_emulator.mark()
    given = fresh_emulator.run("--arm-audience", seed.ARM_AUDIENCE, "identity", "show", "-g", RG, "-n", EXISTING)
    assert given.returncode == 0, given.stderr
    assert [r for r in fresh_emulator.requests(since=mark) if r["path"] == "/metadata/endpoints"] == []


def test_two_pipelines_adding_tags_from_the_same_read_keep_both(arm: Any, fresh_emulator: Any) -> None:
    from provision.azure import identities

    msi = arm.identity_client()
    fresh_emulator.run("identity", "create", "-g", RG, "-n", "tagged", "--tag", "owner=team-a")
    first_read = identities.read_identity(msi, arm, RG, "tagged")
    second_read = identities.read_identity(msi, arm, RG, "tagged")
    assert first_read is not None and second_read is not None
    # Both pipelines read before either wrote: the race a full PUT of the tag set loses.
    identities.ensure_identity(msi, arm, RG, "tagged", "westeurope", {"env": "prod"}, False, first_read)
    identities.ensure_identity(msi, arm, RG, "tagged", "westeurope", {"cost": "42"}, False, second_read)
    assert msi.user_assigned_identities.get(RG, "tagged").tags == {"owner": "team-a", "env": "prod", "cost": "42"}


def test_tags_merge_by_name_ignoring_case(fresh_emulator: Any) -> None:
    fresh_emulator.run("identity", "create", "-g", RG, "-n", "tagged", "--tag", "Env=test")
    result = fresh_emulator.run("-o", "json", "identity", "create", "-g", RG, "-n", "tagged", "--tag", "ENV=prod")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tags"] == {"Env": "prod"}


def test_a_region_the_subscription_offers_is_accepted(fresh_emulator: Any) -> None:
    result = fresh_emulator.run("-o", "json", "identity", "create", "-g", RG, "-n", "northern", "-l", "North Europe")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["location"] == "northeurope"


@pytest.mark.parametrize("command", ["delete", "show", "assign"])
def test_a_wrong_subscription_is_an_error_not_a_missing_identity(fresh_emulator: Any, command: str) -> None:
    extra = ["--vm", seed.VM_NAME] if command == "assign" else []
    mark = fresh_emulator.mark()
    result = fresh_emulator.run("--subscription", OTHER_SUBSCRIPTION, "identity", command, "-g", RG, "-n", EXISTING,
                                *extra)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"subscription {OTHER_SUBSCRIPTION} was not found" in result.stderr
    assert "does not exist" not in result.stdout + result.stderr and "Create it with" not in result.stderr
    assert writes(fresh_emulator, mark) == []


def test_machines_are_listed_per_subscription_and_per_group(arm: Any) -> None:
    compute = arm.compute_client()
    assert [vm.name for vm in compute.virtual_machines.list_all()] == [seed.VM_NAME]
    assert [vm.name for vm in compute.virtual_machines.list(RG)] == [seed.VM_NAME]
    assert [s.name for s in compute.virtual_machine_scale_sets.list_all()] == [seed.VMSS_NAME]
    assert [s.name for s in compute.virtual_machine_scale_sets.list(RG)] == [seed.VMSS_NAME]


def test_delete_refuses_the_disk_encryption_identity_of_a_vm(arm: Any, fresh_emulator: Any) -> None:
    encryption = {"securityProfile": {"encryptionIdentity": {"userAssignedIdentityResourceId": existing_id()}}}
    arm.compute_client().virtual_machines.begin_update(RG, seed.VM_NAME, {"properties": encryption}).result()
    mark = fresh_emulator.mark()
    result = fresh_emulator.run("identity", "delete", "-g", RG, "-n", EXISTING)
    assert result.returncode == 1
    assert f"VM {seed.VM_NAME} (resource group {RG})" in result.stderr and "encryption" in result.stderr
    assert writes(fresh_emulator, mark) == []
    listed = [r["path"] for r in fresh_emulator.requests(since=mark, service="arm") if "/virtualMachine" in r["path"]]
    assert sorted(listed) == sorted(
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/providers/Microsoft.Compute/{kind}"
        for kind in ("virtualMachines", "virtualMachineScaleSets")
    )


def test_delete_of_an_attached_identity_names_the_machines(fresh_emulator: Any) -> None:
    result = fresh_emulator.run("-o", "json", "identity", "delete", "-g", RG, "-n", EXISTING)
    assert result.returncode == 0, result.stderr
    assert f"VM {seed.VM_NAME} (resource group {RG})" in result.stderr
    assert json.loads(result.stdout)["changed"] is True
