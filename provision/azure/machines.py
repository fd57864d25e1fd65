"""Attach and detach user-assigned identities on a VM or a scale set without disturbing the others.

Read, decide, apply. The read waits until the machine is settled: while an operation runs on it
(provisioningState Updating, Creating, ...), its model shows what was asked, not what is in effect.
The decision (`plan_attach`, `plan_detach`) is a pure function of that state. Applying is one PATCH
of the `identity` property only (never a PUT of the whole machine), guarded by the etag read just
before, so a change someone else makes between our read and our write is never lost: Azure answers
412 and the driver reads and decides again; a busy machine (409) is waited for within the time budget.

What the outcome of a write is, is said as far as it is known: refused (nothing changed), failed
(Azure's message), or unknown (OutcomeUnknown: sent or accepted, but its result could not be read)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from provision import deadline
from provision.azure.arm import ROLE_TO_ATTACH, ROLE_TO_UPDATE_MACHINE, AdaptivePolling, Arm, errors_explained
from provision.errors import Conflict, Interrupted, OutcomeUnknown, TimedOut
from provision.plan import Action
from provision.validate import same_resource_id

if TYPE_CHECKING:
    from azure.mgmt.compute import ComputeManagementClient

log = logging.getLogger("provision.azure")

API_VERSION = "2026-04-01"  # azure-mgmt-compute's default for VMs and scale sets, shown in --dry-run
# Rounds of read + write while other writers change the machine (412) or keep it busy (409): each round
# someone's write lands, so ten pipelines attaching to one VM at once all get through.
MAX_ATTEMPTS = 30
BUSY_WAITS = (0.5, 1.0, 2.0, 4.0, 5.0)  # seconds before reading again while another operation runs (409)
# The 409 codes that mean "busy, try again": Compute's Conflict and AnotherOperationInProgress, and
# Resource Manager's ConflictingConcurrentWriteNotAllowed ("The operation was interrupted by a
# conflicting concurrent write on the same entity. Please retry later."). Others are final, such as
# OperationNotAllowed ("... is not allowed on VM 'x' since the VM is marked for deletion").
BUSY_CODES = frozenset(
    {"Conflict", "AnotherOperationInProgress", "ConflictingConcurrentWriteNotAllowed", "RetryableError"}
)
# provisioningState values after which nothing runs on the machine; any other (Creating, Updating,
# Deleting, Migrating, ...) is an operation in flight (aad-pod-identity checks the same before its
# identity PATCHes: github.com/Azure/aad-pod-identity/pull/937).
SETTLED_STATES = frozenset({"succeeded", "failed"})
SETTLE_WAITS = (0.5, 1.0, 2.0, 5.0)  # seconds between reads of a machine that is not settled yet


@dataclass(frozen=True)
class Machine:
    kind: str  # "vm" or "vmss"
    resource_group: str
    name: str

    @property
    def label(self) -> str:
        return f"{'VM' if self.kind == 'vm' else 'scale set'} {self.name}"

    def path(self, subscription: str) -> str:
        provider = "virtualMachines" if self.kind == "vm" else "virtualMachineScaleSets"
        return (
            f"/subscriptions/{subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/{provider}/{self.name}"
        )

    def operations(self, compute: ComputeManagementClient) -> Any:
        return compute.virtual_machines if self.kind == "vm" else compute.virtual_machine_scale_sets


@dataclass(frozen=True)
class MachineState:
    """What matters of a machine for its identities, as last read."""

    location: str
    etag: str | None
    system_assigned: bool
    user_assigned: tuple[str, ...]  # resource ids, as Azure spelled them
    encryption_identity: str | None  # securityProfile.encryptionIdentity.userAssignedIdentityResourceId
    upgrade_mode: str | None  # scale sets: upgradePolicy.mode
    provisioning_state: str = "Succeeded"  # Succeeded, Failed, or an operation in flight (Updating, ...)

    @property
    def settled(self) -> bool:
        return self.provisioning_state.lower() in SETTLED_STATES

    @property
    def failed(self) -> bool:
        """The last operation on the machine failed: its model may list what is not in effect."""
        return self.provisioning_state.lower() == "failed"

    @classmethod
    def from_sdk(cls, model: Any) -> MachineState:
        data = model.as_dict() if hasattr(model, "as_dict") else dict(model)
        identity = data.get("identity") or {}
        types = {part.strip().lower() for part in str(identity.get("type") or "None").split(",")}
        properties = data.get("properties") or {}
        security = properties.get("securityProfile") or (properties.get("virtualMachineProfile") or {}).get(
            "securityProfile"
        )
        encryption = ((security or {}).get("encryptionIdentity") or {}).get("userAssignedIdentityResourceId")
        return cls(
            location=data.get("location", ""),
            etag=data.get("etag"),
            system_assigned="systemassigned" in types,
            user_assigned=tuple(identity.get("userAssignedIdentities") or {}),
            encryption_identity=encryption,
            upgrade_mode=(properties.get("upgradePolicy") or {}).get("mode"),
            # Azure's GET always has it; a body without it (a test's, a PATCH answer) is taken as settled.
            provisioning_state=str(properties.get("provisioningState") or "Succeeded"),
        )

    def has(self, identity_id: str) -> bool:
        return any(same_resource_id(existing, identity_id) for existing in self.user_assigned)

    def without(self, identity_id: str) -> MachineState:
        kept = tuple(existing for existing in self.user_assigned if not same_resource_id(existing, identity_id))
        return replace(self, user_assigned=kept)


def identity_type(system_assigned: bool, user_assigned: bool) -> str:
    if system_assigned and user_assigned:
        return "SystemAssigned, UserAssigned"
    return "SystemAssigned" if system_assigned else "UserAssigned" if user_assigned else "None"


def read_machine(compute: ComputeManagementClient, arm: Arm, machine: Machine) -> MachineState:
    with errors_explained(f"{machine.label} in resource group {machine.resource_group}", arm, machine.resource_group):
        return MachineState.from_sdk(machine.operations(compute).get(machine.resource_group, machine.name))


def attach_body(state: MachineState, *identity_ids: str) -> dict[str, Any]:
    """The PATCH that adds identities: `type` keeps SystemAssigned, the map keeps every identity."""
    identities: dict[str, Any] = {existing: {} for existing in state.user_assigned}
    identities.update({identity_id: {} for identity_id in identity_ids})
    return {"identity": {"type": identity_type(state.system_assigned, True), "userAssignedIdentities": identities}}


def detach_body(state: MachineState, *identity_ids: str) -> dict[str, Any]:
    """The PATCH that removes identities: they alone go to null, and `type` is recomputed."""
    remaining = state
    for identity_id in identity_ids:
        remaining = remaining.without(identity_id)
    if remaining.user_assigned:
        attached = [
            existing
            for existing in state.user_assigned
            if any(same_resource_id(existing, identity_id) for identity_id in identity_ids)
        ]
        return {
            "identity": {
                "type": identity_type(state.system_assigned, True),
                "userAssignedIdentities": dict.fromkeys(attached),
            }
        }
    if state.system_assigned:
        return {"identity": {"type": "SystemAssigned", "userAssignedIdentities": None}}
    return {"identity": {"type": "None"}}


def read_settled(
    compute: ComputeManagementClient, arm: Arm, machine: Machine, on_wait: Callable[[float], None] | None = None
) -> MachineState:
    """The machine once no operation runs on it (provisioningState Succeeded or Failed), read again and
    again within the time budget: TimedOut when it does not settle in time."""
    budget = deadline.current()
    waits = 0
    while True:
        state = read_machine(compute, arm, machine)
        if state.settled:
            return state
        delay = SETTLE_WAITS[min(waits, len(SETTLE_WAITS) - 1)]
        waits += 1
        log.info("%s is %s: reading it again in %.1f s", machine.label, state.provisioning_state, delay)
        if on_wait is not None:
            on_wait(delay)
        budget.sleep(delay, f"waiting for {machine.label} to finish its operation ({state.provisioning_state})")


@dataclass(frozen=True)
class Plan:
    """What to do on a machine as it was read: the action and, when it changes something, the PATCH
    body and the state it leads to."""

    action: Action
    body: dict[str, Any] | None = None
    planned: MachineState | None = None


@dataclass(frozen=True)
class Applied:
    """The action taken, the settled state it was decided on, and the machine's state after it
    (as planned, for a dry run)."""

    action: Action
    before: MachineState
    after: MachineState


def plan_attach(state: MachineState, identity_id: str, target: str) -> Plan:
    return plan_attach_all(state, (identity_id,), target)


def plan_attach_all(state: MachineState, identity_ids: tuple[str, ...], target: str) -> Plan:
    """One PATCH that attaches every identity not attached yet."""
    missing = tuple(identity_id for identity_id in identity_ids if not state.has(identity_id))
    if not missing and not state.failed:
        return Plan(Action("noop", target, "already attached"))
    if not missing:
        # The model lists them, but the operation that put them there failed: they may not be in effect.
        # Sending them again makes Azure apply the model again, which is how a Failed machine recovers.
        return Plan(
            Action("attach", target, "listed, but the machine's last operation failed"),
            attach_body(state, *identity_ids),
            state,
        )
    kept = len(state.user_assigned) + state.system_assigned
    reason = f"not attached; keeps the {kept} identit{'y' if kept == 1 else 'ies'} already there"
    if len(identity_ids) > 1:
        reason = f"{len(missing)} of {len(identity_ids)} " + reason
    planned = replace(state, user_assigned=(*state.user_assigned, *missing))
    return Plan(Action("attach", target, reason), attach_body(state, *missing), planned)


def plan_detach(state: MachineState, identity_id: str, target: str, label: str) -> Plan:
    return plan_detach_all(state, (identity_id,), target, label)


def plan_detach_all(state: MachineState, identity_ids: tuple[str, ...], target: str, label: str) -> Plan:
    """One PATCH that detaches every one of the identities still attached."""
    present = tuple(identity_id for identity_id in identity_ids if state.has(identity_id))
    if not present:
        return Plan(Action("noop", target, "not attached"))
    encryption = state.encryption_identity
    if encryption and any(same_resource_id(encryption, identity_id) for identity_id in present):
        raise Conflict(
            f"{label} uses this identity for disk encryption"
            " (securityProfile.encryptionIdentity): removing it would break the machine",
            hint="Point the encryption identity at another identity first.",
        )
    planned = state
    for identity_id in present:
        planned = planned.without(identity_id)
    return Plan(Action("detach", target, "attached"), detach_body(state, *present), planned)


def attach(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_id: str,
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
    known: MachineState | None = None,
) -> Applied:
    """Attach the identity; `known` is a state just read, saving one GET (a stale etag costs a 412)."""
    return attach_all(compute, arm, machine, (identity_id,), dry_run, on_wait, known)


def attach_all(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_ids: tuple[str, ...],
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
    known: MachineState | None = None,
) -> Applied:
    """Attach several identities with one PATCH (one long-running operation instead of one each)."""
    target = _target(machine, identity_ids)
    return _apply(
        compute, arm, machine, lambda state: plan_attach_all(state, identity_ids, target), dry_run, on_wait, known
    )


def detach(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_id: str,
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
) -> Applied:
    return detach_all(compute, arm, machine, (identity_id,), dry_run, on_wait)


def detach_all(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_ids: tuple[str, ...],
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
) -> Applied:
    target = _target(machine, identity_ids)
    return _apply(
        compute,
        arm,
        machine,
        lambda state: plan_detach_all(state, identity_ids, target, machine.label),
        dry_run,
        on_wait,
    )


def _target(machine: Machine, identity_ids: tuple[str, ...]) -> str:
    names = ", ".join(identity_id.rsplit("/", 1)[-1] for identity_id in identity_ids)
    return f"{machine.label} identit{'y' if len(identity_ids) == 1 else 'ies'} {names}"


class _PreconditionFailed(Exception):
    """412: the machine changed since it was read."""


class _Busy(Exception):
    """409 with a busy code: another operation runs on the machine."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _apply(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    plan: Callable[[MachineState], Plan],
    dry_run: bool,
    on_wait: Callable[[float], None] | None,
    known: MachineState | None = None,
) -> Applied:
    """The retry driver: read the settled state, plan, PATCH; read and plan again after a 412, and after
    a busy 409 once the wait is over. A dry run stops before the PATCH."""
    subject = f"{machine.label} in resource group {machine.resource_group}"
    busy_waits = 0
    for attempt in range(MAX_ATTEMPTS):
        fresh = attempt == 0 and known is not None and known.settled
        before = known if fresh and known is not None else read_settled(compute, arm, machine, on_wait)
        decided = plan(before)
        if decided.body is None or decided.planned is None:
            return Applied(decided.action, before, before)
        decided.action.request = {
            "method": "PATCH",
            "url": arm.url(machine.path(arm.subscription), API_VERSION),
            "headers": {"If-Match": before.etag} if before.etag else {},
            "body": decided.body,
        }
        if dry_run:
            return Applied(decided.action, before, decided.planned)
        try:
            after = _patch(compute, arm, machine, before.etag, decided.body, on_wait)
        except _PreconditionFailed:
            log.info("%s changed since it was read (412): reading it again", machine.label)
            continue
        except _Busy as busy:
            if attempt == MAX_ATTEMPTS - 1:
                raise Conflict(
                    f"{subject} stayed busy with other operations (409 {busy.code}) through {MAX_ATTEMPTS}"
                    " attempts; nothing was changed by this run",
                    hint="Run the command again once the other deployments on it have finished.",
                ) from None
            # Jitter keeps concurrent pipelines from retrying in lockstep.
            delay = BUSY_WAITS[min(busy_waits, len(BUSY_WAITS) - 1)] * random.uniform(0.75, 1.25)  # noqa: S311
            busy_waits += 1
            log.info("%s is busy with another operation (409 %s): retrying in %.1f s", machine.label, busy.code, delay)
            deadline.current().sleep(
                delay, f"waiting for {machine.label} to finish another operation (409 {busy.code})"
            )
            continue
        return Applied(decided.action, before, after)
    raise Conflict(
        f"{subject} kept changing while the identity was being updated ({MAX_ATTEMPTS} attempts)",
        hint="Nothing was changed by this run; try again when other deployments on it have finished.",
    )


def _patch(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    etag: str | None,
    body: dict[str, Any],
    on_wait: Callable[[float], None] | None,
) -> MachineState:
    """One PATCH with If-Match and its long-running operation, to the machine's state after it.

    _PreconditionFailed on 412 and _Busy on a busy 409 (nothing was changed); a refused PATCH or a
    failed operation is the AzureError errors_explained makes of Azure's answer; once the PATCH was sent,
    anything that leaves its result unread (no answer, polling that fails or outlasts the budget) is
    OutcomeUnknown; Ctrl-C or SIGTERM meanwhile re-raises Interrupted with `during` set."""
    from azure.core import MatchConditions
    from azure.core.exceptions import AzureError as SdkError
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ServiceResponseError
    from azure.core.polling.base_polling import OperationFailed

    subject = f"{machine.label} in resource group {machine.resource_group}"
    doing = f"updating {machine.label}"
    # Azure checks assign permission on every identity the body names with a value (LinkedAuthorizationFailed).
    named = (body.get("identity") or {}).get("userAssignedIdentities") or {}
    needs_role = ROLE_TO_ATTACH if any(value is not None for value in named.values()) else ROLE_TO_UPDATE_MACHINE
    with errors_explained(subject, arm, machine.resource_group, needs_role):
        try:
            poller = machine.operations(compute).begin_update(
                machine.resource_group,
                machine.name,
                body,
                etag=etag,
                match_condition=MatchConditions.IfNotModified if etag else None,
                polling=AdaptivePolling(on_wait, f"waiting for the update of {machine.label} to finish", arm.polls),
            )
        except ResourceModifiedError:
            raise _PreconditionFailed() from None
        except HttpResponseError as error:
            code = getattr(error.error, "code", None)
            if error.status_code == 409 and code in BUSY_CODES:
                raise _Busy(str(code)) from None
            raise
        except ServiceResponseError as error:
            raise _unknown(machine, f"the PATCH was sent but no answer came ({error})") from None
        except Interrupted as interrupted:
            interrupted.during = doing
            raise
        try:
            return MachineState.from_sdk(poller.result())
        except HttpResponseError as error:
            if isinstance(error.__cause__, OperationFailed):
                raise  # Azure says how it failed; errors_explained shows its code and message
            raise _unknown(machine, f"reading the operation's status failed: {error.status_code or error}") from None
        except SdkError as error:
            raise _unknown(machine, f"reading the operation's status failed: {error}") from None
        except TimedOut as timed_out:
            raise _unknown(machine, timed_out.message, timed_out.hint) from None
        except Interrupted as interrupted:
            interrupted.during = doing
            raise


def _unknown(machine: Machine, why: str, hint: str | None = None) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"the update of {machine.label} was sent, but its result could not be read ({why}): the change may"
        " have been made; running the command again shows whether it was, and finishes it if not",
        hint=hint,
    )
