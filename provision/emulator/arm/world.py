"""The emulated Azure world: one subscription with its resource groups, user-assigned identities,
virtual machines and scale sets, and the long-running operations that update them.

Everything is in memory, guarded by one lock, and answers in Resource Manager's JSON shapes. Names
are matched case-insensitively like Azure does, and resources keep the casing they were created
with. A machine's update is applied to its model at once (GET shows the requested identities, with
provisioningState `Updating`, as Compute does: the PATCH answer and GETs carry the goal state while the
operation runs) and becomes effective when its operation ends: only then does the Instance Metadata
Service hand out tokens for a newly attached identity (IMDS answers "identity not found" for one whose
assignment has not completed: Azure/aad-pod-identity#789). A failed operation leaves the machine
`Failed` (the provisioning state of a resource whose last operation did not succeed: Microsoft.Network's
"Troubleshoot failed state" page, shared by Compute) and puts the earlier identities back.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provision.emulator import seed

VIRTUAL_MACHINES = "virtualMachines"
SCALE_SETS = "virtualMachineScaleSets"
MACHINE_KINDS = (VIRTUAL_MACHINES, SCALE_SETS)

# The seed's user-assigned identity keeps fixed ids so that logs and test output stay comparable.
EXISTING_CLIENT_ID = "3f0c2d5e-8a41-4b7c-9e26-51d8a7b4c0f3"
EXISTING_PRINCIPAL_ID = "b7e2a9c4-1d53-4f08-a6e7-2c9f4b8d1e50"
VM_UNIQUE_ID = "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1"
SCALE_SET_UNIQUE_ID = "a3d91c6e-52b7-4e0f-8c14-9b6e2f7d3a85"

# Some of the public cloud's regions: (name, displayName, geographyGroup, physicalLocation, pairedRegion).
LOCATIONS = (
    ("westeurope", "West Europe", "Europe", "Netherlands", "northeurope"),
    ("northeurope", "North Europe", "Europe", "Ireland", "westeurope"),
    ("eastus", "East US", "US", "Virginia", "westus"),
    ("westus", "West US", "US", "California", "eastus"),
    ("eastus2", "East US 2", "US", "Virginia", "centralus"),
    ("centralus", "Central US", "US", "Iowa", "eastus2"),
    ("uksouth", "UK South", "Europe", "London", "ukwest"),
    ("ukwest", "UK West", "Europe", "Cardiff", "uksouth"),
    ("germanywestcentral", "Germany West Central", "Europe", "Frankfurt", "germanynorth"),
    ("japaneast", "Japan East", "Asia Pacific", "Tokyo, Saitama", "japanwest"),
    ("australiaeast", "Australia East", "Asia Pacific", "New South Wales", "australiasoutheast"),
    ("southeastasia", "Southeast Asia", "Asia Pacific", "Singapore", "eastasia"),
)

IDENTITY_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class ArmError(Exception):
    """An answer in Resource Manager's error shape: `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class ManagedIdentity:
    """What an access token says about an identity (see Authority.mint_token). Never changed once made."""

    name: str
    client_id: str
    principal_id: str
    resource_id: str

    def token_subject(self) -> dict[str, str]:
        return {"client_id": self.client_id, "principal_id": self.principal_id, "resource_id": self.resource_id}


@dataclass
class UserAssignedIdentity:
    resource_group: str
    name: str
    location: str
    tags: dict[str, str]
    client_id: str
    principal_id: str

    @property
    def id(self) -> str:
        # Azure answers with lower-case `resourcegroups` whatever the request said.
        return (
            f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourcegroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )

    def managed_identity(self) -> ManagedIdentity:
        return ManagedIdentity(self.name, self.client_id, self.principal_id, self.id)

    def to_arm(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "location": self.location,
            "tags": dict(self.tags),
            "properties": {
                "isolationScope": "None",
                "tenantId": seed.TENANT_ID,
                "principalId": self.principal_id,
                "clientId": self.client_id,
            },
        }


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
    version: int = 1
    provisioning_state: str = "Succeeded"
    operation: Operation | None = None

    @property
    def id(self) -> str:
        return _machine_id(self.kind, self.resource_group, self.name)

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
            body["sku"] = {"name": "Standard_D2s_v3", "tier": "Standard", "capacity": 2}
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


class World:
    """The emulated subscription. Every public method takes the lock and settles finished operations first."""

    def __init__(self, operation_seconds: float, token_lifetime: int, vms: int = 0) -> None:
        self._lock = threading.RLock()
        self.vms = vms  # extra VMs vm-1..vm-N, no identities, for tests and benchmarks of many machines
        self._reset_listeners: list[Callable[[], None]] = []
        self.default_operation_seconds = operation_seconds
        self.default_token_lifetime = token_lifetime
        self._seed()

    # -- seed and reset --------------------------------------------------------------------------

    def _seed(self) -> None:
        self.operation_seconds = self.default_operation_seconds
        self.token_lifetime = self.default_token_lifetime
        self.imds_identity_delay = 0.0  # see ImdsService: tests and the demo want a new identity served at once
        self.resource_groups = {g.lower(): g for g in (seed.RESOURCE_GROUP, seed.SHARED_RESOURCE_GROUP)}
        existing = UserAssignedIdentity(
            seed.RESOURCE_GROUP,
            seed.EXISTING_IDENTITY_NAME,
            seed.LOCATION,
            {},
            EXISTING_CLIENT_ID,
            EXISTING_PRINCIPAL_ID,
        )
        self.identities: dict[tuple[str, str], UserAssignedIdentity] = {_key(existing): existing}
        # A VM created in the portal lists its identities with `resourceGroups`, as the caller sent them.
        existing_as_sent = existing.id.replace("/resourcegroups/", "/resourceGroups/")
        vm = Machine(
            VIRTUAL_MACHINES,
            seed.RESOURCE_GROUP,
            seed.VM_NAME,
            seed.LOCATION,
            VM_UNIQUE_ID,
            IdentityState(
                system=system_identity(
                    seed.VM_NAME,
                    _mirid(_machine_id(VIRTUAL_MACHINES, seed.RESOURCE_GROUP, seed.VM_NAME)),
                    seed.OPERATOR_CLIENT_ID,
                    seed.OPERATOR_PRINCIPAL_ID,
                ),
                user={existing.id.lower(): Assignment(existing_as_sent, existing.client_id, existing.principal_id)},
            ),
        )
        scale_set = Machine(
            SCALE_SETS,
            seed.RESOURCE_GROUP,
            seed.VMSS_NAME,
            seed.LOCATION,
            SCALE_SET_UNIQUE_ID,
            IdentityState(),
            upgrade_mode="Manual",
        )
        extra = [
            Machine(
                VIRTUAL_MACHINES,
                seed.RESOURCE_GROUP,
                f"vm-{n}",
                seed.LOCATION,
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"vm-{n}")),
                IdentityState(),
            )
            for n in range(1, self.vms + 1)
        ]
        self.machines: dict[tuple[str, str, str], Machine] = {_key(m): m for m in (vm, scale_set, *extra)}
        self.operations: dict[str, Operation] = {}

    def on_reset(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every reset (the database servers drop the roles tests made)."""
        with self._lock:
            self._reset_listeners.append(listener)

    def reset(self) -> None:
        with self._lock:
            self._seed()
            listeners = list(self._reset_listeners)
        for listener in listeners:
            listener()

    def configure(
        self,
        operation_seconds: float | None = None,
        token_lifetime: int | None = None,
        imds_identity_delay: float | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            if operation_seconds is not None:
                self.operation_seconds = operation_seconds
            if token_lifetime is not None:
                self.token_lifetime = token_lifetime
            if imds_identity_delay is not None:
                self.imds_identity_delay = imds_identity_delay
            return {
                "operation_seconds": self.operation_seconds,
                "token_lifetime": self.token_lifetime,
                "imds_identity_delay": self.imds_identity_delay,
            }

    # -- subscription and resource groups ------------------------------------------------------------

    def check_scope(self, subscription: str, resource_group: str | None = None) -> None:
        if subscription.lower() != seed.SUBSCRIPTION_ID:
            # Azure's words for any path under an unknown subscription (Azure/azure-cli#33657).
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found.")
        if resource_group is not None and resource_group.lower() not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")

    def subscription(self, subscription: str) -> dict[str, Any]:
        self.check_scope(subscription)
        return {
            "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}",
            "subscriptionId": seed.SUBSCRIPTION_ID,
            "tenantId": seed.TENANT_ID,
            "displayName": "provision emulator",
            "state": "Enabled",
            # The rest of a Subscriptions - Get answer (learn.microsoft.com/rest/api/resources/subscriptions/get).
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
        }

    def subscriptions(self) -> dict[str, Any]:
        """Subscriptions - List (learn.microsoft.com/rest/api/resources/subscriptions/list): what `az login` lists."""
        return {
            "value": [self.subscription(seed.SUBSCRIPTION_ID)],
            "count": {"type": "Total", "value": 1},
        }

    def tenants(self) -> dict[str, Any]:
        """Tenants - List (learn.microsoft.com/rest/api/resources/tenants/list)."""
        return {
            "value": [
                {
                    "id": f"/tenants/{seed.TENANT_ID}",
                    "tenantId": seed.TENANT_ID,
                    "tenantCategory": "Home",
                    "countryCode": "US",
                    "displayName": "provision emulator",
                    "domains": ["provision-emulator.onmicrosoft.com"],
                    "defaultDomain": "provision-emulator.onmicrosoft.com",
                    "tenantType": "AAD",
                }
            ],
            "count": {"type": "Total", "value": 1},
        }

    def list_resource_groups(self, subscription: str) -> dict[str, Any]:
        """Resource Groups - List (learn.microsoft.com/rest/api/resources/resource-groups/list)."""
        with self._lock:
            self.check_scope(subscription)
            return {"value": [self.resource_group(subscription, rg) for rg in sorted(self.resource_groups)]}

    def list_resources(
        self, subscription: str, resource_group: str | None = None, odata_filter: str | None = None
    ) -> dict[str, Any]:
        """Resources - List (learn.microsoft.com/rest/api/resources/resources/list): every emulated resource of the
        subscription or of one group, as id, name, type, location and tags, narrowed by a `$filter` of the
        `field eq 'value'` terms joined by `and` that `az resource list` sends."""
        wanted_fields = _resource_filter(odata_filter)
        with self._lock:
            self._settle()
            self.check_scope(subscription, resource_group)
            bodies = [i.to_arm() for i in self.identities.values()]
            for machine in self.machines.values():
                bodies.append(machine.to_arm())
                if machine.kind == VIRTUAL_MACHINES:
                    bodies.append(_network_interface(machine))
            wanted = None if resource_group is None else f"/resourcegroups/{resource_group.lower()}/"
            return {
                "value": [
                    {key: body[key] for key in ("id", "name", "type", "location", "tags")}
                    for body in sorted(bodies, key=lambda b: b["id"].lower())
                    if (wanted is None or wanted in body["id"].lower())
                    and all(_resource_field(body, key).lower() == value.lower() for key, value in wanted_fields.items())
                ]
            }

    def resource_group(self, subscription: str, resource_group: str) -> dict[str, Any]:
        with self._lock:
            self.check_scope(subscription, resource_group)
            name = self.resource_groups[resource_group.lower()]
            return {
                "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{name}",
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": seed.LOCATION,
                "properties": {"provisioningState": "Succeeded"},
            }

    def locations(self, subscription: str) -> dict[str, Any]:
        """The subscription's regions, in the shape of Subscriptions - List Locations
        (learn.microsoft.com/rest/api/resources/subscriptions/list-locations)."""
        self.check_scope(subscription)
        return {
            "value": [
                {
                    "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/locations/{name}",
                    "name": name,
                    "type": "Region",
                    "displayName": display,
                    "regionalDisplayName": f"({geography}) {display}",
                    "metadata": {
                        "regionType": "Physical",
                        "regionCategory": "Recommended",
                        "geographyGroup": geography,
                        "physicalLocation": place,
                        "pairedRegion": [
                            {"name": paired, "id": f"/subscriptions/{seed.SUBSCRIPTION_ID}/locations/{paired}"}
                        ],
                    },
                }
                for name, display, geography, place, paired in LOCATIONS
            ]
        }

    # -- user-assigned identities --------------------------------------------------------------------

    def get_identity(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        with self._lock:
            return self._identity(subscription, resource_group, name).to_arm()

    def list_identities(self, subscription: str, resource_group: str | None = None) -> dict[str, Any]:
        """A group's identities, or the subscription's (User Assigned Identities - List By Subscription)."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            found = [
                i
                for (rg, _), i in sorted(self.identities.items())
                if resource_group is None or rg == resource_group.lower()
            ]
            return {"value": [i.to_arm() for i in found]}

    def put_identity(
        self, subscription: str, resource_group: str, name: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create or update; returns the resource and whether it was created."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            _check_identity_name(name)
            location = body.get("location")
            if not isinstance(location, str) or not location:
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            location = _normal_location(location)
            tags = _tags(body.get("tags"))
            found = self.identities.get((resource_group.lower(), name.lower()))
            if found is not None:
                if found.location != location:
                    raise ArmError(
                        400,
                        "InvalidResourceLocation",
                        f"The resource '{found.name}' already exists in location '{found.location}' in resource"
                        f" group '{found.resource_group}'. A resource with the same name cannot be created in"
                        f" location '{location}'. Please select a new resource name.",
                    )
                found.tags = tags
                return found.to_arm(), False
            created = UserAssignedIdentity(
                self.resource_groups[resource_group.lower()],
                name,
                location,
                tags,
                str(uuid.uuid4()),
                str(uuid.uuid4()),
            )
            self.identities[_key(created)] = created
            return created.to_arm(), True

    def patch_identity(self, subscription: str, resource_group: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            if "tags" in body:
                found.tags = _tags(body["tags"])
            return found.to_arm()

    def identity_tags(
        self, subscription: str, resource_group: str, name: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The Tags API on an identity: None reads; a body {operation: Merge|Replace|Delete, properties: {tags}}
        changes them in one step (learn.microsoft.com/rest/api/resources/tags/update-at-scope). Names match
        ignoring case, as Azure's tag names do; an updated tag keeps the name it had."""
        with self._lock:
            found = self._identity(subscription, resource_group, name)
            if body is not None:
                operation = body.get("operation")
                changes = _tags((body.get("properties") or {}).get("tags"))
                if operation == "Replace":
                    found.tags = changes
                elif operation == "Merge":
                    for key, value in changes.items():
                        found.tags[next((k for k in found.tags if k.lower() == key.lower()), key)] = value
                elif operation == "Delete":
                    found.tags = {
                        k: v
                        for k, v in found.tags.items()
                        if not any(k.lower() == d.lower() and v2 in ("", v) for d, v2 in changes.items())
                    }
                else:
                    raise _invalid("operation", operation)
            return {
                "id": f"{found.id}/providers/Microsoft.Resources/tags/default",
                "name": "default",
                "type": "Microsoft.Resources/tags",
                "properties": {"tags": dict(found.tags)},
            }

    def delete_identity(self, subscription: str, resource_group: str, name: str) -> bool:
        """Delete; returns whether it existed. Machines keep listing it, as in Azure."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            return self.identities.pop((resource_group.lower(), name.lower()), None) is not None

    def identity_by_client_id(self, client_id: str) -> ManagedIdentity | None:
        """A user-assigned identity, or a machine's system-assigned one, with that client (app) id."""
        with self._lock:
            self._settle()
            for identity in self.identities.values():
                if identity.client_id.lower() == client_id.lower():
                    return identity.managed_identity()
            for machine in self.machines.values():
                system = machine.effective_identity().system
                if system and system.client_id.lower() == client_id.lower():
                    return system
            return None

    def managed_identities(self) -> list[ManagedIdentity]:
        """Every managed identity (each one a service principal in Entra): user-assigned and system-assigned ones."""
        with self._lock:
            systems = [m.identity.system for m in self.machines.values() if m.identity.system]
            return [i.managed_identity() for i in self.identities.values()] + systems

    def _identity(self, subscription: str, resource_group: str, name: str) -> UserAssignedIdentity:
        self.check_scope(subscription, resource_group)
        found = self.identities.get((resource_group.lower(), name.lower()))
        if found is None:
            raise _not_found("Microsoft.ManagedIdentity/userAssignedIdentities", name, resource_group)
        return found

    # -- virtual machines and scale sets ---------------------------------------------------------------

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

    def network_interface(self, subscription: str, resource_group: str, name: str) -> dict[str, Any]:
        """The network interface of an emulated VM (each VM has one, named as `az vm create` names it)."""
        with self._lock:
            self.check_scope(subscription, resource_group)
            for machine in self.machines.values():
                if machine.kind == VIRTUAL_MACHINES and machine.resource_group.lower() == resource_group.lower():
                    body = _network_interface(machine)
                    if body["name"].lower() == name.lower():
                        return body
            raise _not_found("Microsoft.Network/networkInterfaces", name, resource_group)

    def replace_machine(
        self,
        subscription: str,
        kind: str,
        resource_group: str,
        name: str,
        body: dict[str, Any],
        if_match: str | None,
        fails: bool = False,
    ) -> tuple[dict[str, Any], str]:
        """A PUT of an existing machine: the body is the whole resource, so its tags replace the machine's and its
        `identity` is authoritative, `type` and map alike (an identity the map leaves out is removed), as ARM's
        PUT replaces what PATCH merges (learn.microsoft.com/rest/api/compute/virtual-machines/create-or-update)."""
        with self._lock:
            self._settle()
            machine = self._machine(subscription, kind, resource_group, name)
            return self.update_machine(
                subscription, kind, resource_group, name, _put_as_patch(machine, body), if_match, fails
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
                str(uuid.uuid4()), _key(machine), now, now + self.operation_seconds, fails, machine.identity
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
                    (machine.identity.system or system_identity(machine.name, _mirid(machine.id)))
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
            raise _not_found(f"Microsoft.Compute/{kind}", name, resource_group)
        return found

    def _identity_by_id(self, resource_id: str) -> UserAssignedIdentity:
        for identity in self.identities.values():
            if identity.id.lower() == resource_id.lower():
                return identity
        raise ArmError(
            400,
            "FailedIdentityOperation",
            f"Identity operation for resource failed with error 'Failed to perform resource identity operation."
            f" Status: 'NotFound'. Response: 'The user-assigned identity '{resource_id}' was not found.''.",
        )

    def _apply_patch(self, machine: Machine, body: dict[str, Any]) -> IdentityState:
        """Validates a PATCH body, then applies its tags and upgrade policy and returns the identity
        state it asks for, with Azure's rules: `type` is authoritative, the `userAssignedIdentities` map
        is merged and null removes an entry. Nothing changes when the body is refused."""
        tags = _tags(body["tags"]) if "tags" in body else machine.tags
        properties = body.get("properties") or {}
        mode = (properties.get("upgradePolicy") or {}).get("mode") if machine.kind == SCALE_SETS else None
        if mode is not None and mode not in ("Manual", "Automatic", "Rolling"):
            raise _invalid("properties.upgradePolicy.mode", mode)
        state = copy.deepcopy(machine.identity)
        identity = body.get("identity")
        if identity is not None:
            if not isinstance(identity, dict):
                raise _invalid("identity", identity)
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
        raise _invalid("identity.type", raw_type)
    changes = identity.get("userAssignedIdentities") or {}
    if not isinstance(changes, dict):
        raise _invalid("identity.userAssignedIdentities", changes)
    if "systemassigned" not in parts:
        state.system = None
    elif state.system is None:
        state.system = system_identity(machine.name, _mirid(machine.id))
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


RESOURCE_FILTER_FIELDS = ("resourceGroup", "resourceType", "name", "location")


def _resource_filter(odata_filter: str | None) -> dict[str, str]:
    """`resourceGroup eq 'a' and resourceType eq 'b'` as {field: value}; other filters are refused, not ignored."""
    fields: dict[str, str] = {}
    for term in odata_filter.split(" and ") if odata_filter else []:
        key, _, value = term.strip().partition(" eq ")
        if key not in RESOURCE_FILTER_FIELDS or len(value) < 2 or value[0] != "'" or value[-1] != "'":
            raise ArmError(
                400,
                "InvalidFilterInQueryString",
                f"The emulator filters resources only by {', '.join(RESOURCE_FILTER_FIELDS)} (eq, joined by and),"
                f" not by '{odata_filter}'.",
            )
        fields[key] = value[1:-1]
    return fields


def _resource_field(body: dict[str, Any], key: str) -> str:
    if key == "resourceGroup":
        return str(body["id"].split("/")[4])
    return str(body["type" if key == "resourceType" else key])


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
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
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


def _key(resource: UserAssignedIdentity | Machine) -> Any:
    if isinstance(resource, Machine):
        return (resource.kind, resource.resource_group.lower(), resource.name.lower())
    return (resource.resource_group.lower(), resource.name.lower())


def _machine_id(kind: str, resource_group: str, name: str) -> str:
    # Compute answers with `resourceGroups` as created, unlike Managed Identity.
    return (
        f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/{kind}/{name}"
    )


def _mirid(resource_id: str) -> str:
    """A resource id as tokens carry it in xms_mirid: with lower-case `resourcegroups`."""
    return resource_id.replace("/resourceGroups/", "/resourcegroups/")


def _not_found(resource_type: str, name: str, resource_group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found.",
    )


def _invalid(parameter: str, value: Any) -> ArmError:
    return ArmError(400, "InvalidParameter", f"The value '{value}' of parameter '{parameter}' is not valid.")


def _check_identity_name(name: str) -> None:
    if not (3 <= len(name) <= 128 and name[0].isalnum() and set(name) <= IDENTITY_NAME_CHARS):
        raise ArmError(
            400,
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. The name can be 3-128 characters long: letters, digits,"
            " hyphens and underscores, starting with a letter or digit.",
        )


def _tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid("tags", value)
    return dict(value)


def _normal_location(location: str) -> str:
    return location.replace(" ", "").lower()


def _unquote(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}+00:00"
