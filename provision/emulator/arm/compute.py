"""Microsoft.Compute as the emulator answers it: virtual machines and scale sets (their identities, profiles
and instance views), their network interfaces, and the long-running operations that update them.

A machine's update is applied to its model at once (GET shows the requested identities, with
provisioningState `Updating`, as Compute does: the PATCH answer and GETs carry the goal state while the
operation runs) and becomes effective when its operation ends: only then does the Instance Metadata
Service hand out tokens for a newly attached identity (IMDS answers "identity not found" for one whose
assignment has not completed: Azure/aad-pod-identity#789). A failed operation leaves the machine
`Failed` (the provisioning state of a resource whose last operation did not succeed: Microsoft.Network's
"Troubleshoot failed state" page, shared by Compute) and puts the earlier identities back.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provision.emulator import seed
from provision.emulator.arm.msi import Identities, ManagedIdentity, UserAssignedIdentity, system_assigned_body
from provision.emulator.arm.resources import LOCATIONS, invalid, not_found, tags_of
from provision.emulator.http import ArmError

VIRTUAL_MACHINES = "virtualMachines"
SCALE_SETS = "virtualMachineScaleSets"
MACHINE_KINDS = (VIRTUAL_MACHINES, SCALE_SETS)
VM_UNIQUE_ID = "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1"
SCALE_SET_UNIQUE_ID = "a3d91c6e-52b7-4e0f-8c14-9b6e2f7d3a85"
DEFAULT_SIZE = "Standard_D2s_v3"  # the seed's machines' size, and a new one's when the body names none
# Linux VM and scale set names (learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules,
# Microsoft.Compute): 1-64 characters, no spaces or special characters but hyphens and periods, not ending with
# a hyphen or period.
MACHINE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


@dataclass
class Assignment:
    """A user-assigned identity as a machine lists it: the id as it was sent, and the identity's ids
    at the time it was attached."""

    resource_id: str
    client_id: str
    principal_id: str
    attached_at: float = 0.0  # when the update that attached it ended (0: from the start)


@dataclass
class IdentityState:
    """The identity-related part of a machine: what an update changes and a failed update restores."""

    system: ManagedIdentity | None = None
    user: dict[str, Assignment] = field(default_factory=dict)  # keyed by lower-case resource id
    encryption_identity: str | None = None

    def type_name(self) -> str:
        parts = (["SystemAssigned"] if self.system else []) + (["UserAssigned"] if self.user else [])
        return ", ".join(parts) or "None"


@dataclass
class Operation:
    id: str
    machine: tuple[str, str, str]
    started: float
    ends: float
    fails: bool
    previous: IdentityState
    creates: bool = False  # a PUT that made the machine: there is nothing earlier to put back
    status: str = "InProgress"

    def to_arm(self) -> dict[str, Any]:
        body: dict[str, Any] = {"startTime": _iso(self.started), "status": self.status, "name": self.id}
        if self.status != "InProgress":
            body["endTime"] = _iso(self.ends)
        if self.status == "Failed":
            body["error"] = {
                "code": "InternalExecutionError",
                "message": "An internal execution error occurred. Please retry later.",
            }
        return body


@dataclass
class Machine:
    kind: str
    resource_group: str
    name: str
    location: str
    unique_id: str
    identity: IdentityState
    tags: dict[str, str] = field(default_factory=dict)
    upgrade_mode: str | None = None
    size: str = DEFAULT_SIZE
    capacity: int = 2  # a scale set's instance count
    version: int = 1
    provisioning_state: str = "Succeeded"
    operation: Operation | None = None

    @property
    def id(self) -> str:
        return machine_id(self.kind, self.resource_group, self.name)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.resource_group.lower(), self.name.lower())

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def instance_view(self) -> dict[str, Any]:
        """A VM's instance view, in the shape of Virtual Machines - Instance View
        (learn.microsoft.com/rest/api/compute/virtual-machines/instance-view, "Get Virtual Machine Instance View"):
        the provisioning state as a status, and the power state that `az vm show -d` and `az vm list -d` read."""
        now = _iso(time.time())
        state = self.provisioning_state
        return {
            "computerName": self.name,
            "osName": "ubuntu",
            "osVersion": "22.04",
            "vmAgent": {
                "vmAgentVersion": "2.10.0.8",
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Ready",
                        "message": "Guest Agent is running",
                        "time": now,
                    }
                ],
                "extensionHandlers": [],
            },
            "disks": [
                {
                    "name": _os_disk_name(self),
                    "statuses": [
                        {
                            "code": "ProvisioningState/succeeded",
                            "level": "Info",
                            "displayStatus": "Provisioning succeeded",
                            "time": now,
                        }
                    ],
                }
            ],
            "hyperVGeneration": "V2",
            "statuses": [
                {
                    "code": f"ProvisioningState/{state.lower()}",
                    "level": "Error" if state == "Failed" else "Info",
                    "displayStatus": "Provisioning succeeded" if state == "Succeeded" else state,
                    "time": now,
                },
                {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
            ],
        }

    def effective_identity(self) -> IdentityState:
        """The identities the machine really has: an update counts once its operation has ended."""
        return self.operation.previous if self.operation else self.identity

    def resource_bodies(self) -> list[dict[str, Any]]:
        """The machine and, for a VM, its network interface, as Resources - List counts them."""
        if self.kind == VIRTUAL_MACHINES:
            return [self.to_arm(), _network_interface(self)]
        return [self.to_arm()]

    def to_arm(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "type": f"Microsoft.Compute/{self.kind}",
            "location": self.location,
            "tags": dict(self.tags),
            "etag": self.etag,
        }
        state = self.identity
        if state.system or state.user:
            identity: dict[str, Any] = {"type": state.type_name()}
            if state.system:
                identity.update(principalId=state.system.principal_id, tenantId=seed.TENANT_ID)
            if state.user:
                identity["userAssignedIdentities"] = {
                    a.resource_id: {"principalId": a.principal_id, "clientId": a.client_id} for a in state.user.values()
                }
            body["identity"] = identity
        properties: dict[str, Any] = {"provisioningState": self.provisioning_state}
        if self.kind == VIRTUAL_MACHINES:
            properties.update(vmId=self.unique_id, **_vm_profiles(self))
        else:
            body["sku"] = {"name": self.size, "tier": "Standard", "capacity": self.capacity}
            properties.update(uniqueId=self.unique_id, upgradePolicy={"mode": self.upgrade_mode or "Manual"})
        if state.encryption_identity:
            properties["securityProfile"] = {
                "encryptionIdentity": {"userAssignedIdentityResourceId": state.encryption_identity}
            }
        body["properties"] = properties
        return body


def system_identity(
    name: str, resource_id: str, client_id: str | None = None, principal_id: str | None = None
) -> ManagedIdentity:
    """A machine's system-assigned identity; new ids unless given (Azure makes new ones each time)."""
    return ManagedIdentity(name, client_id or str(uuid.uuid4()), principal_id or str(uuid.uuid4()), resource_id)


class Compute(Identities):
    """The subscription's virtual machines and scale sets (their identities name user-assigned ones)."""

    machines: dict[tuple[str, str, str], Machine]  # by (kind, lower-case group, lower-case name)
    operations: dict[str, Operation]
    operation_seconds: float

    def get_machine(self, subscription: str, kind: str, resource_group: str, name: str) -> dict[str, Any]:
        with self._lock:
            self._settle()
            return self._machine(subscription, kind, resource_group, name).to_arm()

    def machine_instance_view(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        with self._lock:
            self._settle()
            return self._machine(subscription, VIRTUAL_MACHINES, resource_group, name).instance_view()

    def get_machine_with_instance_view(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        """A VM read with `$expand=instanceView`: the instance view inside its properties."""
        with self._lock:
            self._settle()
            machine = self._machine(subscription, VIRTUAL_MACHINES, resource_group, name)
            body = machine.to_arm()
            body["properties"]["instanceView"] = machine.instance_view()
            return body

    def system_assigned_identity(self, subscription: str, kind: str, resource_group: str, name: str) -> dict[str, Any]:
        """The machine's system-assigned identity as Microsoft.ManagedIdentity serves it; Resource Manager's 404 for
        a machine without one (no recorded answer was found: the wording is ResourceNotFound's)."""
        with self._lock:
            self._settle()
            machine = self._machine(subscription, kind, resource_group, name)
            if machine.identity.system is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.ManagedIdentity/identities/default' under scope '{machine.id}' was"
                    " not found.",
                )
            return system_assigned_body(machine.id, machine.location, machine.identity.system)

    def network_interface(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        """The network interface of an emulated VM (each VM has one, named as `az vm create` names it)."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            for machine in self.machines.values():
                if machine.kind == VIRTUAL_MACHINES and machine.resource_group.lower() == resource_group.lower():
                    body = _network_interface(machine)
                    if body["name"].lower() == name.lower():
                        return body
            raise not_found("Microsoft.Network/networkInterfaces", name, resource_group)

    def put_machine(
        self,
        subscription: str,
        kind: str,
        resource_group: str,
        name: str,
        body: dict[str, Any],
        if_match: str | None,
        fails: bool = False,
    ) -> tuple[dict[str, Any], str, bool]:
        """A PUT: the body is the whole resource, so for an existing machine its tags replace the machine's and its
        `identity` is authoritative, `type` and map alike (an identity the map leaves out is removed), as ARM's
        PUT replaces what PATCH merges (learn.microsoft.com/rest/api/compute/virtual-machines/create-or-update);
        a missing machine is created. Returns the machine as it now reads, the operation id and whether it was
        created."""
        with self._lock:
            self._settle()
            self.check_scope(subscription, resource_group)
            machine = self.machines.get((kind, resource_group.lower(), name.lower()))
            if machine is None:
                return (*self._create_machine(kind, resource_group, name, body, if_match, fails), True)
            return (
                *self.update_machine(
                    subscription, kind, resource_group, name, _put_as_patch(machine, body), if_match, fails
                ),
                False,
            )

    def list_machines(self, subscription: str, kind: str, resource_group: str | None = None) -> dict[str, Any]:
        """A subscription's (or one group's) VMs or scale sets, as `{"value": [...]}` (one page: nextLink only
        appears when Azure has more to send)."""
        with self._lock:
            self._settle()
            self.check_scope(subscription, resource_group)
            found = [
                m.to_arm()
                for (k, rg, _), m in sorted(self.machines.items())
                if k == kind and (resource_group is None or rg == resource_group.lower())
            ]
            return {"value": found}

    def update_machine(
        self,
        subscription: str,
        kind: str,
        resource_group: str,
        name: str,
        body: dict[str, Any],
        if_match: str | None,
        fails: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """A PATCH: checks the precondition, applies the change and starts its operation.

        Returns the machine as it now reads (provisioningState `Updating`) and the operation id."""
        with self._lock:
            self._settle()
            machine = self._machine(subscription, kind, resource_group, name)
            if if_match is not None and if_match.strip() != "*" and _unquote(if_match) != str(machine.version):
                raise ArmError(412, "PreconditionFailed", f"The specified precondition 'If-Match = {if_match}' failed.")
            if machine.operation is not None:
                raise ArmError(
                    409,
                    "Conflict",
                    "The request failed due to conflict with a concurrent request. Retry after the operation"
                    f" {machine.operation.id} on '{machine.name}' has completed.",
                )
            updated = self._apply_patch(machine, body)
            now = time.time()
            operation = Operation(
                str(uuid.uuid4()), machine.key, now, now + self.operation_seconds, fails, machine.identity
            )
            self.operations[operation.id] = operation
            machine.identity = updated
            machine.operation = operation
            machine.provisioning_state = "Updating"
            machine.version += 1
            return machine.to_arm(), operation.id

    def operation_status(self, subscription: str, operation_id: str) -> dict[str, Any]:
        with self._lock:
            self._settle()
            self.check_scope(subscription)
            operation = self.operations.get(operation_id)
            if operation is None:
                raise ArmError(404, "OperationNotFound", f"The operation '{operation_id}' could not be found.")
            return operation.to_arm()

    def change_concurrently(
        self,
        subscription: str,
        kind: str,
        resource_group: str,
        name: str,
        identity_id: str | None,
        system_assigned: bool | None = None,
    ) -> None:
        """Someone else's quick change to a machine (a new etag): attaches `identity_id` if given, adds or
        removes the system-assigned identity when `system_assigned` is given (which changes `type`, the
        change a PATCH without If-Match would undo), else changes a tag."""
        with self._lock:
            self._settle()
            machine = self._machine(subscription, kind, resource_group, name)
            if system_assigned is not None:
                machine.identity.system = (
                    (machine.identity.system or system_identity(machine.name, mirid(machine.id)))
                    if system_assigned
                    else None
                )
            elif identity_id:
                found = self._identity_by_id(identity_id)
                machine.identity.user[identity_id.lower()] = Assignment(
                    identity_id, found.client_id, found.principal_id
                )
            else:
                machine.tags["changedBy"] = "someone-else"
            machine.version += 1

    def vm_identities(
        self, attached_before: float | None = None
    ) -> tuple[ManagedIdentity | None, list[ManagedIdentity]]:
        """What the Instance Metadata Service of myVM can issue tokens for: its system-assigned identity
        and the user-assigned identities attached to it (before `attached_before`, if given) that still exist."""
        with self._lock:
            self._settle()
            vm = self.machines[(VIRTUAL_MACHINES, seed.RESOURCE_GROUP.lower(), seed.VM_NAME.lower())]
            state = vm.effective_identity()
            by_id = {i.id.lower(): i for i in self.identities.values()}
            user = [
                by_id[key].managed_identity()
                for key, assignment in state.user.items()
                if key in by_id and (attached_before is None or assignment.attached_at <= attached_before)
            ]
            return state.system, user

    def _machine(self, subscription: str, kind: str, resource_group: str, name: str) -> Machine:
        self.check_scope(subscription, resource_group)
        found = self.machines.get((kind, resource_group.lower(), name.lower()))
        if found is None:
            raise not_found(f"Microsoft.Compute/{kind}", name, resource_group)
        return found

    def _create_machine(
        self, kind: str, resource_group: str, name: str, body: dict[str, Any], if_match: str | None, fails: bool
    ) -> tuple[dict[str, Any], str]:
        """A new machine from a PUT body that needs only a location, its profiles filled in as Compute fills them:
        201 with provisioningState `Creating`, then Succeeded when its operation ends (the spec's
        VirtualMachine_Create_* examples). Nothing is made when the body is refused."""
        if if_match is not None:
            # Nothing exists that the precondition could match.
            raise ArmError(412, "PreconditionFailed", f"The specified precondition 'If-Match = {if_match}' failed.")
        _check_machine_name(name)
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        location = location.replace(" ", "").lower()
        regions = [region for region, *_ in LOCATIONS]
        if location not in regions:
            raise ArmError(
                400,
                "LocationNotAvailableForResourceType",
                f"The provided location '{location}' is not available for resource type 'Microsoft.Compute/{kind}'."
                f" List of available regions for the resource type is '{','.join(regions)}'.",
            )
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise invalid("properties", properties)
        machine = Machine(
            kind,
            self.resource_groups[resource_group.lower()],
            name,
            location,
            str(uuid.uuid4()),
            IdentityState(),
            upgrade_mode="Manual" if kind == SCALE_SETS else None,
        )
        if kind == VIRTUAL_MACHINES:
            machine.size = _size((properties.get("hardwareProfile") or {}).get("vmSize"), "hardwareProfile.vmSize")
        else:
            sku = body.get("sku") or {}
            machine.size = _size(sku.get("name"), "sku.name")
            capacity = sku.get("capacity", machine.capacity)
            if not isinstance(capacity, int) or isinstance(capacity, bool) or not 0 <= capacity <= 1000:
                raise invalid("sku.capacity", capacity)
            machine.capacity = capacity
        machine.identity = self._apply_patch(machine, {**body, "tags": body.get("tags") or {}})
        now = time.time()
        operation = Operation(
            str(uuid.uuid4()), machine.key, now, now + self.operation_seconds, fails, IdentityState(), creates=True
        )
        self.operations[operation.id] = operation
        machine.operation = operation
        machine.provisioning_state = "Creating"
        self.machines[machine.key] = machine
        return machine.to_arm(), operation.id

    def _apply_patch(self, machine: Machine, body: dict[str, Any]) -> IdentityState:
        """Validates a PATCH body, then applies its tags and upgrade policy and returns the identity
        state it asks for, with Azure's rules: `type` is authoritative, the `userAssignedIdentities` map
        is merged and null removes an entry. Nothing changes when the body is refused."""
        tags = tags_of(body["tags"]) if "tags" in body else machine.tags
        properties = body.get("properties") or {}
        mode = (properties.get("upgradePolicy") or {}).get("mode") if machine.kind == SCALE_SETS else None
        if mode is not None and mode not in ("Manual", "Automatic", "Rolling"):
            raise invalid("properties.upgradePolicy.mode", mode)
        state = copy.deepcopy(machine.identity)
        identity = body.get("identity")
        if identity is not None:
            if not isinstance(identity, dict):
                raise invalid("identity", identity)
            state = _merge_identity(machine, state, identity, self._identity_by_id)
        encryption = (properties.get("securityProfile") or {}).get("encryptionIdentity")
        if encryption is not None:
            wanted = encryption.get("userAssignedIdentityResourceId")
            if wanted and wanted.lower() not in state.user:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    f"The user-assigned identity '{wanted}' in securityProfile.encryptionIdentity is not"
                    f" assigned to '{machine.name}'.",
                )
            state.encryption_identity = wanted or None
        if state.encryption_identity and state.encryption_identity.lower() not in state.user:
            raise ArmError(
                400,
                "InvalidParameter",
                f"The user-assigned identity '{state.encryption_identity}' cannot be removed from"
                f" '{machine.name}': securityProfile.encryptionIdentity uses it.",
            )
        machine.tags = tags
        machine.upgrade_mode = mode or machine.upgrade_mode
        return state

    def _settle(self) -> None:
        now = time.time()
        for machine in self.machines.values():
            operation = machine.operation
            if operation is None or operation.ends > now:
                continue
            machine.operation = None
            if operation.fails:
                operation.status = "Failed"
                if not operation.creates:
                    machine.identity = operation.previous
                machine.provisioning_state = "Failed"
                machine.version += 1
            else:
                operation.status = "Succeeded"
                machine.provisioning_state = "Succeeded"
                for key, assignment in machine.identity.user.items():
                    if key not in operation.previous.user:
                        assignment.attached_at = operation.ends


def _merge_identity(
    machine: Machine,
    state: IdentityState,
    identity: dict[str, Any],
    lookup: Callable[[str], UserAssignedIdentity],
) -> IdentityState:
    raw_type = identity.get("type")
    if not isinstance(raw_type, str):
        raise ArmError(400, "InvalidParameter", "Required parameter 'identity.type' is missing (null).")
    parts = {p.strip().lower() for p in raw_type.split(",")}
    if parts == {"none"}:
        parts = set()
    if not parts <= {"systemassigned", "userassigned"}:
        raise invalid("identity.type", raw_type)
    changes = identity.get("userAssignedIdentities") or {}
    if not isinstance(changes, dict):
        raise invalid("identity.userAssignedIdentities", changes)
    if "systemassigned" not in parts:
        state.system = None
    elif state.system is None:
        state.system = system_identity(machine.name, mirid(machine.id))
    if "userassigned" not in parts:
        if any(value is not None for value in changes.values()):
            raise ArmError(
                400,
                "InvalidParameter",
                f"userAssignedIdentities can only be given when identity.type includes UserAssigned, not '{raw_type}'.",
            )
        state.user = {}
        return state
    for resource_id, value in changes.items():
        if value is None:
            state.user.pop(resource_id.lower(), None)
        elif resource_id.lower() not in state.user:
            found = lookup(resource_id)
            state.user[resource_id.lower()] = Assignment(resource_id, found.client_id, found.principal_id)
    if not state.user:
        raise ArmError(
            400,
            "InvalidParameter",
            f"identity.type '{raw_type}' needs at least one entry in userAssignedIdentities.",
        )
    return state


def _check_machine_name(name: str) -> None:
    if not (1 <= len(name) <= 64 and set(name) <= MACHINE_NAME_CHARS and name[-1] not in "-."):
        raise ArmError(
            400,
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. The name can be 1-64 characters long: letters, digits, hyphens and"
            " periods, not ending with a hyphen or period.",
        )


def _size(value: Any, parameter: str) -> str:
    if value is None:
        return DEFAULT_SIZE
    if not isinstance(value, str) or not value:
        raise invalid(parameter, value)
    return value


def _put_as_patch(machine: Machine, body: dict[str, Any]) -> dict[str, Any]:
    """The PATCH with the same outcome as a PUT of `body`: no tags means none, and every identity the machine
    has that the body's map leaves out is removed."""
    patch = {**body, "tags": body.get("tags") or {}}
    identity = body.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("userAssignedIdentities") or {}, dict):
        given = identity.get("userAssignedIdentities") or {}
        kept = {resource_id.lower() for resource_id in given}
        dropped = {a.resource_id: None for key, a in machine.identity.user.items() if key not in kept}
        patch["identity"] = {**identity, "userAssignedIdentities": {**dropped, **given}}
    return patch


def _os_disk_name(machine: Machine) -> str:
    # `az vm create` names the disk {vm}_OsDisk_1_{32 hex digits}.
    return f"{machine.name}_OsDisk_1_{machine.unique_id.replace('-', '')}"


def _group_id(machine: Machine) -> str:
    return f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{machine.resource_group}"


def _network_interface_id(machine: Machine) -> str:
    # `az vm create` names a VM's network interface {vm}VMNic.
    return f"{_group_id(machine)}/providers/Microsoft.Network/networkInterfaces/{machine.name}VMNic"


def _vm_profiles(machine: Machine) -> dict[str, Any]:
    """A Linux VM's profiles as `az vm create --image Ubuntu2204` leaves them, in the shape of the REST spec's
    "Get a virtual machine" example (learn.microsoft.com/rest/api/compute/virtual-machines/get)."""
    disk = _os_disk_name(machine)
    return {
        "hardwareProfile": {"vmSize": machine.size},
        "storageProfile": {
            "imageReference": {
                "publisher": "Canonical",
                "offer": "0001-com-ubuntu-server-jammy",
                "sku": "22_04-lts-gen2",
                "version": "latest",
                "exactVersion": "22.04.202404090",
            },
            "osDisk": {
                "osType": "Linux",
                "name": disk,
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "managedDisk": {
                    "storageAccountType": "Premium_LRS",
                    "id": f"{_group_id(machine)}/providers/Microsoft.Compute/disks/{disk}",
                },
                "deleteOption": "Detach",
                "diskSizeGB": 30,
            },
            "dataDisks": [],
            "diskControllerType": "SCSI",
        },
        "osProfile": {
            "computerName": machine.name,
            "adminUsername": "azureuser",
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "provisionVMAgent": True,
                "patchSettings": {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"},
            },
            "secrets": [],
            "allowExtensionOperations": True,
            "requireGuestProvisionSignal": True,
        },
        "networkProfile": {"networkInterfaces": [{"id": _network_interface_id(machine)}]},
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        "timeCreated": "2024-04-15T09:12:44.1234567+00:00",
    }


def _network_interface(machine: Machine) -> dict[str, Any]:
    """A VM's network interface in the shape of Network Interfaces - Get
    (learn.microsoft.com/rest/api/virtualnetwork/network-interfaces/get): one private address, no public one."""
    nic_id = _network_interface_id(machine)
    network = f"{_group_id(machine)}/providers/Microsoft.Network/virtualNetworks/{machine.name}VNET"
    subnet = f"{network}/subnets/{machine.name}Subnet"
    return {
        "name": f"{machine.name}VMNic",
        "id": nic_id,
        "etag": f'W/"{machine.unique_id}"',
        "type": "Microsoft.Network/networkInterfaces",
        "location": machine.location,
        "tags": {},
        "properties": {
            "provisioningState": "Succeeded",
            "resourceGuid": machine.unique_id,
            "ipConfigurations": [
                {
                    "name": f"ipconfig{machine.name}",
                    "id": f"{nic_id}/ipConfigurations/ipconfig{machine.name}",
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                    "properties": {
                        "provisioningState": "Succeeded",
                        "privateIPAddress": "10.0.0.4",
                        "privateIPAllocationMethod": "Dynamic",
                        "subnet": {"id": subnet},
                        "primary": True,
                        "privateIPAddressVersion": "IPv4",
                    },
                }
            ],
            "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
            "macAddress": "00-0D-3A-2B-4C-5D",
            "primary": True,
            "enableAcceleratedNetworking": False,
            "enableIPForwarding": False,
            "virtualMachine": {"id": machine.id},
            "nicType": "Standard",
        },
    }


def machine_id(kind: str, resource_group: str, name: str) -> str:
    # Compute answers with `resourceGroups` as created, unlike Managed Identity.
    return (
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/{kind}/{name}"
    )


def mirid(resource_id: str) -> str:
    """A resource id as tokens carry it in xms_mirid: with lower-case `resourcegroups`."""
    return resource_id.replace("/resourceGroups/", "/resourcegroups/")


def _unquote(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}+00:00"
