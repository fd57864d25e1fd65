"""Attaching to a machine against the emulator: nothing is decided while an operation runs on it, the
outcome is said as far as it is known, and Azure's 409 codes are told apart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import machine_identities

from provision import deadline
from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
NAME = "myManagedIdentity"
VM_PATH = f"*/virtualMachines/{seed.VM_NAME}"
ASSIGN = ("-o", "json", "identity", "assign", "-g", RG, "-n", NAME, "--vm", seed.VM_NAME)


@pytest.fixture
def identity(fresh_emulator: Any) -> str:
    created = fresh_emulator.run("-o", "json", "identity", "create", "-g", RG, "-n", NAME)
    assert created.returncode == 0, created.stderr
    return str(json.loads(created.stdout)["id"])


@pytest.fixture
def budget() -> Iterator[None]:
    yield
    deadline.start(None)


@pytest.mark.slow
def test_a_rerun_during_an_update_that_then_fails_waits_and_attaches(
    fresh_emulator: Any, emulator_environ: dict[str, str], identity: str
) -> None:
    from provision.azure.arm import Arm

    fresh_emulator.set_operation_seconds(5)  # outlasts the tool's start, so its first read sees Updating
    fresh_emulator.fault("operation_failed", path=VM_PATH, method="PATCH")
    compute = Arm.from_options(seed.SUBSCRIPTION_ID, "AzureCloud", emulator_environ["PROVISION_ARM_ENDPOINT"])
    # Someone else's attach of the same identity: GETs list it while it runs, then it fails.
    body = {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity: {}}}}
    compute.compute_client().virtual_machines.begin_update(RG, seed.VM_NAME, body, polling=False)

    result = fresh_emulator.run(*ASSIGN)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] is True
    assert "VM myVM was in the Failed state" in result.stderr
    assert machine_identities(fresh_emulator) == (
        "SystemAssigned, UserAssigned",
        sorted([seed.EXISTING_IDENTITY_NAME, NAME]),
    )


def test_a_status_url_that_keeps_failing_is_outcome_unknown_and_a_rerun_shows_the_change(
    fresh_emulator: Any, emulator_environ: dict[str, str], identity: str, budget: None, caplog: pytest.LogCaptureFixture
) -> None:
    from provision.azure import flows
    from provision.azure.arm import Arm
    from provision.azure.machines import Machine
    from provision.errors import OutcomeUnknown

    fresh_emulator.fault("server_error", path="*/operations/*", method="GET", count=None)
    arm = Arm.from_options(seed.SUBSCRIPTION_ID, "AzureCloud", emulator_environ["PROVISION_ARM_ENDPOINT"])
    deadline.start(3)
    with pytest.raises(
        OutcomeUnknown, match="the change may have been made; running the command again shows"
    ) as unknown:
        flows.assign(arm, arm.identity_client(), arm.compute_client(), RG, NAME, Machine("vm", RG, seed.VM_NAME), False)
    deadline.start(None)
    # The retries of the status URL ended with the budget, each one shown.
    assert "--timeout 3 s ran out while" in unknown.value.message
    assert "Resource Manager answered 500: retrying in" in caplog.text
    fresh_emulator.clear_faults()
    again = fresh_emulator.run(*ASSIGN)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False  # Azure had carried it out


def test_no_answer_to_the_patch_says_the_change_may_have_been_made(fresh_emulator: Any, identity: str) -> None:
    fresh_emulator.fault("drop", path=VM_PATH, method="PATCH")
    result = fresh_emulator.run(*ASSIGN)
    assert result.returncode == 1
    failure = json.loads(result.stdout)
    assert failure["outcome"] == "unknown"
    assert "was sent, but its result could not be read" in failure["error"]["message"]
    assert "may have been made" in failure["error"]["message"] and "Traceback" not in result.stderr


def test_conflicting_concurrent_write_is_waited_for(fresh_emulator: Any, identity: str) -> None:
    fresh_emulator.fault("conflict", path=VM_PATH, method="PATCH", count=2, code="ConflictingConcurrentWriteNotAllowed")
    mark = fresh_emulator.mark()
    result = fresh_emulator.run(*ASSIGN)
    assert result.returncode == 0, result.stderr
    patches = [r["status"] for r in fresh_emulator.requests(since=mark, service="arm") if r["method"] == "PATCH"]
    assert patches == [409, 409, 200]


def test_operation_not_allowed_is_final_and_changes_nothing(
    fresh_emulator: Any, emulator_environ: dict[str, str], identity: str
) -> None:
    fresh_emulator.fault("conflict", path=VM_PATH, method="PATCH", count=None, code="OperationNotAllowed")
    result = fresh_emulator.run(*ASSIGN)
    assert result.returncode == 1
    message = json.loads(result.stdout)["error"]["message"]
    assert "OperationNotAllowed" in message and "marked for deletion" in message
    fresh_emulator.clear_faults()
    assert machine_identities(fresh_emulator) == ("SystemAssigned, UserAssigned", [seed.EXISTING_IDENTITY_NAME])


def test_the_emulator_refuses_a_409_code_it_cannot_word(fresh_emulator: Any) -> None:
    with pytest.raises(AssertionError, match="InvalidFault"):
        fresh_emulator.fault("conflict", code="SomethingElse")
