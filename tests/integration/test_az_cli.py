"""The real Azure CLI (the pinned azure-cli that `make az` installs in .cache/venv-az), unchanged, against the
local Azure stack: the walkthrough's commands, and az and provision taking turns on one VM.

Each test signs az in from scratch in its own configuration directory, the way env.sh tells a user to:
`az cloud register` (endpoints discovered from /metadata/endpoints), `az cloud set`, `az login --identity`."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import AZ, require_installed

from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_PRINCIPAL_ID
from provision.emulator.keys import Authority
from provision.emulator.stack import AZ_CLOUD_NAME

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
VM = seed.VM_NAME


def identity_id(name: str) -> str:
    return (
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourcegroups/{RG}"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


class AzureCli:
    """`az` with the emulator's variables and its own configuration directory."""

    def __init__(self, emulator: Any, config_dir: Path) -> None:
        self.emulator = emulator
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AZURE_")},
            **emulator.env,
            "AZURE_CONFIG_DIR": str(config_dir),
        }

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(AZ), *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == expect, f"az {' '.join(args)}: exit {done.returncode}\n{done.stderr}{done.stdout}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout or "null")

    def sign_in(self, *login: str) -> Any:
        endpoint = self.emulator.env["PROVISION_ARM_ENDPOINT"]
        self.run("cloud", "register", "-n", AZ_CLOUD_NAME, "--endpoint-resource-manager", endpoint)
        self.run("cloud", "set", "-n", AZ_CLOUD_NAME)
        return self.json("login", "--identity", *login)


@pytest.fixture
def az(fresh_emulator: Any, tmp_path: Path) -> AzureCli:
    require_installed(AZ, "the Azure CLI", "az")
    return AzureCli(fresh_emulator, tmp_path / "az")


def machine_path(kind: str = "virtualMachines", name: str = VM) -> str:
    return f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}/providers/Microsoft.Compute/{kind}/{name}"


def arm_call(
    emulator: Any,
    method: str,
    path: str,
    body: Any = None,
    audience: str = seed.ARM_AUDIENCE,
    api_version: str = "2024-11-01",
) -> Any:
    """A request straight to the emulated Resource Manager with a token its own authority signs (neither az nor
    provision in between): the JSON answer, or HTTPError."""
    operator = {
        "client_id": seed.OPERATOR_CLIENT_ID,
        "principal_id": seed.OPERATOR_PRINCIPAL_ID,
        "resource_id": machine_path(),
    }
    token = Authority.load_or_create(emulator.directory).mint_token(audience, operator, 600)[0]
    separator = "&" if "?" in path else "?"
    request = urllib.request.Request(
        f"{emulator.env['PROVISION_ARM_ENDPOINT']}{path}{separator}api-version={api_version}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=emulator.env["REQUESTS_CA_BUNDLE"])
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.loads(response.read() or b"null")


def vm_state(emulator: Any, kind: str = "virtualMachines", name: str = VM) -> tuple[str | None, list[str], dict]:
    """The machine's identity type, user-assigned identity names and tags, as the emulator has them."""
    body = arm_call(emulator, "GET", machine_path(kind, name))
    identity = body.get("identity") or {}
    names = sorted(key.rsplit("/", 1)[-1] for key in identity.get("userAssignedIdentities") or {})
    return identity.get("type"), names, body.get("tags") or {}


def test_resource_manager_takes_tokens_for_both_management_audiences(fresh_emulator: Any) -> None:
    for audience in ("https://management.core.windows.net/", seed.ARM_AUDIENCE):
        listed = arm_call(fresh_emulator, "GET", "/subscriptions", audience=audience)
        assert [s["subscriptionId"] for s in listed["value"]] == [seed.SUBSCRIPTION_ID]
    [tenant] = arm_call(fresh_emulator, "GET", "/tenants")["value"]
    assert tenant["tenantId"] == seed.TENANT_ID


def test_a_vm_put_replaces_the_identity_map_and_the_tags(fresh_emulator: Any) -> None:
    fresh_emulator.set_operation_seconds(0)  # each PUT's operation ends at once, so the next may follow
    identities = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity"
    identity = {"location": seed.LOCATION}
    arm_call(fresh_emulator, "PUT", f"{identities}/userAssignedIdentities/other", identity, api_version="2024-11-30")
    vm = arm_call(fresh_emulator, "GET", machine_path())
    vm["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity_id("other"): {}}}
    vm["tags"] = {"only": "this"}
    arm_call(fresh_emulator, "PUT", machine_path(), vm)
    assert vm_state(fresh_emulator) == ("UserAssigned", ["other"], {"only": "this"})
    del vm["tags"]
    arm_call(fresh_emulator, "PUT", machine_path(), vm)
    assert vm_state(fresh_emulator) == ("UserAssigned", ["other"], {})


def test_resource_list_narrowed_by_the_filter_az_sends(fresh_emulator: Any) -> None:
    path = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resources?$filter=" + urllib.parse.quote(
        f"resourceGroup eq '{RG}' and resourceType eq 'Microsoft.Compute/virtualMachines'"
    )
    assert [r["name"] for r in arm_call(fresh_emulator, "GET", path)["value"]] == [VM]
    with pytest.raises(urllib.error.HTTPError) as refused:
        arm_call(fresh_emulator, "GET", f"/subscriptions/{seed.SUBSCRIPTION_ID}/resources?$filter=tagName%20eq%20'x'")
    assert refused.value.code == 400


@pytest.fixture
def quick_polls(fresh_emulator: Any) -> None:
    """Retry-After: 1 on every Resource Manager answer, so that az polls its operations each second instead of
    every 30 s (real Compute sends none; the benchmark measures az without this)."""
    fresh_emulator.fault("retry_after", count=None, retry_after=1)


@pytest.mark.slow
def test_the_walkthrough_with_the_real_az(az: AzureCli, quick_polls: None) -> None:
    [account] = az.sign_in()
    assert (account["id"], account["tenantId"]) == (seed.SUBSCRIPTION_ID, seed.TENANT_ID)
    assert account["user"] == {
        "assignedIdentityInfo": "MSI",
        "name": "systemAssignedIdentity",
        "type": "servicePrincipal",
    }
    assert az.json("account", "show")["environmentName"] == AZ_CLOUD_NAME

    created = az.json("identity", "create", "-g", RG, "-n", "myManagedIdentity")
    assert created["id"] == identity_id("myManagedIdentity")
    assert az.json("identity", "show", "-g", RG, "-n", "myManagedIdentity")["clientId"] == created["clientId"]
    assert "myManagedIdentity" in [i["name"] for i in az.json("identity", "list", "-g", RG)]
    assert "myManagedIdentity" in [i["name"] for i in az.json("identity", "list")]

    assigned = az.json("vm", "identity", "assign", "-g", RG, "-n", VM, "--identities", "myManagedIdentity")
    assert {k.rsplit("/", 1)[-1] for k in assigned["userAssignedIdentities"]} == {
        "myManagedIdentity",
        seed.EXISTING_IDENTITY_NAME,
    }
    shown = az.json("vm", "identity", "show", "-g", RG, "-n", VM)
    assert shown["type"] == "SystemAssigned, UserAssigned"
    assert vm_state(az.emulator)[:2] == (
        "SystemAssigned, UserAssigned",
        [seed.EXISTING_IDENTITY_NAME, "myManagedIdentity"],
    )

    az.run("vm", "identity", "remove", "-g", RG, "-n", VM, "--identities", "myManagedIdentity")
    assert vm_state(az.emulator)[:2] == ("SystemAssigned, UserAssigned", [seed.EXISTING_IDENTITY_NAME])
    az.run("identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert "myManagedIdentity" not in [i["name"] for i in az.json("identity", "list", "-g", RG)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "login",
    [
        ("--client-id", "3f0c2d5e-8a41-4b7c-9e26-51d8a7b4c0f3"),
        ("--resource-id", identity_id(seed.EXISTING_IDENTITY_NAME)),
    ],
    ids=["client-id", "resource-id"],
)
def test_az_login_as_a_user_assigned_identity(az: AzureCli, login: tuple[str, str]) -> None:
    # As on Azure, the identity reads the group only with a role there.
    az.emulator.grant(EXISTING_PRINCIPAL_ID, "Reader", f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}")
    [account] = az.sign_in(*login)
    assert account["user"]["name"] == "userAssignedIdentity"
    assert account["id"] == seed.SUBSCRIPTION_ID
    # The token it got is one Resource Manager takes: a read works.
    assert az.json("group", "show", "-g", RG)["name"] == RG


@pytest.mark.slow
def test_az_and_provision_take_turns_on_one_vm_and_nothing_else_is_lost(az: AzureCli, quick_polls: None) -> None:
    emulator = az.emulator
    az.sign_in()
    az.run("identity", "create", "-g", RG, "-n", "azIdentity", "-o", "none")
    az.run("vm", "identity", "assign", "-g", RG, "-n", VM, "--identities", "azIdentity", "-o", "none")

    done = emulator.run("identity", "create", "-g", RG, "-n", "provisionIdentity", "--vm", VM)
    assert done.returncode == 0, done.stderr
    assert vm_state(emulator)[:2] == (
        "SystemAssigned, UserAssigned",
        ["azIdentity", seed.EXISTING_IDENTITY_NAME, "provisionIdentity"],
    )

    az.run("vm", "identity", "remove", "-g", RG, "-n", VM, "--identities", "azIdentity", "-o", "none")
    assert vm_state(emulator)[:2] == (
        "SystemAssigned, UserAssigned",
        [seed.EXISTING_IDENTITY_NAME, "provisionIdentity"],
    )
    shown = az.json("vm", "identity", "show", "-g", RG, "-n", VM)
    assert shown["principalId"] == seed.OPERATOR_PRINCIPAL_ID


@pytest.mark.slow
def test_az_scale_set_identity_assign_show_remove(az: AzureCli, quick_polls: None) -> None:
    az.sign_in()
    az.run("identity", "create", "-g", RG, "-n", "setIdentity", "-o", "none")
    az.run("vmss", "identity", "assign", "-g", RG, "-n", seed.VMSS_NAME, "--identities", "setIdentity", "-o", "none")
    assert az.json("vmss", "identity", "show", "-g", RG, "-n", seed.VMSS_NAME)["type"] == "UserAssigned"
    assert vm_state(az.emulator, "virtualMachineScaleSets", seed.VMSS_NAME)[:2] == ("UserAssigned", ["setIdentity"])
    az.run("vmss", "identity", "remove", "-g", RG, "-n", seed.VMSS_NAME, "--identities", "setIdentity")
    assert vm_state(az.emulator, "virtualMachineScaleSets", seed.VMSS_NAME)[:2] == (None, [])


@pytest.mark.slow
def test_az_reads_machines_groups_locations_and_resources(az: AzureCli) -> None:
    az.sign_in()
    vm = az.json("vm", "show", "-g", RG, "-n", VM)
    assert vm["hardwareProfile"]["vmSize"] and vm["storageProfile"]["osDisk"]["osType"] == "Linux"
    assert vm["osProfile"]["computerName"] == VM and vm["networkProfile"]["networkInterfaces"]
    details = az.json("vm", "show", "-d", "-g", RG, "-n", VM)
    assert (details["powerState"], details["privateIps"]) == ("VM running", "10.0.0.4")
    assert [m["name"] for m in az.json("vm", "list")] == [VM]
    assert [m["name"] for m in az.json("vm", "list", "-g", RG)] == [VM]
    [listed] = az.json("vm", "list", "-d")
    assert listed["powerState"] == "VM running"
    statuses = az.json("vm", "get-instance-view", "-g", RG, "-n", VM)["instanceView"]["statuses"]
    assert [s["code"] for s in statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    assert az.json("group", "show", "-g", RG)["location"] == seed.LOCATION
    assert [g["name"] for g in az.json("group", "list")] == [RG, seed.SHARED_RESOURCE_GROUP]
    assert seed.LOCATION in [loc["name"] for loc in az.json("account", "list-locations")]
    types = sorted(r["type"] for r in az.json("resource", "list", "-g", RG))
    assert types == [
        "Microsoft.Compute/virtualMachineScaleSets",
        "Microsoft.Compute/virtualMachines",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Network/networkInterfaces",
    ]
    assert len(az.json("resource", "list")) == len(types)


@pytest.mark.slow
def test_az_vm_update_puts_the_whole_vm_and_keeps_its_identities(az: AzureCli, quick_polls: None) -> None:
    az.sign_in()
    mark = az.emulator.mark()
    az.run("vm", "update", "-g", RG, "-n", VM, "--set", "tags.env=test", "-o", "none")
    assert "PUT" in [r["method"] for r in az.emulator.requests(since=mark, service="arm")]
    assert vm_state(az.emulator) == ("SystemAssigned, UserAssigned", [seed.EXISTING_IDENTITY_NAME], {"env": "test"})


def test_the_exports_give_az_its_own_quiet_configuration(emulator: Any) -> None:
    assert emulator.env["AZURE_CONFIG_DIR"] == str(emulator.directory.resolve() / "az")
    assert emulator.env["AZURE_CORE_COLLECT_TELEMETRY"] == "false"
    assert (emulator.directory / "env.sh").read_text().count("export AZURE_CONFIG_DIR=") == 1
