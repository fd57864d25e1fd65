"""The `provision identity` steps, each a read-decide-apply sequence that returns a Result.

The clients are parameters so tests can hand in autospecced ones; the CLI builds real ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from provision.azure import identities, machines
from provision.azure.arm import Arm, concurrently, require_location, resource_group_location
from provision.azure.machines import Machine, MachineState
from provision.errors import NotFound
from provision.plan import Result
from provision.validate import IdentityId

if TYPE_CHECKING:
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient

Waiter = Callable[[float], None] | None


def create(
    arm: Arm,
    msi: ManagedServiceIdentityClient,
    compute: ComputeManagementClient,
    resource_group: str,
    name: str,
    location: str | None,
    tags: dict[str, str],
    machine: Machine | None,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    """Create the identity if missing (in `location`, as validated; None: the resource group's region) and attach
    it to `machine`. A region is checked against the subscription's unless the answer is already known."""
    result = Result(dry_run=dry_run)
    # The machine is read before anything is written: a typo in its name must not leave an orphan identity
    # behind. Its read and the identity's are independent, so they are made at once.
    state, current = concurrently(
        lambda: machines.read_machine(compute, arm, machine) if machine else None,
        lambda: identities.read_identity(msi, arm, resource_group, name),
    )
    if location is None:
        location = current.location if current else resource_group_location(compute, arm, resource_group)
    elif not region_known(location, current, state):
        require_location(compute, arm, location)
    identity, action = identities.ensure_identity(msi, arm, resource_group, name, location, tags, dry_run, current)
    result.add(action)
    result.fields.update(identity.fields())
    if machine is not None:
        _attach(result, arm, compute, machine, identity.id, dry_run, on_wait, state)
    return result


def region_known(location: str, identity: identities.Identity | None, state: MachineState | None) -> bool:
    """Whether the subscription is known to offer `location` without asking: the identity or the machine,
    just read, is there (a made-up region still gets the subscription's list of locations)."""
    return any(found is not None and found.location.replace(" ", "").lower() == location for found in (identity, state))


def assign(
    arm: Arm,
    msi: ManagedServiceIdentityClient,
    compute: ComputeManagementClient,
    resource_group: str,
    name: str,
    machine: Machine,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    result = Result(dry_run=dry_run)
    # Independent reads, made at once; the identity's error (it does not exist) wins, as when it was read first.
    # A machine read while an operation runs on it is read again until settled, by the attach step.
    identity, state = concurrently(
        lambda: _existing(msi, arm, resource_group, name),
        lambda: machines.read_machine(compute, arm, machine),
    )
    result.fields.update(identity.fields())
    _attach(result, arm, compute, machine, identity.id, dry_run, on_wait, state)
    return result


def remove(
    arm: Arm,
    compute: ComputeManagementClient,
    resource_group: str,
    name: str,
    machine: Machine,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    """Detach by resource id: works even when the identity itself was already deleted."""
    result = Result(dry_run=dry_run)
    identity_id = str(IdentityId(arm.subscription, resource_group, name))
    applied = machines.detach(compute, arm, machine, identity_id, dry_run, on_wait)
    result.add(applied.action)
    result.fields.update({"id": identity_id, "name": name, "machine": _machine_fields(machine, applied.after)})
    _warn_if_failed(result, machine, applied)
    return result


def delete(arm: Arm, msi: ManagedServiceIdentityClient, resource_group: str, name: str, dry_run: bool) -> Result:
    result = Result(dry_run=dry_run)
    identity, action = identities.delete_identity(msi, arm, resource_group, name, dry_run, result.warnings.append)
    result.add(action)
    result.fields.update(
        identity.fields() if identity else {"id": str(IdentityId(arm.subscription, resource_group, name)), "name": name}
    )
    return result


def show(arm: Arm, msi: ManagedServiceIdentityClient, resource_group: str, name: str) -> Result:
    result = Result()
    result.fields.update(_existing(msi, arm, resource_group, name).fields())
    return result


def _existing(msi: ManagedServiceIdentityClient, arm: Arm, resource_group: str, name: str) -> identities.Identity:
    identity = identities.read_identity(msi, arm, resource_group, name)
    if identity is None:
        raise NotFound(
            f"identity {name} was not found in resource group {resource_group} (subscription {arm.subscription})",
            hint=f"Create it with: provision identity create -g {resource_group} -n {name}",
        )
    return identity


def _attach(
    result: Result,
    arm: Arm,
    compute: ComputeManagementClient,
    machine: Machine,
    identity_id: str,
    dry_run: bool,
    on_wait: Waiter,
    known: MachineState | None,
) -> None:
    applied = machines.attach(compute, arm, machine, identity_id, dry_run, on_wait, known)
    result.add(applied.action)
    result.fields["machine"] = _machine_fields(machine, applied.after)
    _warn_if_failed(result, machine, applied)
    if machine.kind == "vmss" and applied.action.changes and (applied.after.upgrade_mode or "").lower() == "manual":
        result.warnings.append(
            f"scale set {machine.name} has a Manual upgrade policy: its instances get the identity only once"
            f" they are updated (az vmss update-instances -g {machine.resource_group} -n {machine.name}"
            " --instance-ids '*')"
        )


def _warn_if_failed(result: Result, machine: Machine, applied: machines.Applied) -> None:
    if not applied.before.failed:
        return
    if applied.action.changes:
        what = "would repair it" if result.dry_run else "repairs it"
        result.warnings.append(
            f"{machine.label} was in the Failed state (its last operation failed); this update {what}"
        )
    else:
        result.warnings.append(
            f"{machine.label} is in the Failed state (its last operation failed); any update of the machine repairs it"
        )


def _machine_fields(machine: Machine, state: MachineState) -> dict[str, Any]:
    return {
        "kind": machine.kind,
        "name": machine.name,
        "resourceGroup": machine.resource_group,
        "systemAssigned": state.system_assigned,
        "userAssignedIdentities": [identity_id.rsplit("/", 1)[-1] for identity_id in state.user_assigned],
    }
