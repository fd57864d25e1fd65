"""Attach and detach user-assigned identities on a VM or a scale set without disturbing the others.

One PATCH of the `identity` property only (never a PUT of the whole machine), guarded by the etag
read just before, so a change someone else makes between our read and our write is never lost:
Azure answers 412 and we read again."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from provision.azure.arm import ROLE_TO_ATTACH, AdaptivePolling, Arm, errors_explained
from provision.errors import Conflict
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
# The 409 codes that mean "busy, try again"; others (a property that cannot change, ...) are final.
BUSY_CODES = frozenset({"Conflict", "AnotherOperationInProgress", "RetryableError"})


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


def attach_body(state: MachineState, identity_id: str) -> dict[str, Any]:
    """The PATCH that adds one identity: `type` keeps SystemAssigned, the map keeps every identity."""
    identities: dict[str, Any] = {existing: {} for existing in state.user_assigned}
    identities[identity_id] = {}
    return {"identity": {"type": identity_type(state.system_assigned, True), "userAssignedIdentities": identities}}


def detach_body(state: MachineState, identity_id: str) -> dict[str, Any]:
    """The PATCH that removes one identity: it alone goes to null, and `type` is recomputed."""
    if state.without(identity_id).user_assigned:
        attached = next(existing for existing in state.user_assigned if same_resource_id(existing, identity_id))
        return {
            "identity": {"type": identity_type(state.system_assigned, True), "userAssignedIdentities": {attached: None}}
        }
    if state.system_assigned:
        return {"identity": {"type": "SystemAssigned", "userAssignedIdentities": None}}
    return {"identity": {"type": "None"}}


# A decision on a freshly read state: the action, and the PATCH body with the state it leads to (None: no write).
Change = tuple[dict[str, Any], MachineState]
Decision = Callable[[MachineState], "tuple[Action, Change | None]"]


def attach(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_id: str,
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
    known: MachineState | None = None,
) -> tuple[Action, MachineState]:
    """Attach the identity; `known` is a state just read, saving one GET (a stale etag costs a 412)."""
    target = f"{machine.label} identity {identity_id.rsplit('/', 1)[-1]}"

    def decide(state: MachineState) -> tuple[Action, Change | None]:
        if state.has(identity_id):
            return Action("noop", target, "already attached"), None
        kept = len(state.user_assigned) + state.system_assigned
        reason = f"not attached; keeps the {kept} identit{'y' if kept == 1 else 'ies'} already there"
        planned = replace(state, user_assigned=(*state.user_assigned, identity_id))
        return Action("attach", target, reason), (attach_body(state, identity_id), planned)

    return _patch_identity(compute, arm, machine, decide, dry_run, on_wait, known)


def detach(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    identity_id: str,
    dry_run: bool,
    on_wait: Callable[[float], None] | None = None,
) -> tuple[Action, MachineState]:
    target = f"{machine.label} identity {identity_id.rsplit('/', 1)[-1]}"

    def decide(state: MachineState) -> tuple[Action, Change | None]:
        if not state.has(identity_id):
            return Action("noop", target, "not attached"), None
        if state.encryption_identity and same_resource_id(state.encryption_identity, identity_id):
            raise Conflict(
                f"{machine.label} uses this identity for disk encryption"
                " (securityProfile.encryptionIdentity): removing it would break the machine",
                hint="Point the encryption identity at another identity first.",
            )
        return Action("detach", target, "attached"), (detach_body(state, identity_id), state.without(identity_id))

    return _patch_identity(compute, arm, machine, decide, dry_run, on_wait, None)


def _patch_identity(
    compute: ComputeManagementClient,
    arm: Arm,
    machine: Machine,
    decide: Decision,
    dry_run: bool,
    on_wait: Callable[[float], None] | None,
    known: MachineState | None,
) -> tuple[Action, MachineState]:
    """Read, decide, PATCH with If-Match; again on 412 or 409. Returns the action and the machine's state
    after it (as planned for a dry run)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError

    subject = f"{machine.label} in resource group {machine.resource_group}"
    busy = 0
    for attempt in range(MAX_ATTEMPTS):
        state = known if attempt == 0 and known is not None else read_machine(compute, arm, machine)
        action, change = decide(state)
        if change is None:
            return action, state
        body, planned = change
        action.request = {
            "method": "PATCH",
            "url": arm.url(machine.path(arm.subscription), API_VERSION),
            "headers": {"If-Match": state.etag} if state.etag else {},
            "body": body,
        }
        if dry_run:
            return action, planned
        with errors_explained(subject, arm, machine.resource_group, ROLE_TO_ATTACH):
            try:
                poller = machine.operations(compute).begin_update(
                    machine.resource_group,
                    machine.name,
                    body,
                    etag=state.etag,
                    match_condition=MatchConditions.IfNotModified if state.etag else None,
                    polling=AdaptivePolling(on_wait),
                )
                updated = poller.result()
            except ResourceModifiedError:
                log.info("%s changed since it was read (412): reading it again", machine.label)
                continue
            except HttpResponseError as error:
                busy_code = getattr(error.error, "code", None) in BUSY_CODES
                if error.status_code != 409 or not busy_code or attempt == MAX_ATTEMPTS - 1:
                    raise
                # Jitter keeps concurrent pipelines from retrying in lockstep.
                delay = BUSY_WAITS[min(busy, len(BUSY_WAITS) - 1)] * random.uniform(0.75, 1.25)  # noqa: S311
                busy += 1
                log.info("%s is busy with another operation (409): retrying in %.1f s", machine.label, delay)
                time.sleep(delay)
                continue
        return action, MachineState.from_sdk(updated)
    raise Conflict(
        f"{subject} kept changing while the identity was being updated ({MAX_ATTEMPTS} attempts)",
        hint="Nothing was changed by this run; try again when other deployments on it have finished.",
    )
