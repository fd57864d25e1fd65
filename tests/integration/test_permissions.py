"""Azure's permissions in the emulator, and the tool under missing ones: the real CLI runs as the operator
(myVM's system-assigned identity) after tests took its Owner role away and granted narrower ones; every
refusal keeps Azure's text beside the tool's role hint, exits 1 and changes nothing."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

import pytest
from helpers import machine_identities, writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

SUB = seed.SUBSCRIPTION_ID
RG = seed.RESOURCE_GROUP
SHARED = seed.SHARED_RESOURCE_GROUP
OPERATOR = seed.OPERATOR_PRINCIPAL_ID
EXISTING = seed.EXISTING_IDENTITY_NAME
SUBSCRIPTION = f"/subscriptions/{SUB}"
GROUP = f"{SUBSCRIPTION}/resourceGroups/{RG}"
VM = f"{GROUP}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"
OPERATOR_OWNER = {"principal": OPERATOR, "role": "Owner", "scope": SUBSCRIPTION}
CI_CONTRIBUTOR = {"principal": seed.CI_PRINCIPAL_ID, "role": "Contributor", "scope": GROUP}  # the CI pipeline's


@pytest.fixture(autouse=True)
def seed_roles_afterwards(fresh_emulator: Any, emulator_environ: dict[str, str]) -> Any:
    """The emulator's variables for the reads made in this process; afterwards the seed's roles again, for
    tests that use the session's emulator without a reset."""
    yield
    fresh_emulator.reset()


def identity_id(name: str, group: str = RG) -> str:
    return f"{SUBSCRIPTION}/resourcegroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def only(emulator: Any, *grants: tuple[str, str]) -> None:
    """The operator holds exactly these (role, scope) assignments, instead of Owner of the subscription."""
    for role, scope in grants:
        emulator.grant(OPERATOR, role, scope)
    emulator.revoke(OPERATOR, "Owner", SUBSCRIPTION)


def restore_owner(emulator: Any) -> None:
    """Owner again, so the test can read what really is (through the tool's own clients)."""
    emulator.grant(OPERATOR, "Owner", SUBSCRIPTION)


def refused(emulator: Any, *args: str) -> tuple[dict[str, Any], str]:
    """A command that must fail with exit 1: its JSON answer, and everything it printed."""
    result = emulator.run("-o", "json", *args)
    assert result.returncode == 1, result.stdout + result.stderr
    return json.loads(result.stdout), result.stdout + result.stderr


def statuses(emulator: Any, since: int) -> list[str]:
    return [f"{r['method']} {r['status']}" for r in emulator.requests(since=since, service="arm")]


def test_identity_create_without_managed_identity_contributor_creates_nothing(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Reader", GROUP))
    mark = fresh_emulator.mark()
    _, output = refused(fresh_emulator, "identity", "create", "-g", RG, "-n", "notAllowed")
    assert "AuthorizationFailed" in output
    expected = (
        f"The client '{OPERATOR}' with object id '{OPERATOR}' does not have authorization to perform action"
        f" 'Microsoft.ManagedIdentity/userAssignedIdentities/write' over scope"
    )
    assert expected in output and "If access was recently granted, please refresh your credentials." in output
    assert "Managed Identity Contributor" in output
    assert [w.split(" ")[0] for w in writes(fresh_emulator, mark)] == ["PUT"]
    assert statuses(fresh_emulator, mark)[-1] == "PUT 403"
    restore_owner(fresh_emulator)
    assert fresh_emulator.run("identity", "show", "-g", RG, "-n", "notAllowed").returncode == 1


def test_identity_create_with_managed_identity_contributor_on_the_group(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Managed Identity Contributor", GROUP))
    result = fresh_emulator.run("-o", "json", "identity", "create", "-g", RG, "-n", "allowed")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] is True


def test_read_without_reader_is_refused_with_the_reader_hint(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Reader", f"{SUBSCRIPTION}/resourceGroups/{SHARED}"))
    _, output = refused(fresh_emulator, "identity", "show", "-g", RG, "-n", EXISTING)
    assert "AuthorizationFailed" in output
    assert "'Microsoft.ManagedIdentity/userAssignedIdentities/read' over scope" in output
    assert "Reader on the resource group" in output


def test_a_reader_of_the_group_may_read(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Reader", GROUP))
    result = fresh_emulator.run("identity", "show", "-g", RG, "-n", EXISTING)
    assert result.returncode == 0, result.stderr


def test_attach_from_another_group_without_managed_identity_operator_changes_nothing(fresh_emulator: Any) -> None:
    assert fresh_emulator.run("identity", "create", "-g", SHARED, "-n", "shared").returncode == 0
    # Contributor of the VM's group (which covers assigning existingIdentity, sent again with the new one),
    # Reader of the shared group: may see the shared identity, not assign it.
    only(fresh_emulator, ("Contributor", GROUP), ("Reader", f"{SUBSCRIPTION}/resourceGroups/{SHARED}"))
    mark = fresh_emulator.mark()
    _, output = refused(
        fresh_emulator, "identity", "assign", "-g", SHARED, "-n", "shared", "--vm", seed.VM_NAME,
        "--vm-resource-group", RG,
    )  # fmt: skip
    assert "LinkedAuthorizationFailed" in output
    assert "'Microsoft.Compute/virtualMachines/write' on scope" in output
    linked = (
        "does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action'"
        " on the linked scope(s) '"
    )
    assert linked in output
    named = output.split(linked, 1)[1].split("'", 1)[0]
    assert named.lower() == identity_id("shared", SHARED).lower()  # only the one it may not assign
    assert "Managed Identity Operator" in output
    assert statuses(fresh_emulator, mark).count("PATCH 403") == 1
    restore_owner(fresh_emulator)
    assert machine_identities(fresh_emulator) == ("SystemAssigned, UserAssigned", [EXISTING])


def test_managed_identity_operator_on_the_identity_lets_the_attach_through(fresh_emulator: Any) -> None:
    assert fresh_emulator.run("identity", "create", "-g", SHARED, "-n", "shared").returncode == 0
    only(fresh_emulator, ("Contributor", GROUP), ("Managed Identity Operator", identity_id("shared", SHARED)))
    result = fresh_emulator.run(
        "identity", "assign", "-g", SHARED, "-n", "shared", "--vm", seed.VM_NAME, "--vm-resource-group", RG
    )
    assert result.returncode == 0, result.stderr
    restore_owner(fresh_emulator)
    assert machine_identities(fresh_emulator) == ("SystemAssigned, UserAssigned", sorted([EXISTING, "shared"]))


def test_remove_without_virtual_machine_contributor_changes_nothing(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Reader", SUBSCRIPTION), ("Managed Identity Operator", GROUP))
    mark = fresh_emulator.mark()
    _, output = refused(fresh_emulator, "identity", "remove", "-g", RG, "-n", EXISTING, "--vm", seed.VM_NAME)
    assert "AuthorizationFailed" in output
    assert f"'Microsoft.Compute/virtualMachines/write' over scope '{VM}'" in output
    assert "Virtual Machine Contributor" in output
    assert "Managed Identity Operator" not in output  # a removal assigns nothing
    assert statuses(fresh_emulator, mark).count("PATCH 403") == 1
    restore_owner(fresh_emulator)
    assert machine_identities(fresh_emulator) == ("SystemAssigned, UserAssigned", [EXISTING])


def test_remove_needs_no_assign_permission_on_the_identity(fresh_emulator: Any) -> None:
    # A removal sets the identity to null: nothing is assigned, so nothing linked is checked.
    only(fresh_emulator, ("Virtual Machine Contributor", VM), ("Reader", GROUP))
    result = fresh_emulator.run("identity", "remove", "-g", RG, "-n", EXISTING, "--vm", seed.VM_NAME)
    assert result.returncode == 0, result.stderr
    restore_owner(fresh_emulator)
    assert machine_identities(fresh_emulator) == ("SystemAssigned", [])


# -- the emulator's checks, seen with raw requests --------------------------------------------------------


def raw(emulator: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    """A request as the operator, with a token from the emulated IMDS; the status and JSON answer."""
    from provision.azure.credentials import default_credential

    token = default_credential().get_token(f"{seed.ARM_AUDIENCE}.default").token
    request = urllib.request.Request(
        f"{emulator.env['PROVISION_ARM_ENDPOINT']}{path}?api-version=2024-07-01",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=emulator.env["REQUESTS_CA_BUNDLE"])
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_every_identity_a_machine_write_names_is_checked_also_those_already_attached(fresh_emulator: Any) -> None:
    only(fresh_emulator, ("Virtual Machine Contributor", VM))
    existing = identity_id(EXISTING)
    status, body = raw(
        fresh_emulator, "PATCH", VM, {"identity": {"type": "SystemAssigned, UserAssigned",
                                                   "userAssignedIdentities": {existing: {}}}}
    )  # fmt: skip
    assert status == 403 and body["error"]["code"] == "LinkedAuthorizationFailed"
    assert f"on the linked scope(s) '{existing}' or the linked scope(s) are invalid." in body["error"]["message"]


def test_a_revoked_role_is_refused_and_a_reset_restores_the_operator(fresh_emulator: Any) -> None:
    only(fresh_emulator)
    assert fresh_emulator.role_assignments() == [CI_CONTRIBUTOR]
    assert fresh_emulator.run("identity", "show", "-g", RG, "-n", EXISTING).returncode == 1
    fresh_emulator.reset()
    assert fresh_emulator.role_assignments() == [OPERATOR_OWNER, CI_CONTRIBUTOR]
    assert fresh_emulator.run("identity", "show", "-g", RG, "-n", EXISTING).returncode == 0


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"principal": "not-a-guid", "role": "Reader", "scope": SUBSCRIPTION}, "InvalidPrincipalId"),
        ({"principal": "11111111-2222-3333-4444-555555555555", "role": "Reader", "scope": SUBSCRIPTION},
         "PrincipalNotFound"),
        ({"principal": OPERATOR, "role": "Superuser", "scope": SUBSCRIPTION}, "RoleDefinitionDoesNotExist"),
        ({"principal": OPERATOR, "role": "Reader", "scope": "/subscriptions/99999999-1111-2222-3333-444444444444"},
         "InvalidScope"),
        ({"principal": OPERATOR, "role": "Reader", "scope": f"{SUBSCRIPTION}-x"}, "InvalidScope"),
        ({"principal": OPERATOR, "role": "Reader"}, "InvalidRoleAssignment"),
    ],
)  # fmt: skip
def test_a_bad_role_assignment_is_refused_and_changes_nothing(
    fresh_emulator: Any, spec: dict[str, Any], code: str
) -> None:
    with pytest.raises(AssertionError, match=f"400 .*{code}"):
        fresh_emulator.admin("POST", "role-assignments", spec)
    assert fresh_emulator.role_assignments() == [OPERATOR_OWNER, CI_CONTRIBUTOR]


def test_revoking_an_assignment_that_does_not_exist_is_a_404(fresh_emulator: Any) -> None:
    with pytest.raises(AssertionError, match="404 .*RoleAssignmentNotFound"):
        fresh_emulator.revoke(OPERATOR, "Reader", SUBSCRIPTION)
