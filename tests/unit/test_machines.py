"""Attach and detach on a machine, at the library level with autospecced clients: settled state first,
outcomes said as known, every wait bounded by the time budget, and the 409 codes told apart."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.core.polling.base_polling import BadStatus, OperationFailed
from test_identity import NEW_ID, OTHER_ID, SUB, Clients, done, http_error, identity_model, vm

from provision import deadline
from provision.azure import flows, machines
from provision.azure.arm import AdaptivePolling, Arm, BudgetRetryPolicy
from provision.cloud import get_cloud
from provision.errors import AzureError, Conflict, Interrupted, OutcomeUnknown, TimedOut

RG = "myResourceGroup"
ARM = Arm(SUB, get_cloud("AzureCloud"), "https://127.0.0.1:1")
MACHINE = machines.Machine("vm", RG, "myVM")
ATTACHED = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {NEW_ID: {}}}
NOT_ATTACHED = {"type": "SystemAssigned"}


@pytest.fixture(autouse=True)
def no_budget() -> Iterator[None]:
    """Each test starts without a budget and leaves none behind."""
    deadline.start(None)
    yield
    deadline.start(None)


@pytest.fixture
def clients() -> Clients:
    return Clients()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("provision.deadline.time.sleep", slept.append)
    return slept


def attach(clients: Clients) -> machines.Applied:
    return machines.attach(clients.compute, ARM, MACHINE, NEW_ID, dry_run=False)


def failing_poller(error: BaseException) -> Any:
    poller = done(None)
    poller.result.side_effect = error
    return poller


def poll_error(cause: Exception) -> HttpResponseError:
    """What azure-core's poller raises: an HttpResponseError caused by what went wrong while polling."""
    error = http_error(500, "InternalServerError")
    error.__cause__ = cause
    return error


# -- settled state --------------------------------------------------------------------------------


def test_an_updating_vm_is_waited_for_before_anything_is_decided(clients: Clients, no_sleep: list[float]) -> None:
    # While the update runs, the model lists the identity; the update then fails and takes it away.
    clients.vms.get.side_effect = [
        vm(ATTACHED, provisioningState="Updating"),
        vm(ATTACHED, provisioningState="Updating"),
        vm(NOT_ATTACHED, etag='"3"', provisioningState="Failed"),
    ]
    clients.vms.begin_update.return_value = done(vm(ATTACHED, provisioningState="Succeeded"))
    applied = attach(clients)
    assert applied.action.verb == "attach"
    assert clients.vms.get.call_count == 3 and no_sleep == [0.5, 1.0]
    assert clients.vms.begin_update.call_args.kwargs["etag"] == '"3"'


def test_a_vm_that_never_settles_ends_with_the_budget_and_writes_nothing(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED, provisioningState="Updating")
    deadline.start(0.05)
    with pytest.raises(TimedOut, match=r"ran out while waiting for VM myVM to finish its operation \(Updating\)"):
        attach(clients)
    clients.vms.begin_update.assert_not_called()


def test_a_failed_vm_that_lists_the_identity_gets_the_patch_that_repairs_it(clients: Clients) -> None:
    clients.identities.get.return_value = identity_model()
    clients.vms.get.return_value = vm(ATTACHED, provisioningState="Failed")
    clients.vms.begin_update.return_value = done(vm(ATTACHED, provisioningState="Succeeded"))
    result = flows.assign(ARM, clients.msi, clients.compute, RG, "myManagedIdentity", MACHINE, dry_run=False)
    assert clients.patch_body()["identity"]["userAssignedIdentities"] == {NEW_ID: {}}
    assert result.changed
    assert result.warnings == ["VM myVM was in the Failed state (its last operation failed); this update repairs it"]


def test_a_failed_vm_with_nothing_to_detach_is_reported(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED, provisioningState="Failed")
    result = flows.remove(ARM, clients.compute, RG, "myManagedIdentity", MACHINE, dry_run=False)
    assert not result.changed and "Failed state" in result.warnings[0]
    assert clients.writes() == []


# -- what is known of the outcome -----------------------------------------------------------------


def test_no_answer_to_the_patch_is_outcome_unknown(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.side_effect = ServiceResponseError("Connection aborted.")
    with pytest.raises(OutcomeUnknown, match="may have been made") as unknown:
        attach(clients)
    assert unknown.value.outcome == "unknown" and unknown.value.exit_status == 1


@pytest.mark.parametrize(
    "error",
    [
        poll_error(BadStatus("Invalid return status 500 for 'GET' operation")),
        poll_error(BadStatus("Invalid return status 429 for 'GET' operation")),
        ServiceResponseError("Connection aborted."),
        TimedOut("--timeout 5 s ran out while waiting for the update of VM myVM to finish", hint="Raise --timeout"),
    ],
    ids=["5xx", "429", "dropped", "budget"],
)
def test_a_poll_that_fails_is_outcome_unknown(clients: Clients, error: Exception) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.return_value = failing_poller(error)
    with pytest.raises(OutcomeUnknown, match="may have been made; running the command again shows whether"):
        attach(clients)


def test_a_failed_operation_is_a_plain_failure_with_azures_message(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.return_value = failing_poller(poll_error(OperationFailed("Operation failed")))
    with pytest.raises(AzureError) as failed:
        attach(clients)
    assert not isinstance(failed.value, OutcomeUnknown)
    assert "InternalServerError: refused" in failed.value.message


@pytest.mark.parametrize("phase", ["request", "poll"])
def test_an_interrupt_mid_update_says_what_was_under_way(clients: Clients, phase: str) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    if phase == "request":
        clients.vms.begin_update.side_effect = Interrupted(15)
    else:
        clients.vms.begin_update.return_value = failing_poller(Interrupted(15))
    with pytest.raises(Interrupted) as interrupted:
        attach(clients)
    assert interrupted.value.during == "updating VM myVM" and interrupted.value.exit_status == 143


# -- 409s -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["Conflict", "AnotherOperationInProgress", "ConflictingConcurrentWriteNotAllowed"])
def test_busy_codes_are_waited_for(clients: Clients, no_sleep: list[float], code: str) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.side_effect = [http_error(409, code), done(vm(ATTACHED))]
    assert attach(clients).action.verb == "attach"
    assert clients.vms.begin_update.call_count == 2 and len(no_sleep) == 1


def test_operation_not_allowed_is_final(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.side_effect = http_error(409, "OperationNotAllowed")
    with pytest.raises(AzureError, match="OperationNotAllowed"):
        attach(clients)
    assert clients.vms.begin_update.call_count == 1


def test_a_machine_busy_past_the_budget_says_so(clients: Clients) -> None:
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.side_effect = http_error(409, "AnotherOperationInProgress")
    deadline.start(0.2)
    with pytest.raises(TimedOut, match=r"finish another operation \(409 AnotherOperationInProgress\)"):
        attach(clients)


def test_a_machine_busy_through_every_attempt_says_so(
    clients: Clients, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machines, "MAX_ATTEMPTS", 3)
    clients.vms.get.return_value = vm(NOT_ATTACHED)
    clients.vms.begin_update.side_effect = http_error(409, "ConflictingConcurrentWriteNotAllowed")
    with pytest.raises(Conflict, match="stayed busy with other operations .* through 3 attempts; nothing was changed"):
        attach(clients)


def test_plans_are_pure_functions_of_the_state() -> None:
    state = machines.MachineState.from_sdk(vm({"type": "UserAssigned", "userAssignedIdentities": {OTHER_ID: {}}}))
    plan = machines.plan_attach(state, NEW_ID, "t")
    assert plan.body == {"identity": {"type": "UserAssigned", "userAssignedIdentities": {OTHER_ID: {}, NEW_ID: {}}}}
    assert plan.planned is not None and plan.planned.has(NEW_ID)
    assert machines.plan_detach(state, NEW_ID, "t", "VM myVM").body is None


# -- the budget bounds polling and retries --------------------------------------------------------


def polling(retry_after: str | None = None) -> AdaptivePolling:
    method = AdaptivePolling(doing="waiting for the update of VM myVM to finish")
    headers = {} if retry_after is None else {"retry-after": retry_after}
    method._pipeline_response = SimpleNamespace(http_response=SimpleNamespace(headers=headers))  # type: ignore[assignment]
    return method


def test_polling_caps_retry_after_and_ends_with_the_budget() -> None:
    assert polling("3600")._extract_delay() == deadline.MAX_SINGLE_WAIT
    deadline.start(2)
    assert 1.5 < polling("3600")._extract_delay() <= 2
    deadline.start(0)
    with pytest.raises(TimedOut, match="waiting for the update of VM myVM to finish"):
        polling()._extract_delay()


def retry_response(retry_after: str) -> Any:
    return SimpleNamespace(http_response=SimpleNamespace(status_code=429, headers={"Retry-After": retry_after}))


def test_retries_honour_retry_after_only_within_the_cap_and_show_it(
    no_sleep: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    policy = BudgetRetryPolicy()
    settings = policy.configure_retries({})
    with caplog.at_level(logging.WARNING, logger="provision.azure"):
        policy.sleep(settings, transport=None, response=retry_response("3600"))
    assert no_sleep == [deadline.MAX_SINGLE_WAIT]
    assert "Resource Manager answered 429: retrying in 60.0 s" in caplog.text


def test_a_retry_the_budget_cannot_cover_times_out() -> None:
    policy = BudgetRetryPolicy()
    deadline.start(0.05)
    with pytest.raises(TimedOut, match="waiting to retry a Resource Manager request"):
        policy.sleep(policy.configure_retries({}), transport=None, response=retry_response("30"))


def test_each_attempt_gets_at_most_what_is_left_of_the_budget() -> None:
    policy = BudgetRetryPolicy()
    request = SimpleNamespace(context=SimpleNamespace(options={}, transport=None))
    policy._configure_timeout(request, 604800, True)
    assert request.context.options == {"connection_timeout": 10, "read_timeout": 60}
    deadline.start(3)
    policy._configure_timeout(request, 604800, True)
    assert 2 < request.context.options["read_timeout"] <= 3 and request.context.options["connection_timeout"] <= 3
    deadline.start(0)
    time.sleep(0.001)
    with pytest.raises(TimedOut):
        policy._configure_timeout(request, 604800, True)
