"""The real Azure CLI (the pinned azure-cli that `make az` installs in .cache/venv-az), unchanged, against the
local Azure stack: the walkthrough's commands, and az and provision taking turns on one VM.

Each test signs az in from scratch in its own configuration directory, the way env.sh tells a user to:
`az cloud register` (endpoints discovered from /metadata/endpoints), `az cloud set`, `az login --identity`."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from provision.emulator import seed
from provision.emulator.keys import Authority
from provision.emulator.stack import AZ_CLOUD_NAME

AZ = Path(__file__).resolve().parents[2] / ".cache" / "venv-az" / "bin" / "az"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not AZ.exists(), reason=f"the Azure CLI is not installed in {AZ.parent.parent} (`make az`)"),
]

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
    return AzureCli(fresh_emulator, tmp_path / "az")


def vm_state(emulator: Any, kind: str = "virtualMachines", name: str = VM) -> tuple[str | None, list[str], dict]:
    """The machine's identity type, user-assigned identity names and tags, read straight from the emulated
    Resource Manager with a token its own authority signs (neither az nor provision is the oracle)."""
    path = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}/providers/Microsoft.Compute/{kind}/{name}"
    operator = {"client_id": seed.OPERATOR_CLIENT_ID, "principal_id": seed.OPERATOR_PRINCIPAL_ID, "resource_id": path}
    token = Authority.load_or_create(emulator.directory).mint_token(seed.ARM_AUDIENCE, operator, 600)[0]
    request = urllib.request.Request(
        f"{emulator.env['PROVISION_ARM_ENDPOINT']}{path}?api-version=2024-11-01",
        headers={"Authorization": f"Bearer {token}"},
    )
    context = ssl.create_default_context(cafile=emulator.env["REQUESTS_CA_BUNDLE"])
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        body = json.loads(response.read())
    identity = body.get("identity") or {}
    names = sorted(key.rsplit("/", 1)[-1] for key in identity.get("userAssignedIdentities") or {})
    return identity.get("type"), names, body.get("tags") or {}


@pytest.fixture
def quick_polls(fresh_emulator: Any) -> None:
    """Retry-After: 1 on every Resource Manager answer, so that az polls its operations each second instead of
    every 30 s (real Compute sends none; the benchmark measures az without this)."""
    fresh_emulator.fault("retry_after", count=None, retry_after=1)


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


@pytest.mark.parametrize(
    "login",
    [
        ("--client-id", "3f0c2d5e-8a41-4b7c-9e26-51d8a7b4c0f3"),
        ("--resource-id", identity_id(seed.EXISTING_IDENTITY_NAME)),
    ],
    ids=["client-id", "resource-id"],
)
def test_az_login_as_a_user_assigned_identity(az: AzureCli, login: tuple[str, str]) -> None:
    [account] = az.sign_in(*login)
    assert account["user"]["name"] == "userAssignedIdentity"
    assert account["id"] == seed.SUBSCRIPTION_ID
    # The token it got is one Resource Manager takes: a read works.
    assert az.json("group", "show", "-g", RG)["name"] == RG


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


def test_az_scale_set_identity_assign_show_remove(az: AzureCli, quick_polls: None) -> None:
    az.sign_in()
    az.run("identity", "create", "-g", RG, "-n", "setIdentity", "-o", "none")
    az.run("vmss", "identity", "assign", "-g", RG, "-n", seed.VMSS_NAME, "--identities", "setIdentity", "-o", "none")
    assert az.json("vmss", "identity", "show", "-g", RG, "-n", seed.VMSS_NAME)["type"] == "UserAssigned"
    assert vm_state(az.emulator, "virtualMachineScaleSets", seed.VMSS_NAME)[:2] == ("UserAssigned", ["setIdentity"])
    az.run("vmss", "identity", "remove", "-g", RG, "-n", seed.VMSS_NAME, "--identities", "setIdentity")
    assert vm_state(az.emulator, "virtualMachineScaleSets", seed.VMSS_NAME)[:2] == (None, [])


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
    assert [g["name"] for g in az.json("group", "list")] == [RG]
    assert seed.LOCATION in [loc["name"] for loc in az.json("account", "list-locations")]
    types = sorted(r["type"] for r in az.json("resource", "list", "-g", RG))
    assert types == [
        "Microsoft.Compute/virtualMachineScaleSets",
        "Microsoft.Compute/virtualMachines",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Network/networkInterfaces",
    ]
    assert len(az.json("resource", "list")) == len(types)


def test_az_vm_update_puts_the_whole_vm_and_keeps_its_identities(az: AzureCli, quick_polls: None) -> None:
    az.sign_in()
    mark = az.emulator.mark()
    az.run("vm", "update", "-g", RG, "-n", VM, "--set", "tags.env=test", "-o", "none")
    assert "PUT" in [r["method"] for r in az.emulator.requests(since=mark, service="arm")]
    assert vm_state(az.emulator) == ("SystemAssigned, UserAssigned", [seed.EXISTING_IDENTITY_NAME], {"env": "test"})
