"""`provision identity` end to end: the real CLI and SDK clients against the emulated Resource Manager.

The oracles read the emulated world through /_emulator/ and the requests the tool sent from the request
log, never through the tool's own clients. Since the emulator merges a PATCH's identity map as Azure does,
"nothing lost" is proven on the PATCH itself: it carries If-Match with the etag the machine had, the
`type` the machine needs, and every identity already attached (or, for a removal, only the one to null)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import machine, writes

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
EXISTING = seed.EXISTING_IDENTITY_NAME


def identity_id(name: str) -> str:
    return (
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{RG}"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


def run_json(emulator: Any, *args: str, expect: int = 0, dry_run: bool = False) -> dict[str, Any]:
    result = emulator.run("-o", "json", *(["--dry-run"] if dry_run else []), *args)
    assert result.returncode == expect, result.stderr + result.stdout
    return json.loads(result.stdout)


@pytest.fixture
def machine_identities(emulator: Any) -> Callable[..., tuple[str, list[str]]]:
    """The machine's identity type and user-assigned identity names, as the emulated world holds them."""

    def read(kind: str = "vm", name: str = seed.VM_NAME) -> tuple[str, list[str]]:
        identity = machine(emulator, kind, name).get("identity") or {}
        names = sorted(key.rsplit("/", 1)[-1] for key in identity.get("userAssignedIdentities") or {})
        return identity.get("type"), names

    return read


def patches(emulator: Any, since: int) -> list[dict[str, Any]]:
    """The PATCHes of machines recorded since a mark."""
    return [r for r in emulator.requests(since=since, service="arm") if r["method"] == "PATCH"]


def if_match(request: dict[str, Any]) -> str | None:
    return next((value for name, value in request["headers"].items() if name.lower() == "if-match"), None)


def identity_map(request: dict[str, Any]) -> dict[str, Any]:
    """A PATCH body's userAssignedIdentities, keyed by lower-case resource id (Azure compares them so)."""
    return {
        key.lower(): value for key, value in (request["body"]["identity"].get("userAssignedIdentities") or {}).items()
    }


def create(
    emulator: Any, name: str = "myManagedIdentity", *extra: str, expect: int = 0, dry_run: bool = False
) -> dict[str, Any]:
    args = ("identity", "create", "-g", RG, "-n", name, "--vm", seed.VM_NAME, *extra)
    return run_json(emulator, *args, expect=expect, dry_run=dry_run)


def test_create_attaches_and_keeps_the_identities_already_there(fresh_emulator: Any, machine_identities: Any) -> None:
    before = machine(fresh_emulator)
    mark = fresh_emulator.mark()
    data = create(fresh_emulator)
    (patch,) = patches(fresh_emulator, mark)
    assert if_match(patch) == before["etag"]
    assert patch["body"]["identity"]["type"] == "SystemAssigned, UserAssigned"
    # Every identity already attached is in the body, beside the new one, each as an empty object.
    assert identity_map(patch) == {
        **{key.lower(): {} for key in before["identity"]["userAssignedIdentities"]},
        identity_id("myManagedIdentity").lower(): {},
    }
    assert data["changed"] is True
    assert data["clientId"] and data["principalId"] and data["tenantId"] == seed.TENANT_ID
    assert data["id"].lower() == identity_id("myManagedIdentity").lower()
    assert data["machine"]["systemAssigned"] is True
    assert sorted(data["machine"]["userAssignedIdentities"]) == sorted([EXISTING, "myManagedIdentity"])
    assert machine_identities() == (
        "SystemAssigned, UserAssigned",
        sorted([EXISTING, "myManagedIdentity"]),
    )


def test_rerun_sends_no_write(fresh_emulator: Any) -> None:
    first_mark = fresh_emulator.mark()
    create(fresh_emulator)
    first = fresh_emulator.requests(since=first_mark, service="arm")
    mark = fresh_emulator.mark()
    data = create(fresh_emulator)
    again = fresh_emulator.requests(since=mark, service="arm")
    assert data["changed"] is False
    assert [a["reason"] for a in data["actions"]] == ["exists with the requested location and tags", "already attached"]
    assert writes(fresh_emulator, mark) == []
    # The endpoint's token audience, the VM, then the identity.
    assert [f"{r['method']} {r['path'].rsplit('/', 2)[-2]}" for r in again] == [
        "GET metadata",
        "GET virtualMachines",
        "GET userAssignedIdentities",
    ]
    print(f"\nrequests: first run {len(first)}, re-run {len(again)}")


def test_dry_run_writes_nothing_and_shows_what_the_real_run_sends(fresh_emulator: Any) -> None:
    mark = fresh_emulator.mark()
    plan = create(fresh_emulator, "myManagedIdentity", "-l", seed.LOCATION, expect=3, dry_run=True)
    assert writes(fresh_emulator, mark) == []
    mark = fresh_emulator.mark()
    create(fresh_emulator, "myManagedIdentity", "-l", seed.LOCATION)
    sent = {
        r["method"]: r for r in fresh_emulator.requests(since=mark, service="arm") if r["method"] in ("PUT", "PATCH")
    }
    for action in plan["actions"]:
        request = action["request"]
        real = sent[request["method"]]
        url = urlsplit(request["url"])
        assert url.path == real["path"]
        assert url.query == "api-version=" + real["query"]["api-version"]
        if request["method"] == "PUT":
            assert real["body"] == request["body"]
        else:  # the PATCH names the identity by the id Azure returned (lower-case resourcegroups)
            assert real["body"]["identity"]["type"] == request["body"]["identity"]["type"]
            assert {k.lower() for k in real["body"]["identity"]["userAssignedIdentities"]} == {
                k.lower() for k in request["body"]["identity"]["userAssignedIdentities"]
            }


def test_a_change_made_between_our_read_and_our_write_is_not_lost(fresh_emulator: Any, machine_identities: Any) -> None:
    run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "someoneElses")
    fresh_emulator.fault(
        "concurrent_change",
        path=f"*/virtualMachines/{seed.VM_NAME}",
        method="PATCH",
        identity=identity_id("someoneElses"),
    )
    etag_we_read = machine(fresh_emulator)["etag"]
    mark = fresh_emulator.mark()
    create(fresh_emulator)
    stale, fresh = patches(fresh_emulator, mark)
    assert (stale["status"], fresh["status"]) == (412, 200)
    # The first PATCH was guarded by the etag we read; the retry by the one after their change.
    assert if_match(stale) == etag_we_read
    assert if_match(fresh) not in (None, etag_we_read)
    assert identity_id("someoneElses").lower() in identity_map(fresh)
    assert machine_identities()[1] == sorted([EXISTING, "myManagedIdentity", "someoneElses"])


def test_remove_keeps_the_others(fresh_emulator: Any, machine_identities: Any) -> None:
    create(fresh_emulator)
    before = machine(fresh_emulator)
    mark = fresh_emulator.mark()
    data = run_json(fresh_emulator, "identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", seed.VM_NAME)
    assert data["changed"] is True
    (patch,) = patches(fresh_emulator, mark)
    assert if_match(patch) == before["etag"]
    # Azure's merge form: only the identity that goes, set to null; the others are left out and so kept.
    assert patch["body"]["identity"]["type"] == "SystemAssigned, UserAssigned"
    assert identity_map(patch) == {identity_id("myManagedIdentity").lower(): None}
    assert machine_identities() == ("SystemAssigned, UserAssigned", [EXISTING])
    again = run_json(fresh_emulator, "identity", "remove", "-g", RG, "-n", "myManagedIdentity", "--vm", seed.VM_NAME)
    assert again["changed"] is False


def test_removing_the_last_user_assigned_identity_keeps_system_assigned(
    fresh_emulator: Any, machine_identities: Any
) -> None:
    run_json(fresh_emulator, "identity", "remove", "-g", RG, "-n", EXISTING, "--vm", seed.VM_NAME)
    assert machine_identities() == ("SystemAssigned", [])


def test_scale_set_with_manual_upgrade_policy(fresh_emulator: Any, machine_identities: Any) -> None:
    run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "scaleSetIdentity")
    result = fresh_emulator.run("identity", "assign", "-g", RG, "-n", "scaleSetIdentity", "--vmss", seed.VMSS_NAME)
    assert result.returncode == 0, result.stderr
    assert "Manual upgrade policy" in result.stderr
    assert "scaleSetIdentity" in machine_identities("vmss", seed.VMSS_NAME)[1]


def test_show_and_delete(fresh_emulator: Any) -> None:
    created = run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "shortLived")
    shown = run_json(fresh_emulator, "identity", "show", "-g", RG, "-n", "shortLived")
    assert shown["clientId"] == created["clientId"]
    assert run_json(fresh_emulator, "identity", "delete", "-g", RG, "-n", "shortLived")["changed"] is True
    assert run_json(fresh_emulator, "identity", "delete", "-g", RG, "-n", "shortLived")["changed"] is False
    missing = fresh_emulator.run("identity", "show", "-g", RG, "-n", "shortLived")
    assert missing.returncode == 1 and "was not found" in missing.stderr


def test_typo_in_vm_name_leaves_no_orphan_identity(fresh_emulator: Any) -> None:
    mark = fresh_emulator.mark()
    result = fresh_emulator.run("identity", "create", "-g", RG, "-n", "orphan", "--vm", "myVMtypo")
    assert result.returncode == 1
    assert "VM myVMtypo in resource group myResourceGroup was not found" in result.stderr
    assert writes(fresh_emulator, mark) == []


def test_missing_resource_group_is_named(fresh_emulator: Any) -> None:
    result = fresh_emulator.run("identity", "create", "-g", "noSuchGroup", "-n", "orphan", "--vm", seed.VM_NAME)
    assert result.returncode == 1
    assert "resource group noSuchGroup was not found" in result.stderr


def test_unknown_subscription(fresh_emulator: Any) -> None:
    result = fresh_emulator.run(
        "--subscription", "99999999-1111-2222-3333-444444444444", "identity", "show", "-g", RG, "-n", EXISTING
    )
    assert result.returncode == 1 and "subscription" in result.stderr and "Traceback" not in result.stderr


FAULTS = [
    ("throttle", "PATCH", {"retry_after": 1}),
    ("server_error", "PATCH", {}),
    ("server_error", "GET", {}),
    ("conflict", "PATCH", {}),
    ("throttle", "PUT", {"retry_after": 1}),
]


@pytest.mark.parametrize(("kind", "method", "params"), FAULTS, ids=[f"{k}-{m}" for k, m, _ in FAULTS])
def test_transient_faults_are_retried(
    fresh_emulator: Any, machine_identities: Any, kind: str, method: str, params: dict[str, Any]
) -> None:
    path = "*/userAssignedIdentities/*" if method == "PUT" else f"*/virtualMachines/{seed.VM_NAME}"
    fresh_emulator.fault(kind, path=path, method=method, **params)
    data = create(fresh_emulator)
    assert data["changed"] is True
    assert machine_identities()[1] == sorted([EXISTING, "myManagedIdentity"])


def test_failed_operation_exits_1_and_leaves_the_vm_as_it_was(fresh_emulator: Any, machine_identities: Any) -> None:
    fresh_emulator.fault("operation_failed", path=f"*/virtualMachines/{seed.VM_NAME}", method="PATCH")
    result = fresh_emulator.run("identity", "create", "-g", RG, "-n", "myManagedIdentity", "--vm", seed.VM_NAME)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert machine_identities() == ("SystemAssigned, UserAssigned", [EXISTING])


def test_create_and_attach_fetches_one_token_for_every_client(fresh_emulator: Any) -> None:
    """The compute and identity clients read at once and share the command's token: one IMDS request."""
    mark = fresh_emulator.mark()
    run_json(fresh_emulator, "identity", "create", "-g", RG, "-n", "oneToken", "--vm", seed.VM_NAME, "-l", "westeurope")
    arm = fresh_emulator.requests(since=mark, service="arm")
    assert fresh_emulator.token_requests(since=mark) == 1
    assert not [r for r in arm if r["path"].endswith("/locations")]  # the VM is in westeurope: no region read
    assert [r["method"] for r in arm if r["method"] != "GET"] == ["PUT", "PATCH"]
