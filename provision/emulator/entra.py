"""Microsoft Entra ID of the emulated tenant: the objects it knows (users, groups, service principals),
each with an object id, a display name, a type and, for service principals, an app (client) id.

Users, groups and the CI pipeline's service principal are held here. The service principals of managed
identities are Resource Manager's: Azure creates one when a user-assigned identity is created or a machine's
system-assigned identity is enabled, and deletes it with the identity ("Managed identity types",
learn.microsoft.com/entra/identity/managed-identities-azure-resources/overview). So they are read from the
emulated world at each lookup, and cannot drift from it. A user-assigned identity's service principal is named
after the identity, a system-assigned one's after its machine (`az ad sp list --display-name vm-name`, in
Azure's "Connect with managed identity" for Flexible Server).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from provision.emulator import seed

USER, GROUP, SERVICE_PRINCIPAL = "User", "Group", "ServicePrincipal"


@dataclass(frozen=True)
class DirectoryObject:
    object_id: str  # lower case
    display_name: str  # a user's is its user principal name, the name pgaadauth_create_principal takes
    type: str  # USER, GROUP or SERVICE_PRINCIPAL
    app_id: str | None = None  # service principals only

    def to_json(self) -> dict[str, Any]:
        return {"objectId": self.object_id, "displayName": self.display_name, "type": self.type, "appId": self.app_id}


class ManagedIdentity(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def principal_id(self) -> str: ...


class ManagedIdentities(Protocol):
    """What the directory needs from Resource Manager."""

    def managed_identities(self) -> Iterable[ManagedIdentity]: ...


def _seeded() -> list[DirectoryObject]:
    return [
        DirectoryObject(seed.USER_PRINCIPAL_ID, seed.USER_NAME, USER),
        DirectoryObject(seed.GROUP_PRINCIPAL_ID, seed.GROUP_NAME, GROUP),
        DirectoryObject(seed.CI_PRINCIPAL_ID, seed.CI_NAME, SERVICE_PRINCIPAL, seed.CI_CLIENT_ID),
    ]


class Entra:
    """The tenant's directory, guarded by a lock; `reset()` goes back to the seed's objects."""

    def __init__(self, world: ManagedIdentities) -> None:
        self._world = world
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._held = {o.object_id: o for o in _seeded()}

    def objects(self) -> list[DirectoryObject]:
        managed = [
            DirectoryObject(i.principal_id.lower(), i.name, SERVICE_PRINCIPAL, i.client_id.lower())
            for i in self._world.managed_identities()
        ]
        with self._lock:
            return [*self._held.values(), *managed]

    def object_ids(self) -> set[str]:
        return {o.object_id for o in self.objects()}

    def find(self, object_id: str) -> DirectoryObject | None:
        return next((o for o in self.objects() if o.object_id == object_id.lower()), None)

    def find_by_name(self, name: str) -> DirectoryObject | None:
        """The object of that display name, ignoring case."""
        return next((o for o in self.objects() if o.display_name.lower() == name.lower()), None)

    def add(self, spec: Any) -> DirectoryObject:
        """A new user or group from an admin request {type: User|Group, displayName}, with a new object id."""
        if not isinstance(spec, dict) or set(spec) != {"type", "displayName"}:
            raise ValueError("a directory object is {type: User|Group, displayName}")
        kind, name = spec["type"], spec["displayName"]
        if kind not in (USER, GROUP):
            raise ValueError(f"type {kind!r}: User or Group (service principals come with managed identities)")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("displayName must be a non-empty string")
        created = DirectoryObject(str(uuid.uuid4()), name, kind)
        with self._lock:
            self._held[created.object_id] = created
        return created
