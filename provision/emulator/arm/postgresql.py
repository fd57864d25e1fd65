"""Microsoft.DBforPostgreSQL/flexibleServers in the emulated Resource Manager: the emulated Flexible
Server's resource, its authentication settings and its Microsoft Entra administrators.

Shapes and status codes follow the REST specification's examples (azure-rest-api-specs,
specification/postgresql/resource-manager/Microsoft.DBforPostgreSQL/stable/2025-08-01/examples:
ServersGet, ServersUpdateWithMicrosoftEntraEnabled, CapabilitiesByServerList, AdministratorsMicrosoftEntraAdd/Get,
AdministratorsListByServer, AdministratorDelete): the PATCH of a server, the PUT and the DELETE of an
administrator answer 202 with Azure-AsyncOperation and Location, and no body.

A change takes effect on the database at once (the gateway asks `entra_enabled`, the database servers
create or unmap an admin's role through the listener); its operation reads InProgress for the world's
operation_seconds, then Succeeded. The server keeps running through an authConfig change: azure-cli
2.91.0 warns of a restart before an update only for a new SKU or storage beyond 4 TiB (custom_commands.py,
_confirm_restart_server), never for --microsoft-entra-auth or --password-auth; no Microsoft page we found
(security-entra-configure, the REST examples) says either way.

Routes (case-insensitive, under /subscriptions/{sub}):
  GET          /providers/Microsoft.DBforPostgreSQL/flexibleServers
  GET          /providers/Microsoft.DBforPostgreSQL/locations/{loc}/azureAsyncOperation/{id}
  GET          /providers/Microsoft.DBforPostgreSQL/locations/{loc}/operationResults/{id}
  GET          /resourceGroups/{rg}/providers/Microsoft.DBforPostgreSQL/flexibleServers
  GET PATCH    /resourceGroups/{rg}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{name}
  GET          .../flexibleServers/{name}/capabilities
  GET          .../flexibleServers/{name}/administrators
  GET PUT DELETE .../flexibleServers/{name}/administrators/{objectId}
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provision.emulator import seed
from provision.emulator.arm.world import ArmError, World

PROVIDER = "Microsoft.DBforPostgreSQL"
SERVER_TYPE = f"{PROVIDER}/flexibleServers"
ADMIN_TYPE = f"{SERVER_TYPE}/administrators"
# Enum values of the specification's AuthConfig (MicrosoftEntraAuth, PasswordBasedAuth) and PrincipalType.
SWITCHES = ("Enabled", "Disabled")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "Unknown")
GUID_CHARS = frozenset("0123456789abcdef-")
SKU, TIER, STORAGE_GB = "Standard_D2ds_v5", "GeneralPurpose", 128

# Called with (added, principal name, object id, principal type) when an admin is added or removed.
AdminListener = Callable[[bool, str, str, str], None]


@dataclass
class Admin:
    object_id: str
    principal_name: str
    principal_type: str
    tenant_id: str


@dataclass
class Server:
    resource_group: str
    name: str
    version: str
    entra_auth: str = "Enabled"
    password_auth: str = "Enabled"
    admins: dict[str, Admin] = field(default_factory=dict)  # by lower-case object id

    @property
    def id(self) -> str:
        group = f"/subscriptions/{seed.SUBSCRIPTION_ID}/resourceGroups/{self.resource_group}"
        return f"{group}/providers/{SERVER_TYPE}/{self.name}"

    def to_arm(self) -> dict[str, Any]:
        auth: dict[str, Any] = {"activeDirectoryAuth": self.entra_auth, "passwordAuth": self.password_auth}
        if self.entra_auth == "Enabled":
            auth["tenantId"] = seed.TENANT_ID
        return {
            "sku": {"name": SKU, "tier": TIER},
            "properties": {
                "storage": {"storageSizeGB": STORAGE_GB, "autoGrow": "Disabled", "tier": "P10", "iops": 500},
                "network": {"publicNetworkAccess": "Enabled"},
                # az's update validates the server's backup settings against its capabilities.
                "backup": {"backupRetentionDays": 7, "geoRedundantBackup": "Disabled"},
                "availabilityZone": "1",
                "authConfig": auth,
                "fullyQualifiedDomainName": seed.host_name(self.name),
                "version": self.version,
                "administratorLogin": seed.DATABASE_ADMIN if self.password_auth == "Enabled" else None,
                "state": "Ready",
                "highAvailability": {"mode": "Disabled", "state": "NotEnabled"},
                "replicationRole": "Primary",
            },
            "location": seed.LOCATION,
            "id": self.id,
            "name": self.name,
            "type": SERVER_TYPE,
        }

    def admin_to_arm(self, admin: Admin) -> dict[str, Any]:
        # AdministratorsMicrosoftEntraGet: `name` is the principal's name, the id ends in its object id.
        return {
            "properties": {
                "principalType": admin.principal_type,
                "principalName": admin.principal_name,
                "objectId": admin.object_id,
                "tenantId": admin.tenant_id,
            },
            "id": f"{self.id}/administrators/{admin.object_id}",
            "name": admin.principal_name,
            "type": ADMIN_TYPE,
        }


@dataclass
class Operation:
    id: str
    started: float
    ends: float

    def to_arm(self, now: float) -> dict[str, Any]:
        done = now >= self.ends
        return {"name": self.id, "status": "Succeeded" if done else "InProgress", "startTime": _iso(self.started)}


class FlexibleServers:
    """The subscription's Flexible servers: the emulated one, as the seed makes it, until reset.

    The seed server has Entra authentication on and the operator as its Entra admin `aadadmin`, ready for the
    walkthrough; with `entra=False` it is as Azure creates one by default instead: password authentication only
    and no Entra admin (ServersGet's authConfig; azure-cli#24713: "AD auth is disabled by default and password
    auth is enabled by default")."""

    def __init__(self, world: World, name: str, version: str, entra: bool = True) -> None:
        self._world, self._name, self._version, self._entra = world, name, version, entra
        self._lock = threading.Lock()
        self._listeners: list[AdminListener] = []
        self._seed()
        world.on_reset(self.reset)

    def _seed(self) -> None:
        server = Server(seed.RESOURCE_GROUP, self._name, self._version)
        if self._entra:
            operator = Admin(seed.OPERATOR_PRINCIPAL_ID, seed.DATABASE_ADMIN, "ServicePrincipal", seed.TENANT_ID)
            server.admins[operator.object_id] = operator
        else:
            server.entra_auth = "Disabled"
        self.servers = {(server.resource_group.lower(), server.name.lower()): server}
        self.operations: dict[str, Operation] = {}

    def seed_admins(self) -> list[Admin]:
        """The Entra admins the seed server starts with (the database servers create their roles)."""
        with self._lock:
            return [admin for server in self.servers.values() for admin in server.admins.values()]

    def reset(self) -> None:
        """Back to the seed; the seed's admins get their powers back if a test took them."""
        with self._lock:
            self._seed()
            listeners = list(self._listeners)
        for admin in self.seed_admins():
            for listener in listeners:
                listener(True, admin.principal_name, admin.object_id, admin.principal_type)

    def on_admin_change(self, listener: AdminListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def entra_enabled(self, name: str) -> bool:
        """Whether the server of that name accepts Microsoft Entra tokens (the gateway asks at every login)."""
        with self._lock:
            return any(s.name.lower() == name.lower() and s.entra_auth == "Enabled" for s in self.servers.values())

    # -- routing --------------------------------------------------------------------------------

    def handle(self, method: str, segments: list[str], body: Any, base: str, api_version: str) -> tuple[int, Any, dict]:
        """Answer a request whose path (split in `segments`) is under the provider: (status, body, headers)."""
        lower = [s.lower() for s in segments]
        self._world.check_scope(segments[1])
        at = lower.index(PROVIDER.lower())
        rest, rest_lower = segments[at + 1 :], lower[at + 1 :]
        group = segments[3] if lower[2] == "resourcegroups" else None
        if group is None:
            if rest_lower == ["flexibleservers"] and method == "GET":
                return 200, self._list(None), {}
            operations = ("azureasyncoperation", "operationresults")
            if len(rest) == 4 and rest_lower[0] == "locations" and rest_lower[2] in operations and method == "GET":
                return self._operation(rest_lower[2], rest[3])
            raise _no_route(segments)
        self._world.check_scope(segments[1], group)
        if not rest_lower or rest_lower[0] != "flexibleservers":
            raise _no_route(segments)
        if len(rest) == 1 and method == "GET":
            return 200, self._list(group), {}
        if len(rest) < 2:
            raise _no_route(segments)
        name = rest[1]
        started = lambda: self._start(base, api_version)  # noqa: E731
        if len(rest) == 2:
            if method == "GET":
                return 200, self._server(group, name).to_arm(), {}
            if method == "PATCH":
                self._patch(group, name, body)
                return 202, None, started()
            raise _method_not_allowed(method, segments)
        if rest_lower[2:] == ["capabilities"] and method == "GET":
            with self._lock:
                return 200, {"value": [_capabilities(self._server(group, name))]}, {}
        if rest_lower[2] != "administrators" or len(rest) > 4:
            raise _no_route(segments)
        if len(rest) == 3:
            if method != "GET":
                raise _method_not_allowed(method, segments)
            with self._lock:
                server = self._server(group, name)
                return 200, {"value": [server.admin_to_arm(a) for a in server.admins.values()]}, {}
        object_id = rest[3]
        if method == "GET":
            with self._lock:
                server = self._server(group, name)
                admin = server.admins.get(object_id.lower())
                if admin is None:
                    raise _admin_not_found(server, object_id)
                return 200, server.admin_to_arm(admin), {}
        if method == "PUT":
            self._put_admin(group, name, object_id, body)
            return 202, None, started()
        if method == "DELETE":
            existed = self._delete_admin(group, name, object_id)
            # AdministratorDelete: 202 while it runs, 204 when there was nothing to delete.
            return (202, None, started()) if existed else (204, None, {})
        raise _method_not_allowed(method, segments)

    # -- reads and writes -----------------------------------------------------------------------

    def _list(self, group: str | None) -> dict[str, Any]:
        with self._lock:
            found = [s for (rg, _), s in sorted(self.servers.items()) if group is None or rg == group.lower()]
            return {"value": [s.to_arm() for s in found]}

    def _server(self, group: str, name: str) -> Server:
        found = self.servers.get((group.lower(), name.lower()))
        if found is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{SERVER_TYPE}/{name}' under resource group '{group}' was not found.",
            )
        return found

    def _patch(self, group: str, name: str, body: Any) -> None:
        auth = _object(_object(body, "body").get("properties") or {}, "properties").get("authConfig")
        with self._lock:
            server = self._server(group, name)
            if auth is None:
                return
            auth = _object(auth, "properties.authConfig")
            entra = _switch(auth, "activeDirectoryAuth", server.entra_auth)
            password = _switch(auth, "passwordAuth", server.password_auth)
            server.entra_auth, server.password_auth = entra, password

    def _put_admin(self, group: str, name: str, object_id: str, body: Any) -> None:
        properties = _object(_object(body, "body").get("properties"), "properties")
        if not (len(object_id) == 36 and set(object_id.lower()) <= GUID_CHARS):
            raise _invalid("objectId", object_id)
        principal_type = properties.get("principalType")
        if principal_type not in PRINCIPAL_TYPES:
            raise _invalid("properties.principalType", principal_type)
        principal_name = properties.get("principalName")
        if not isinstance(principal_name, str) or not principal_name:
            raise _invalid("properties.principalName", principal_name)
        with self._lock:
            server = self._server(group, name)
            admin = Admin(
                object_id.lower(), principal_name, principal_type, properties.get("tenantId") or seed.TENANT_ID
            )
            unchanged = server.admins.get(admin.object_id) == admin
            server.admins[admin.object_id] = admin
            listeners = list(self._listeners)
        if not unchanged:
            for listener in listeners:
                listener(True, admin.principal_name, admin.object_id, admin.principal_type)

    def _delete_admin(self, group: str, name: str, object_id: str) -> bool:
        with self._lock:
            admin = self._server(group, name).admins.pop(object_id.lower(), None)
            listeners = list(self._listeners)
        if admin is not None:
            for listener in listeners:
                listener(False, admin.principal_name, admin.object_id, admin.principal_type)
        return admin is not None

    def _start(self, base: str, api_version: str) -> dict[str, str]:
        now = time.time()
        operation = Operation(str(uuid.uuid4()), now, now + self._world.operation_seconds)
        with self._lock:
            self.operations[operation.id] = operation
        prefix = f"{base}/subscriptions/{seed.SUBSCRIPTION_ID}/providers/{PROVIDER}/locations/{seed.LOCATION}"
        return {
            "Azure-AsyncOperation": f"{prefix}/azureAsyncOperation/{operation.id}?api-version={api_version}",
            "Location": f"{prefix}/operationResults/{operation.id}?api-version={api_version}",
        }

    def _operation(self, kind: str, operation_id: str) -> tuple[int, Any, dict]:
        with self._lock:
            operation = self.operations.get(operation_id)
        if operation is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{operation_id}' could not be found.")
        status = operation.to_arm(time.time())
        if kind == "operationresults" and status["status"] == "InProgress":
            return 202, None, {}
        return (200, status, {}) if kind == "azureasyncoperation" else (200, None, {})


def _capabilities(server: Server) -> dict[str, Any]:
    """What the server may change to (CapabilitiesByServerList, cut down to its own SKU, storage and version):
    az reads it before every `flexible-server update` to validate the arguments, and refuses to go on unless
    OfferRestricted is Disabled."""
    iops_tiers = [{"name": name, "iops": iops} for name, iops in (("P10", 500), ("P15", 1100), ("P20", 2300))]
    storage = {"supportedIops": 500, "storageSizeMb": STORAGE_GB * 1024, "defaultIopsTier": "P10"}
    edition = {
        "name": TIER,
        "defaultSkuName": SKU,
        "supportedServerSkus": [
            {
                "supportedFeatures": [],
                "name": SKU,
                "vCores": 2,
                "supportedIops": 3750,
                "supportedMemoryPerVcoreMb": 4096,
                "supportedZones": ["1", "2", "3"],
                "supportedHaMode": ["SameZone", "ZoneRedundant"],
            }
        ],
        "supportedStorageEditions": [
            {
                "name": "ManagedDisk",
                "defaultStorageSizeMb": STORAGE_GB * 1024,
                "supportedStorageMb": [{**storage, "supportedIopsTiers": iops_tiers}],
            }
        ],
    }
    features = ("ZoneRedundantHa", "GeoBackup", "StorageAutoGrowth", "OnlineResize")
    return {
        "name": "FlexibleServerCapabilities",
        "supportedServerEditions": [edition],
        "supportedServerVersions": [
            {"supportedFeatures": [], "name": server.version, "supportedVersionsToUpgrade": []}
        ],
        "supportedFeatures": [{"name": n, "status": "Enabled"} for n in features]
        + [{"name": "OfferRestricted", "status": "Disabled"}],
        "restricted": "Disabled",
    }


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, value)
    return value


def _switch(auth: dict[str, Any], key: str, current: str) -> str:
    value = auth.get(key, current)
    if value not in SWITCHES:
        raise _invalid(f"properties.authConfig.{key}", value)
    return str(value)


def _admin_not_found(server: Server, object_id: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{ADMIN_TYPE}/{server.name}/{object_id}' under resource group '{server.resource_group}'"
        " was not found.",
    )


def _invalid(parameter: str, value: Any) -> ArmError:
    return ArmError(400, "InvalidParameterValue", f"The value '{value}' of parameter '{parameter}' is not valid.")


def _no_route(segments: list[str]) -> ArmError:
    path = "/" + "/".join(segments)
    return ArmError(404, "InvalidResourceType", f"The emulated Resource Manager has no resource type at '{path}'.")


def _method_not_allowed(method: str, segments: list[str]) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The method '{method}' is not allowed on '/{'/'.join(segments)}'.")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + "Z"
