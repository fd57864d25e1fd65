"""The emulated Azure world: one subscription with the state of every provider the emulator answers for
(provision.emulator.arm.resources, .msi and .compute), its seed, its settings and its reset.

Everything is in memory, guarded by one lock, and answers in Resource Manager's JSON shapes. Names
are matched case-insensitively like Azure does, and resources keep the casing they were created
with.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from provision.emulator import seed
from provision.emulator.arm.compute import (
    MACHINE_KINDS,
    SCALE_SET_UNIQUE_ID,
    SCALE_SETS,
    VIRTUAL_MACHINES,
    VM_UNIQUE_ID,
    Assignment,
    Compute,
    IdentityState,
    Machine,
    Operation,
    machine_id,
    mirid,
    system_identity,
)
from provision.emulator.arm.msi import (
    EXISTING_CLIENT_ID,
    EXISTING_PRINCIPAL_ID,
    ManagedIdentity,
    UserAssignedIdentity,
)
from provision.emulator.http import ArmError

# Names other modules and tests import from here.
__all__ = [
    "EXISTING_CLIENT_ID",
    "EXISTING_PRINCIPAL_ID",
    "MACHINE_KINDS",
    "SCALE_SETS",
    "VIRTUAL_MACHINES",
    "ArmError",
    "ManagedIdentity",
    "World",
]


class World(Compute):
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
        self.identities: dict[tuple[str, str], UserAssignedIdentity] = {existing.key: existing}
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
                    mirid(machine_id(VIRTUAL_MACHINES, seed.RESOURCE_GROUP, seed.VM_NAME)),
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
        self.machines: dict[tuple[str, str, str], Machine] = {m.key: m for m in (vm, scale_set, *extra)}
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

    def _resource_bodies(self) -> list[dict[str, Any]]:
        bodies = [i.to_arm() for i in self.identities.values()]
        for machine in self.machines.values():
            bodies.extend(machine.resource_bodies())
        return bodies
