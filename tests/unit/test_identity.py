"""`provision identity` against autospecced management clients: every branch of the flow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any
from unittest.mock import MagicMock, create_autospec

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import VirtualMachine, VirtualMachineScaleSet
from azure.mgmt.compute.operations import VirtualMachineScaleSetsOperations, VirtualMachinesOperations
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import Identity
from azure.mgmt.msi.v2024_11_30.operations import UserAssignedIdentitiesOperations
from click.testing import CliRunner

from provision.azure.arm import Arm, PollPace
from provision.cli import cli

SUB = "00000000-1111-2222-3333-444444444444"
RG = "myResourceGroup"
BASE = f"/subscriptions/{SUB}/resourcegroups/{RG.lower()}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
NEW_ID = f"{BASE}/myManagedIdentity"
OTHER_ID = f"{BASE}/existingIdentity"
CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"
PRINCIPAL_ID = "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def identity_model(name: str = "myManagedIdentity", tags: dict[str, str] | None = None, location: str = "westeurope"):
    return Identity.deserialize(
        {
            "id": f"{BASE}/{name}",
            "name": name,
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "location": location,
            "tags": tags or {},
            "properties": {"tenantId": TENANT_ID, "principalId": PRINCIPAL_ID, "clientId": CLIENT_ID},
        }
    )


def machine_json(identity: dict[str, Any] | None, etag: str = '"1"', **properties: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "myVM", "location": "westeurope", "etag": etag, "properties": properties}
    if identity is not None:
        data["identity"] = identity
    return data


def vm(identity: dict[str, Any] | None, etag: str = '"1"', **properties: Any) -> VirtualMachine:
    return VirtualMachine(machine_json(identity, etag, **properties))


def not_found(code: str = "ResourceNotFound") -> ResourceNotFoundError:
    error = ResourceNotFoundError(message=f"({code}) not found")
    error.status_code = 404
    error.error = type("E", (), {"code": code, "message": "not found"})()  # type: ignore[assignment]
    return error


def http_error(status: int, code: str, cls: type[HttpResponseError] = HttpResponseError) -> HttpResponseError:
    error = cls(message=f"({code}) refused")
    error.status_code = status
    error.error = type("E", (), {"code": code, "message": "refused"})()  # type: ignore[assignment]
    return error


def done(result: Any) -> LROPoller:
    poller = create_autospec(LROPoller, instance=True)
    poller.result.return_value = result
    return poller


class Clients:
    def __init__(self) -> None:
        self.msi = create_autospec(ManagedServiceIdentityClient, instance=True)
        self.msi.user_assigned_identities = create_autospec(UserAssignedIdentitiesOperations, instance=True)
        self.compute = create_autospec(ComputeManagementClient, instance=True)
        self.compute.virtual_machines = create_autospec(VirtualMachinesOperations, instance=True)
        self.compute.virtual_machine_scale_sets = create_autospec(VirtualMachineScaleSetsOperations, instance=True)
        self.identities = self.msi.user_assigned_identities
        self.vms = self.compute.virtual_machines
        self.scale_sets = self.compute.virtual_machine_scale_sets
        self.group_location = "westeurope"
        self.compute.send_request.side_effect = self._generic_request

    def _generic_request(self, request: Any) -> Any:
        """GETs of the resource group (its region) and the subscription's locations; the Tags API's Merge,
        answered with the tags sent (what the tests look at is the request)."""
        response = MagicMock()
        if request.method == "PATCH":
            response.json.return_value = {"properties": {"tags": json.loads(request.content)["properties"]["tags"]}}
        elif request.url.split("?")[0].endswith("/locations"):
            response.json.return_value = {"value": [{"name": "westeurope"}, {"name": "northeurope"}]}
        else:
            response.json.return_value = {"location": self.group_location}
        return response

    def tag_patches(self) -> list[dict[str, Any]]:
        calls = self.compute.send_request.call_args_list
        return [json.loads(call.args[0].content) for call in calls if call.args[0].method == "PATCH"]

    def writes(self) -> list[str]:
        calls = []
        for name, group in (("identities", self.identities), ("vms", self.vms), ("scale_sets", self.scale_sets)):
            for method in ("create_or_update", "update", "delete", "begin_update", "begin_create_or_update"):
                mock = getattr(group, method, None)
                if mock is not None and mock.called:
                    calls.append(f"{name}.{method}")
        return calls

    def patch_body(self, group: Any = None) -> dict[str, Any]:
        group = group or self.vms
        return group.begin_update.call_args.args[2]


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Clients:
    made = Clients()
    monkeypatch.setattr(Arm, "identity_client", lambda self: made.msi)
    monkeypatch.setattr(Arm, "compute_client", lambda self: made.compute)
    return made


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["--subscription", SUB, "--arm-endpoint", "https://127.0.0.1:1", *args])
    return result


def create_vm(*extra: str, output: str = "text", dry_run: bool = False) -> Any:
    flags = ["-o", output, *(["--dry-run"] if dry_run else [])]
    return run(*flags, "identity", "create", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM", *extra)


def test_vm_with_system_assigned_only_keeps_it(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "SystemAssigned"})
    clients.identities.get.side_effect = not_found()
    clients.identities.create_or_update.return_value = identity_model()
    clients.vms.begin_update.return_value = done(vm({"type": "SystemAssigned, UserAssigned"}))
    result = create_vm("-l", "westeurope")
    assert result.exit_code == 0, result.output
    assert clients.patch_body() == {
        "identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {NEW_ID: {}}}
    }
    kwargs = clients.vms.begin_update.call_args.kwargs
    assert kwargs["etag"] == '"1"' and kwargs["match_condition"] == MatchConditions.IfNotModified
    assert isinstance(kwargs["polling"]._pace, PollPace)  # the command's pace, shared by its operations
    assert clients.identities.create_or_update.call_args.args[2] == {"location": "westeurope", "tags": {}}


def test_vm_without_identities_gets_user_assigned(clients: Clients) -> None:
    clients.vms.get.return_value = vm(None)
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.return_value = done(vm({"type": "UserAssigned"}))
    assert create_vm().exit_code == 0
    assert clients.patch_body()["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: {}}}
    clients.identities.create_or_update.assert_not_called()


def test_vm_with_user_assigned_only_keeps_every_one(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "UserAssigned", "userAssignedIdentities": {OTHER_ID: {}}})
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.return_value = done(vm(None))
    assert create_vm().exit_code == 0
    assert clients.patch_body()["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": {OTHER_ID: {}, NEW_ID: {}},
    }


def test_already_attached_under_other_casing_sends_nothing(clients: Clients) -> None:
    spelled = NEW_ID.replace("resourcegroups", "resourceGroups").replace("myManagedIdentity", "MYMANAGEDIDENTITY")
    clients.vms.get.return_value = vm({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {spelled: {}}})
    clients.identities.get.return_value = identity_model()
    result = create_vm(output="json")
    assert result.exit_code == 0, result.output
    assert clients.writes() == []
    data = json.loads(result.output)
    assert data["changed"] is False
    assert [a["reason"] for a in data["actions"]] == ["exists with the requested location and tags", "already attached"]
    assert clients.vms.get.call_count == 1  # the state read before the identity step is reused


def test_precondition_failed_reads_again_and_keeps_the_newcomer(clients: Clients) -> None:
    first = vm({"type": "SystemAssigned"}, etag='"1"')
    changed = vm({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {OTHER_ID: {}}}, etag='"2"')
    clients.vms.get.side_effect = [first, changed]
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.side_effect = [
        http_error(412, "PreconditionFailed", ResourceModifiedError),
        done(vm(None)),
    ]
    result = create_vm()
    assert result.exit_code == 0, result.output
    assert clients.vms.begin_update.call_count == 2
    last = clients.vms.begin_update.call_args
    assert last.kwargs["etag"] == '"2"'
    assert last.args[2]["identity"]["userAssignedIdentities"] == {OTHER_ID: {}, NEW_ID: {}}


def test_busy_machine_is_retried(clients: Clients, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provision.deadline.time.sleep", lambda seconds: None)
    clients.vms.get.return_value = vm({"type": "SystemAssigned"})
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.side_effect = [http_error(409, "Conflict"), done(vm(None))]
    assert create_vm().exit_code == 0
    assert clients.vms.begin_update.call_count == 2


def test_a_conflict_that_is_not_about_another_operation_is_final(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "SystemAssigned"})
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.side_effect = http_error(409, "PropertyChangeNotAllowed")
    result = create_vm()
    assert result.exit_code == 1 and "PropertyChangeNotAllowed" in result.output
    assert clients.vms.begin_update.call_count == 1


def test_polling_is_quick_early_then_backs_off_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.azure.arm import AdaptivePolling

    clock = [100.0]
    monkeypatch.setattr("provision.azure.arm.time.monotonic", lambda: clock[0])
    polling = AdaptivePolling()
    response = type("R", (), {"http_response": type("H", (), {"headers": {}})()})()
    polling._pipeline_response = response
    delays = []
    for elapsed in (0, 4.9, 5, 20, 40):
        clock[0] = 100.0 + elapsed
        delays.append(polling._extract_delay())
    assert delays == [0.5, 0.5, 1.0, 2.0, 5.0]
    response.http_response.headers = {"retry-after": "3"}
    assert polling._extract_delay() == 3.0


def test_the_polls_of_a_commands_operations_share_one_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.azure.arm import AdaptivePolling

    monkeypatch.setattr("provision.azure.arm.time.monotonic", lambda: 100.0)
    response = type("R", (), {"http_response": type("H", (), {"headers": {}})()})()
    pace = PollPace(per_second=20)
    waiting = [AdaptivePolling(pace=pace) for _ in range(25)]  # a fleet's machine updates, all at once
    for polling in waiting:
        polling._pipeline_response = response

    delays = [polling._extract_delay() for polling in waiting]

    assert delays == pytest.approx([0.5 + n * 0.05 for n in range(25)])  # 20 polls a second, not 50
    lone = AdaptivePolling(pace=PollPace())
    lone._pipeline_response = response
    assert lone._extract_delay() == 0.5
    later = PollPace()
    assert later.delay(100.0, 3.2) == pytest.approx(3.2)
    assert later.delay(100.0, 0.5) == pytest.approx(0.5)  # a slot kept far ahead holds up no earlier poll
    assert later.delay(100.0, 3.22) == pytest.approx(3.25)  # nor gets a twin


def test_an_operation_of_a_command_is_first_polled_when_the_shortest_one_before_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from provision.azure.arm import AdaptivePolling

    monkeypatch.setattr("provision.azure.arm.time.monotonic", lambda: 100.0)
    response = type("R", (), {"http_response": type("H", (), {"headers": {}})()})()
    pace = PollPace()
    pace.ended(6.0)
    pace.ended(4.0)  # the shortest so far
    later = AdaptivePolling(pace=pace)
    later._pipeline_response = response

    assert later._extract_delay() == pytest.approx(0.8 * 4.0)  # not 0.5: it would not be done yet
    after_a_slow_one = PollPace()
    after_a_slow_one.ended(60.0)  # a scale set's update, say: a VM's may still be quick
    assert after_a_slow_one.earliest(0.0) == 5.0


def test_the_first_poll_waits_as_the_others_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    from provision.azure.arm import AdaptivePolling

    asked: list[str] = []
    monkeypatch.setattr(ARMPolling, "update_status", lambda self: asked.append("status"))
    monkeypatch.setattr(ARMPolling, "finished", lambda self: False)
    polling = AdaptivePolling(pace=PollPace())
    polling._pipeline_response = type("R", (), {"http_response": type("H", (), {"headers": {}})()})()
    slept: list[float] = []
    monkeypatch.setattr(polling, "_sleep", slept.append)

    polling.update_status()  # azure-core asks for the first status right after the write's answer
    polling.update_status()  # later ones come after its own delay (AdaptivePolling._extract_delay)

    assert asked == ["status", "status"]
    assert len(slept) == 1 and 0.45 < slept[0] <= 0.5


def test_machine_that_keeps_changing_gives_up_cleanly(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "SystemAssigned"})
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.side_effect = http_error(412, "PreconditionFailed", ResourceModifiedError)
    result = create_vm()
    assert result.exit_code == 1
    assert "kept changing" in result.output and "Traceback" not in result.output


def test_scale_set_with_manual_upgrade_policy_warns(clients: Clients) -> None:
    clients.scale_sets.get.return_value = VirtualMachineScaleSet(
        machine_json({"type": "SystemAssigned"}, upgradePolicy={"mode": "Manual"})
    )
    clients.identities.get.return_value = identity_model()
    after = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {NEW_ID: {}}}
    clients.scale_sets.begin_update.return_value = done(
        VirtualMachineScaleSet(machine_json(after, upgradePolicy={"mode": "Manual"}))
    )
    result = run("identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vmss", "myScaleSet")
    assert result.exit_code == 0, result.output
    assert clients.patch_body(clients.scale_sets)["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert "Manual upgrade policy" in result.output
    clients.vms.get.assert_not_called()


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {NEW_ID: {}}},
            {"type": "SystemAssigned", "userAssignedIdentities": None},
        ),
        ({"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: {}}}, {"type": "None"}),
        (
            {"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: {}, OTHER_ID: {}}},
            {"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: None}},
        ),
    ],
    ids=["last-keeps-system", "last-of-all", "one-of-two"],
)
def test_remove(clients: Clients, identity: dict[str, Any], expected: dict[str, Any]) -> None:
    clients.vms.get.return_value = vm(identity)
    clients.vms.begin_update.return_value = done(vm(None))
    result = run("identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 0, result.output
    assert clients.patch_body() == {"identity": expected}


def test_remove_refuses_the_disk_encryption_identity(clients: Clients) -> None:
    clients.vms.get.return_value = vm(
        {"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: {}, OTHER_ID: {}}},
        securityProfile={"encryptionIdentity": {"userAssignedIdentityResourceId": NEW_ID.upper()}},
    )
    result = run("identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 1
    assert "disk encryption" in result.output
    assert clients.writes() == []


def test_remove_when_not_attached_is_a_noop(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "SystemAssigned"})
    result = run("identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 0 and "not attached" in result.output
    assert clients.writes() == []


def test_dry_run_makes_no_write_and_shows_the_exact_patch(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "SystemAssigned", "userAssignedIdentities": {}}, etag='"7"')
    clients.identities.get.side_effect = not_found()
    result = create_vm("-l", "westeurope", output="json", dry_run=True)
    assert result.exit_code == 3, result.output
    assert clients.writes() == []
    data = json.loads(result.output)
    put, patch = (action["request"] for action in data["actions"])
    assert put["method"] == "PUT" and put["body"] == {"location": "westeurope", "tags": {}}
    assert patch["method"] == "PATCH"
    assert patch["url"] == (
        f"https://127.0.0.1:1/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/myVM"
        "?api-version=2026-04-01"
    )
    assert patch["headers"] == {"If-Match": '"7"'}
    assert patch["body"]["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert list(patch["body"]["identity"]["userAssignedIdentities"]) == [
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myManagedIdentity"
    ]


def test_dry_run_with_nothing_to_do_exits_zero(clients: Clients) -> None:
    clients.vms.get.return_value = vm({"type": "UserAssigned", "userAssignedIdentities": {NEW_ID: {}}})
    clients.identities.get.return_value = identity_model()
    result = create_vm(dry_run=True)
    assert result.exit_code == 0, result.output


def test_dry_run_text_shows_the_body(clients: Clients) -> None:
    clients.vms.get.return_value = vm(None)
    clients.identities.get.return_value = identity_model()
    result = create_vm(dry_run=True)
    assert result.exit_code == 3
    assert "would attach" in result.output and "PATCH https://127.0.0.1:1/" in result.output
    assert '"type": "UserAssigned"' in result.output


def test_missing_vm_leaves_no_orphan_identity(clients: Clients) -> None:
    clients.vms.get.side_effect = not_found()
    result = create_vm()
    assert result.exit_code == 1
    assert "VM myVM in resource group myResourceGroup was not found" in result.output
    assert clients.writes() == []


def test_the_machine_error_wins_when_both_reads_fail(clients: Clients) -> None:
    """The two reads run at once; the machine's failure is the one shown, as when it was read first."""
    clients.vms.get.side_effect = not_found()
    clients.identities.get.side_effect = http_error(500, "InternalServerError")
    result = create_vm()
    assert result.exit_code == 1 and "VM myVM in resource group myResourceGroup was not found" in result.output
    assert clients.writes() == []


def test_assign_shows_the_missing_identity_first_when_both_reads_fail(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found()
    clients.vms.get.side_effect = not_found()
    result = run("identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 1 and "identity myManagedIdentity was not found" in result.output
    assert "provision identity create" in result.output and clients.writes() == []


def test_a_failed_first_read_returns_once_the_other_read_is_done(clients: Clients) -> None:
    """No read is left running after the command (a read of a busy machine would go on polling)."""
    finished: list[str] = []

    def slow_machine_read(*args: Any, **kwargs: Any) -> Any:
        threading.Event().wait(0.2)
        finished.append("vm")
        return vm(None)

    clients.identities.get.side_effect = not_found()
    clients.vms.get.side_effect = slow_machine_read
    result = run("identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 1 and finished == ["vm"]


@pytest.mark.parametrize("command", ["create", "assign"])
def test_the_machine_and_the_identity_are_read_at_once(clients: Clients, command: str) -> None:
    """Each read waits until the other has started: read one after the other, the first would time out."""
    started = {"vm": threading.Event(), "identity": threading.Event()}

    def read(mine: str, other: str, answer: Any) -> Any:
        started[mine].set()
        if not started[other].wait(timeout=10):
            raise AssertionError(f"the {other} read did not start while the {mine} read was in flight")
        return answer

    clients.vms.get.side_effect = lambda *a, **k: read("vm", "identity", vm({"type": "UserAssigned"}))
    clients.identities.get.side_effect = lambda *a, **k: read("identity", "vm", identity_model())
    clients.vms.begin_update.return_value = done(vm(None))
    result = run("identity", command, "-g", RG, "-n", "myManagedIdentity", "--vm", "myVM")
    assert result.exit_code == 0, result.output
    assert clients.vms.get.call_count == 1  # the settled state read at once is the one the PATCH is decided on


def test_missing_resource_group_is_named(clients: Clients) -> None:
    clients.vms.get.side_effect = not_found("ResourceGroupNotFound")
    result = create_vm()
    assert result.exit_code == 1
    assert f"resource group {RG} was not found in subscription {SUB}" in result.output


def test_existing_identity_gets_only_the_new_tags_merged_by_azure(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model(tags={"owner": "team-a", "Env": "test"})
    tags = ("--tag", "env=prod", "--tag", "owner=team-a")
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", *tags)
    assert result.exit_code == 0, result.output
    clients.identities.create_or_update.assert_not_called()  # a PUT would replace tags added meanwhile
    assert clients.tag_patches() == [{"operation": "Merge", "properties": {"tags": {"env": "prod"}}}]
    request = clients.compute.send_request.call_args.args[0]
    assert request.method == "PATCH" and "/providers/Microsoft.Resources/tags/default?" in request.url


def test_tags_already_there_under_other_casing_send_nothing(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model(tags={"Env": "prod"})
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "--tag", "ENV=prod")
    assert result.exit_code == 0, result.output
    assert clients.tag_patches() == [] and clients.writes() == []


def test_tags_beyond_azures_50_after_the_merge_are_refused(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model(tags={f"t{i}": "x" for i in range(49)})
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "--tag", "a=1", "--tag", "b=2")
    assert result.exit_code == 2 and "it would have 51" in result.output
    assert clients.tag_patches() == [] and clients.writes() == []


def test_existing_identity_in_another_region_is_refused(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model(location="westus")
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "-l", "westeurope")
    assert result.exit_code == 1 and "cannot move" in result.output
    assert clients.writes() == []


def test_new_identity_defaults_to_the_resource_group_region(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found()
    clients.group_location = "northeurope"
    clients.identities.create_or_update.return_value = identity_model(location="northeurope")
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 0, result.output
    assert clients.identities.create_or_update.call_args.args[2]["location"] == "northeurope"


def test_forbidden_names_the_missing_role(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found()
    clients.identities.create_or_update.side_effect = http_error(403, "AuthorizationFailed")
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "-l", "westeurope")
    assert result.exit_code == 1
    assert "Managed Identity Contributor" in result.output and "Traceback" not in result.output


def test_attach_forbidden_names_both_roles(clients: Clients) -> None:
    clients.vms.get.return_value = vm(None)
    clients.identities.get.return_value = identity_model()
    clients.vms.begin_update.side_effect = http_error(403, "LinkedAuthorizationFailed")
    result = create_vm()
    assert result.exit_code == 1
    assert "Virtual Machine Contributor" in result.output and "Managed Identity Operator" in result.output


def test_json_output_has_the_identity_fields(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model()
    result = run("-o", "json", "identity", "show", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data == {
        "changed": False,
        "actions": [],
        "id": NEW_ID,
        "name": "myManagedIdentity",
        "location": "westeurope",
        "clientId": CLIENT_ID,
        "principalId": PRINCIPAL_ID,
        "tenantId": TENANT_ID,
        "tags": {},
    }


def test_show_missing_identity_says_how_to_create_it(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found()
    result = run("identity", "show", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 1 and "provision identity create" in result.output


def test_delete_missing_identity_is_a_noop(clients: Clients) -> None:
    clients.identities.get.side_effect = not_found()
    result = run("identity", "delete", "-g", RG, "-n", "myManagedIdentity")
    assert result.exit_code == 0 and "does not exist" in result.output
    assert clients.writes() == []


def test_delete(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model()
    assert run("identity", "delete", "-g", RG, "-n", "myManagedIdentity").exit_code == 0
    clients.identities.delete.assert_called_once_with(RG, "myManagedIdentity")


BAD_INPUTS = [
    (["identity", "create", "-g", RG, "-n", "ab"], "--name 'ab'"),
    (["identity", "create", "-g", RG, "-n", "-leading-dash"], "--name '-leading-dash'"),
    (["identity", "create", "-g", RG, "-n", "has space"], "--name 'has space'"),
    (["identity", "create", "-g", RG, "-n", "x" * 129], "--name"),
    (["identity", "create", "-g", "bad/group", "-n", "myManagedIdentity"], "--resource-group 'bad/group'"),
    (["identity", "create", "-g", "ends.", "-n", "myManagedIdentity"], "--resource-group 'ends.'"),
    (["identity", "create", "-g", "", "-n", "myManagedIdentity"], "--resource-group ''"),
    (["identity", "create", "-g", RG, "-n", "myManagedIdentity", "--vm", "bad vm"], "--vm 'bad vm'"),
    (["identity", "create", "-g", RG, "-n", "myManagedIdentity", "--vm", "a", "--vmss", "b"], "not both"),
    (["identity", "create", "-g", RG, "-n", "myManagedIdentity", "--vm-resource-group", "x"], "needs --vm"),
    (["identity", "create", "-g", RG, "-n", "myManagedIdentity", "--tag", "novalue"], "--tag 'novalue'"),
    (["identity", "create", "-g", RG, "-n", "abc", *[w for i in range(51) for w in ("--tag", f"t{i}=v")]], "51 tags"),
    (["identity", "create", "-g", RG, "-n", "abc", "--tag", "Env=a", "--tag", "env=b"], "--tag 'env'"),
    (["identity", "create", "-g", RG, "-n", "myManagedIdentity", "-l", "west/europe"], "--location"),
    (["identity", "assign", "-g", RG, "-n", "myManagedIdentity"], "--vm or --vmss is required"),
    (["identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vmss", "_x"], "--vmss '_x'"),
    (["identity", "assign", "-g", RG, "-n", "myManagedIdentity", "--vm", "v", "--vm-resource-group", "a|b"], "a|b"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_2_before_any_request(clients: Clients, args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert clients.msi.method_calls == [] and clients.compute.method_calls == []
    assert clients.identities.method_calls == [] and clients.vms.method_calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subscription", "not-a-guid"], "--subscription 'not-a-guid'"),
        (["--cloud", "Mars"], "unknown cloud 'Mars'"),
        (["--arm-endpoint", "ftp://x"], "--arm-endpoint"),
        (["--arm-endpoint", "https://"], "--arm-endpoint 'https://'"),
        (["--arm-endpoint", "https://exa mple"], "--arm-endpoint 'https://exa mple'"),
        (["--arm-endpoint", "https://127.0.0.1:1/?x=1"], "--arm-endpoint 'https://127.0.0.1:1/?x=1'"),
        (["--arm-audience", "not a url"], "--arm-audience 'not a url'"),
    ],
)
def test_bad_global_options_exit_2(clients: Clients, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [*args, "identity", "show", "-g", RG, "-n", "myManagedIdentity"])
    assert result.exit_code == 2 and message in result.output
    assert clients.identities.method_calls == []


def location_reads(clients: Clients) -> int:
    return sum(1 for c in clients.compute.send_request.call_args_list if "/locations?" in c.args[0].url)


def test_a_region_the_subscription_does_not_offer_exits_2_before_any_write(clients: Clients) -> None:
    clients.vms.get.return_value = vm(None)
    clients.identities.get.side_effect = not_found()
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "-l", "Mars North", "--vm", "myVM")
    assert result.exit_code == 2, result.output
    assert "--location 'marsnorth'" in result.output and "westeurope" in result.output
    assert clients.writes() == [] and location_reads(clients) == 1


def test_a_made_up_region_is_refused_even_when_the_identity_exists_elsewhere(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model(location="westeurope")
    result = run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "-l", "atlantis")
    assert result.exit_code == 2 and "--location 'atlantis'" in result.output
    assert clients.writes() == [] and clients.tag_patches() == []


@pytest.mark.parametrize("identity_exists", [True, False])
def test_the_region_of_the_identity_or_the_machine_is_not_asked_for(clients: Clients, identity_exists: bool) -> None:
    """Where the identity or the VM just read is, the subscription offers: no GET of its locations."""
    clients.vms.get.return_value = vm({"type": "UserAssigned"})  # in westeurope
    if identity_exists:
        clients.identities.get.return_value = identity_model(location="westeurope")
    else:
        clients.identities.get.side_effect = not_found()
        clients.identities.create_or_update.return_value = identity_model()
    clients.vms.begin_update.return_value = done(vm(None))
    result = create_vm("-l", "West Europe")
    assert result.exit_code == 0, result.output
    assert location_reads(clients) == 0


def test_a_region_neither_is_in_is_checked(clients: Clients) -> None:
    clients.vms.get.return_value = vm(None)  # in westeurope
    clients.identities.get.side_effect = not_found()
    clients.identities.create_or_update.return_value = identity_model(location="northeurope")
    clients.vms.begin_update.return_value = done(vm(None))
    result = create_vm("-l", "northeurope")
    assert result.exit_code == 0, result.output
    assert location_reads(clients) == 1


def test_missing_subscription_exits_2(clients: Clients) -> None:
    result = CliRunner().invoke(cli, ["identity", "show", "-g", RG, "-n", "myManagedIdentity"])
    assert result.exit_code == 2 and "--subscription" in result.output


@pytest.mark.parametrize("args", [["--help"], ["identity", "--help"], ["identity", "create", "--help"]])
def test_help_loads_no_sdk(args: list[str]) -> None:
    code = (
        "import sys; from provision.cli import main; sys.argv = ['provision', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'psycopg', 'psycopg_pool', 'msal'))\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
