"""Resource Manager's answers told apart (404 codes, 403s), the token audience of a custom endpoint, the
checks `identity delete` makes on the machines, and the SDK clients closed at the end of a command."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest.mock import MagicMock

import pytest
from azure.mgmt.compute.models import VirtualMachine, VirtualMachineScaleSet
from test_identity import NEW_ID, OTHER_ID, RG, SUB, Clients, clients, http_error, identity_model, not_found, run

from provision import validate
from provision.azure.arm import Arm
from provision.cloud import get_cloud
from provision.errors import InvalidInput

__all__ = ["clients"]  # the fixture, shared with test_identity


# -- 404s: which thing is missing ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["delete", "show"])
def test_a_wrong_subscription_is_an_error_naming_it(clients: Clients, command: str) -> None:
    clients.identities.get.side_effect = not_found("SubscriptionNotFound")
    result = run("identity", command, "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 1, result.output
    assert f"subscription {SUB} was not found" in result.output and "--subscription" in result.output
    assert "does not exist" not in result.output and "Create it with" not in result.output
    assert clients.writes() == []


def test_assign_with_a_wrong_subscription_does_not_suggest_creating_the_identity(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found("SubscriptionNotFound")
    result = run("identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 1 and f"subscription {SUB} was not found" in result.output
    assert "Create it with" not in result.output and clients.writes() == []


@pytest.mark.parametrize("code", ["ParentResourceNotFound", "InvalidResourceType"])
def test_other_404_codes_are_errors_with_azures_code(clients: Clients, code: str) -> None:
    clients.identities.get.side_effect = not_found(code)
    result = run("identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 1 and code in result.output and "does not exist" not in result.output


@pytest.mark.parametrize("code", ["ResourceNotFound", "NotFound"])
def test_the_resources_own_absence_is_a_noop_for_delete(clients: Clients, code: str) -> None:
    clients.identities.get.side_effect = not_found(code)
    result = run("identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 0 and "does not exist" in result.output


# -- 403s: Azure's message kept --------------------------------------------------------------------------


def test_forbidden_keeps_azures_message_beside_the_role_hint(clients: Clients) -> None:
    clients.vms.get.return_value = VirtualMachine({"name": "myVM", "location": "westeurope", "etag": '"1"'})
    clients.identities.get.return_value = identity_model()
    linked = (
        "The client 'c' with object id 'c' has permission to perform action 'Microsoft.Compute/virtualMachines/write'"
        f" on scope 's'; however, it does not have permission to perform action"
        f" 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '{NEW_ID}'"
    )
    error = http_error(403, "LinkedAuthorizationFailed")
    error.error.message = linked  # type: ignore[union-attr]
    clients.vms.begin_update.side_effect = error
    result = run("identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 1
    assert "LinkedAuthorizationFailed" in result.output and linked in result.output
    assert "Managed Identity Operator" in result.output


# -- identity delete and the machines that use the identity ----------------------------------------------


def machine(cls: Any, name: str, identities: list[str], encryption: str | None = None) -> Any:
    properties = {"securityProfile": {"encryptionIdentity": {"userAssignedIdentityResourceId": encryption}}}
    kind = "virtualMachines" if cls is VirtualMachine else "virtualMachineScaleSets"
    return cls(
        {
            "id": f"/subscriptions/{SUB}/resourceGroups/vmGroup/providers/Microsoft.Compute/{kind}/{name}",
            "name": name,
            "location": "westeurope",
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {i: {} for i in identities}},
            "properties": properties if encryption else {},
        }
    )


def test_delete_refuses_while_a_machine_encrypts_its_disks_with_the_identity(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model()
    spelled = NEW_ID.replace("resourcegroups", "resourceGroups")
    clients.vms.list_all.return_value = [machine(VirtualMachine, "plainVM", [OTHER_ID])]
    clients.scale_sets.list_all.return_value = [machine(VirtualMachineScaleSet, "diskSet", [spelled], spelled)]
    result = run("identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 1, result.output
    assert "scale set diskSet (resource group vmGroup)" in result.output and "encryption" in result.output
    assert clients.writes() == []
    clients.vms.list_all.assert_called_once_with()  # one listing of each kind, no read per machine
    clients.vms.get.assert_not_called()


def test_delete_while_attached_deletes_and_names_the_machines(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model()
    clients.vms.list_all.return_value = [machine(VirtualMachine, "appVM", [NEW_ID, OTHER_ID])]
    clients.scale_sets.list_all.return_value = []
    result = run("-o", "json", "identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 0, result.output
    assert clients.writes() == ["identities.delete"]
    [warning] = json.loads(result.stdout)["warnings"]
    assert "VM appVM (resource group vmGroup)" in warning and "identity remove" in warning


# -- the token audience of --arm-endpoint ----------------------------------------------------------------


@pytest.fixture
def metadata_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback Resource Manager that serves only /metadata/endpoints, as Azure Stack Hub would."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body = {"authentication": {"audiences": ["https://management.stack.example/0a1b2c", "https://other/"]}}
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_a_custom_endpoint_gets_tokens_for_the_audience_it_declares(metadata_server: Any) -> None:
    url, seen = metadata_server
    arm = Arm(SUB, get_cloud("AzureCloud"), url)
    assert arm.scope == "https://management.stack.example/0a1b2c/.default"
    assert [s["path"] for s in seen] == ["/metadata/endpoints?api-version=2022-09-01"]
    assert "authorization" not in seen[0]  # Azure serves it without a token: none is sent


def test_arm_audience_wins_and_reads_no_metadata(metadata_server: Any) -> None:
    url, seen = metadata_server
    assert Arm(SUB, get_cloud("AzureCloud"), url, "https://given.example/").scope == "https://given.example/.default"
    assert Arm(SUB, get_cloud("AzureChinaCloud")).scope == "https://management.chinacloudapi.cn/.default"
    assert seen == []


# -- SDK clients and the credential are closed -----------------------------------------------------------


def test_every_client_and_the_credential_are_closed_after_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[MagicMock] = []

    def maker(**options: Any) -> MagicMock:
        client = MagicMock()
        client.user_assigned_identities.get.return_value = identity_model()
        client.virtual_machines.list_all.return_value = []
        client.virtual_machine_scale_sets.list_all.return_value = []
        made.append(client)
        return client

    credential = MagicMock()
    monkeypatch.setattr("provision.azure.credentials.default_credential", lambda: credential)
    monkeypatch.setattr("azure.mgmt.msi.ManagedServiceIdentityClient", maker)
    monkeypatch.setattr("azure.mgmt.compute.ComputeManagementClient", maker)
    args = ["--subscription", SUB, "--arm-endpoint", "https://127.0.0.1:1", "--arm-audience", "https://a.example/"]
    from click.testing import CliRunner

    from provision.cli import cli

    result = CliRunner().invoke(cli, [*args, "identity", "delete", "-g", RG, "-n", "myManagedIdentity"])
    assert result.exit_code == 0, result.output
    assert len(made) == 2  # the identity client, and the compute client that lists the machines
    assert all(client.close.call_count == 1 for client in made)
    assert credential.close.call_count == 1


# -- Azure's resource group names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ünïcode-rg", "日本語", "rg(1)_a.b", "r" * 90])
def test_resource_group_names_azure_allows_pass(name: str) -> None:
    assert validate.resource_group(name) == name


@pytest.mark.parametrize("name", ["x²", "a.", "a b", "r" * 91, "a\u200bb", ""])
def test_resource_group_names_azure_refuses_fail(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate.resource_group(name)
