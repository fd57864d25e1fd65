"""The emulated Azure Resource Manager (HTTPS): authentication, then routing to the providers
(provision.emulator.arm.resources, .msi, .compute, .postgresql); the HTTP machinery is provision.emulator.http.

Routes (names and fixed segments are case-insensitive, as in Azure):
  GET                 /metadata/endpoints (no token needed, as in Azure)
  GET                 /subscriptions/{sub}
  GET                 /subscriptions/{sub}/locations
  GET                 /subscriptions/{sub}/providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}
  GET                 /subscriptions/{sub}/resourceGroups/{rg}
  GET                 .../providers/Microsoft.ManagedIdentity/userAssignedIdentities
  GET PUT PATCH DELETE .../providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}
  GET PUT PATCH       .../userAssignedIdentities/{name}/providers/Microsoft.Resources/tags/default
  GET                 .../userAssignedIdentities/{name}/federatedIdentityCredentials
  GET PUT DELETE      .../userAssignedIdentities/{name}/federatedIdentityCredentials/{credential}
  GET                 .../providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}
  GET PUT PATCH       .../providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}/{name} (PUT creates)
  GET                 /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}
  GET                 .../{VM or scale set}/providers/Microsoft.ManagedIdentity/identities/default
  Microsoft.DBforPostgreSQL/flexibleServers: see provision.emulator.arm.postgresql
Every request is counted against the caller's request limits (provision.emulator.arm.throttling), then
authorized, as Resource Manager does (provision.emulator.directory).
Admin routes for tests, no token needed, not recorded: see `ADMIN_HELP`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

import jwt

from provision.emulator import seed
from provision.emulator.arm import api_versions
from provision.emulator.arm.compute import MACHINE_KINDS, VIRTUAL_MACHINES
from provision.emulator.arm.msi import CREDENTIALS_SEGMENT
from provision.emulator.arm.postgresql import PROVIDER as POSTGRES_PROVIDER
from provision.emulator.arm.postgresql import FlexibleServers
from provision.emulator.arm.throttling import Buckets, operation, parse_limits
from provision.emulator.arm.world import World
from provision.emulator.directory import Directory
from provision.emulator.entra import Entra
from provision.emulator.http import (
    ArmError,
    EmulatorServer,
    Fault,
    Faults,
    Reply,
    Request,
    RequestLog,
    Service,
    json_or_text,
)
from provision.emulator.keys import Authority, TokenRejected

ADMIN_HELP = {
    "POST /_emulator/reset": "back to the seed world and settings; clears faults",
    "GET /_emulator/faults": "the active faults with the count each has left",
    "POST /_emulator/faults": "add a fault: {kind, service, method, path, count, seconds, retry_after, identity}",
    "DELETE /_emulator/faults": "remove every fault",
    "GET /_emulator/settings": "operation_seconds, token_lifetime, imds_identity_delay, rateLimits",
    "PATCH /_emulator/settings": "change operation_seconds, token_lifetime, imds_identity_delay and/or rateLimits"
    ' ({"reads"|"writes"|"deletes": {"bucket", "refill"}}: those buckets start again full; reset restores Azure\'s)',
    "GET /_emulator/requests?since=N&limit=M": "recorded requests from number N on (at most M), and the next mark",
    "GET /_emulator/role-assignments": "every role assignment: {principal (object id), role, scope}",
    "POST /_emulator/role-assignments": "grant: {principal, role, scope} (a built-in role; reset restores the seed's)",
    "DELETE /_emulator/role-assignments": "revoke: {principal, role, scope}",
    "GET /_emulator/directory": "the tenant's Entra objects: {objectId, displayName, type, appId}",
    "POST /_emulator/directory": "add a user or group: {type: User|Group, displayName} (reset removes it)",
    "POST /_emulator/capture": "start capturing requests and database client messages as sent, unredacted",
    "GET /_emulator/capture": "what was captured since (method, target, headers, body; or the gateway's messages)",
    "DELETE /_emulator/capture": "stop capturing and forget what was captured",
    "GET /_emulator/machine?kind=K&group=RG&name=N": "a VM or scale set as the emulated world holds it",
}
# Resource Manager accepts tokens for both of its audiences, in the order Azure's /metadata/endpoints lists them:
# the Azure CLI asks for the first (its active_directory_resource_id, azure-cli core/cloud.py _arm_to_cli_mapper),
# the SDKs for management.azure.com.
MANAGEMENT_AUDIENCES = ("https://management.core.windows.net/", seed.ARM_AUDIENCE)
ARM_AUDIENCES = tuple(variant for audience in MANAGEMENT_AUDIENCES for variant in (audience, audience.rstrip("/")))
TAGS_SEGMENTS = ["providers", "microsoft.resources", "tags", "default"]  # the Tags API below a resource


class ArmService(Service):
    name = "arm"

    def __init__(
        self,
        authority: Authority,
        world: World,
        faults: Faults,
        log: RequestLog,
        flexible: FlexibleServers,
        entra: Entra,
    ) -> None:
        self.authority, self.world, self.faults, self.log, self.flexible = authority, world, faults, log, flexible
        self.entra = entra
        self.directory = Directory()
        self.buckets = Buckets()
        world.on_reset(self.directory.reset)
        world.on_reset(self.buckets.reset)

    def handle(self, request: Request, fault: Fault | None) -> Reply:
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        if request.method == "GET" and request.path.rstrip("/").lower() == "/metadata/endpoints":
            return Reply(200, _cloud_metadata(f"https://{request.headers.get('Host')}"), headers)
        try:
            claims = self._authenticate(request)
            refused = self._count(request, claims, headers)
            if refused is not None:
                refused.headers.update(headers)
                return refused
            caller = str(claims["oid"])
            self.directory.authorize(caller, request.method, request.path, json_or_text(request.body))
            if "api-version" not in request.query:
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            api_versions.check(request.path, request.query["api-version"], _location(request))
            reply = self._route(request, fault)
        except ArmError as error:
            reply = Reply(error.status, error.body())
            if error.status == 401:
                reply.headers["WWW-Authenticate"] = (
                    f'Bearer authorization_uri="https://login.windows.net/", error="invalid_token",'
                    f' error_description="{error.message}"'
                )
        reply.headers.update(headers)
        return reply

    def _authenticate(self, request: Request) -> dict[str, Any]:
        """The claims of a valid bearer token; else Azure's 401."""
        value = request.headers.get("Authorization")
        if not value:
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            )
        try:
            return self.authority.verify_token(token.strip(), ARM_AUDIENCES)
        except TokenRejected as rejected:
            if rejected.reason == "expired":
                raise ArmError(401, "ExpiredAuthenticationToken", "The access token has expired.") from None
            if rejected.reason == "wrong_audience":
                audience = jwt.decode(token.strip(), options={"verify_signature": False}).get("aud")
                raise ArmError(
                    401,
                    "InvalidAuthenticationTokenAudience",
                    f"The access token has been obtained for wrong audience or resource '{audience}'. It should"
                    f" exactly match with one of the allowed audiences {', '.join(repr(a) for a in ARM_AUDIENCES)}.",
                ) from None
            raise ArmError(401, "InvalidAuthenticationToken", f"The access token is invalid: {rejected}.") from None

    def _count(self, request: Request, claims: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        """Take a token from the caller's bucket (the principal is the token's oid; the scope the subscription in
        the path, else the tenant) and add the header Azure reports what is left in; Azure's 429 when empty."""
        segments = [s for s in request.path.split("/") if s]
        if len(segments) >= 2 and segments[0].lower() == "subscriptions":
            scope, scope_id, code = "subscription", segments[1], "SubscriptionRequestsThrottled"
        else:
            # No recorded tenant-level answer was found: the code is the one Azure clients list beside
            # SubscriptionRequestsThrottled, the wording the subscription's.
            scope, scope_id, code = "tenant", str(claims.get("tid", seed.TENANT_ID)), "TenantRequestsThrottled"
        kind = operation(request.method)
        actor = str(claims["oid"])
        verdict = self.buckets.take(f"{scope}/{scope_id.lower()}", actor, kind)
        # The header of the request's type, on every answer: "...-reads: 249" on a first GET (azure-powershell's
        # Invoke-AzRestMethod help, recorded 2024-10-29), "...-deletes" on DELETEs (recorded SDK tests);
        # on a 429 too, where Azure's Compute docs tell clients to read it to see whether Resource Manager
        # throttled (learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors).
        headers[f"x-ms-ratelimit-remaining-{scope}-{kind}"] = str(verdict.remaining)
        if verdict.allowed:
            return None
        # The shape of a recorded answer (velero-io/velero#9171).
        error = ArmError(
            429,
            code,
            f"Number of '{kind.removesuffix('s')}' requests for {scope} '{scope_id}' actor '{actor}' exceeded."
            f" Please try again after '{verdict.retry_after}' seconds after additional tokens are available."
            " Refer to https://aka.ms/arm-throttling for additional information.",
        )
        return Reply(429, error.body(), {"Retry-After": str(verdict.retry_after)})

    def _route(self, request: Request, fault: Fault | None) -> Reply:
        segments = [s for s in request.path.split("/") if s]
        lower = [s.lower() for s in segments]
        method = request.method
        if method == "GET":
            listed = self._collection(request, segments, lower)
            if listed is not None:
                return Reply(200, listed)
        if len(segments) < 2 or lower[0] != "subscriptions":
            raise _no_route(request)
        sub = segments[1]
        if POSTGRES_PROVIDER.lower() in lower[2:6]:
            api_version = request.query["api-version"]
            body = request.json() if method in ("PUT", "PATCH") else None
            return Reply(
                *self.flexible.handle(method, segments, body, f"https://{request.headers.get('Host')}", api_version)
            )
        if len(segments) == 2 and method == "GET":
            return Reply(200, self.world.subscription(sub))
        if lower[2:] == ["locations"] and method == "GET":
            return Reply(200, self.world.locations(sub))
        if len(segments) == 5 and lower[2:4] == ["providers", "microsoft.compute"] and method == "GET":
            kind = next((k for k in MACHINE_KINDS if k.lower() == lower[4]), None)
            if kind is not None:
                return Reply(200, self.world.list_machines(sub, kind))
        if lower[2:5] == ["providers", "microsoft.compute", "locations"] and len(segments) == 8:
            if lower[6] != "operations" or method != "GET":
                raise _no_route(request)
            return Reply(200, self.world.operation_status(sub, segments[7]))
        if len(segments) < 4 or lower[2] != "resourcegroups":
            raise _no_route(request)
        rg = segments[3]
        rest, rest_lower = segments[4:], lower[4:]
        if not rest and method == "GET":
            return Reply(200, self.world.resource_group(sub, rg))
        if rest_lower[:3] == ["providers", "microsoft.managedidentity", "userassignedidentities"]:
            return self._identities(request, sub, rg, rest[3:])
        if len(rest) == 4 and rest_lower[:3] == ["providers", "microsoft.network", "networkinterfaces"]:
            if method != "GET":
                raise _method_not_allowed(request)
            return Reply(200, self.world.network_interface(sub, rg, rest[3]))
        if rest_lower[:3] == ["providers", "microsoft.compute", "virtualmachines"] and rest_lower[4:] == [
            "instanceview"
        ]:
            if method != "GET":
                raise _method_not_allowed(request)
            return Reply(200, self.world.machine_instance_view(sub, rg, rest[3]))
        if (
            len(rest) == 8
            and rest_lower[:2] == ["providers", "microsoft.compute"]
            and rest_lower[4:]
            == [
                "providers",
                "microsoft.managedidentity",
                "identities",
                "default",
            ]
        ):
            kind = next((k for k in MACHINE_KINDS if k.lower() == rest_lower[2]), None)
            if kind is None:
                raise _no_route(request)
            if method != "GET":
                raise _method_not_allowed(request)
            return Reply(200, self.world.system_assigned_identity(sub, kind, rg, rest[3]))
        if len(rest) in (3, 4) and rest_lower[:2] == ["providers", "microsoft.compute"]:
            kind = next((k for k in MACHINE_KINDS if k.lower() == rest_lower[2]), None)
            if kind is not None and len(rest) == 3 and method == "GET":
                return Reply(200, self.world.list_machines(sub, kind, rg))
            if kind is not None and len(rest) == 4:
                return self._machine(request, sub, rg, kind, rest[3], fault)
        raise _no_route(request)

    def _collection(self, request: Request, segments: list[str], lower: list[str]) -> dict[str, Any] | None:
        """The lists that span a tenant, a subscription or a group (what `az login`, `az group list`,
        `az resource list` and `az identity list` read), or None when the path is none of them."""
        if lower == ["subscriptions"]:
            return self.world.subscriptions()
        if lower == ["tenants"]:
            return self.world.tenants()
        if len(lower) < 3 or lower[0] != "subscriptions":
            return None
        sub, rest = segments[1], lower[2:]
        if rest == ["resourcegroups"]:
            return self.world.list_resource_groups(sub)
        if rest == ["resources"]:
            return self.world.list_resources(sub, None, request.query.get("$filter"))
        if len(rest) == 3 and rest[0] == "resourcegroups" and rest[2] == "resources":
            return self.world.list_resources(sub, segments[3], request.query.get("$filter"))
        if rest == ["providers", "microsoft.managedidentity", "userassignedidentities"]:
            return self.world.list_identities(sub)
        return None

    def _identities(self, request: Request, sub: str, rg: str, names: list[str]) -> Reply:
        method = request.method
        if not names and method == "GET":
            return Reply(200, self.world.list_identities(sub, rg))
        if len(names) == 5 and [n.lower() for n in names[1:]] == [
            "providers",
            "microsoft.resources",
            "tags",
            "default",
        ]:
            if method == "GET":
                return Reply(200, self.world.identity_tags(sub, rg, names[0], None))
            if method in ("PATCH", "PUT"):
                body = _object(request)
                if method == "PUT":  # Tags - Create Or Update At Scope: the whole set
                    body = {"operation": "Replace", "properties": body.get("properties")}
                return Reply(200, self.world.identity_tags(sub, rg, names[0], body))
            raise _method_not_allowed(request)
        if len(names) in (2, 3) and names[1].lower() == CREDENTIALS_SEGMENT:
            return self._credentials(request, sub, rg, names[0], names[2:])
        if len(names) != 1:
            raise _no_route(request)
        name = names[0]
        if method == "GET":
            return Reply(200, self.world.get_identity(sub, rg, name))
        if method == "PUT":
            body, created = self.world.put_identity(sub, rg, name, _object(request))
            return Reply(201 if created else 200, body)
        if method == "PATCH":
            return Reply(200, self.world.patch_identity(sub, rg, name, _object(request)))
        if method == "DELETE":
            return Reply(200 if self.world.delete_identity(sub, rg, name) else 204)
        raise _method_not_allowed(request)

    def _credentials(self, request: Request, sub: str, rg: str, identity: str, names: list[str]) -> Reply:
        method = request.method
        if not names:
            if method != "GET":
                raise _method_not_allowed(request)
            return Reply(200, self.world.list_credentials(sub, rg, identity))
        if method == "GET":
            return Reply(200, self.world.get_credential(sub, rg, identity, names[0]))
        if method == "PUT":
            body, created = self.world.put_credential(sub, rg, identity, names[0], _object(request))
            return Reply(201 if created else 200, body)
        if method == "DELETE":
            return Reply(200 if self.world.delete_credential(sub, rg, identity, names[0]) else 204)
        raise _method_not_allowed(request)

    def _machine(self, request: Request, sub: str, rg: str, kind: str, name: str, fault: Fault | None) -> Reply:
        if fault and fault.kind == "concurrent_change":
            self.world.change_concurrently(sub, kind, rg, name, fault.identity, fault.system_assigned)
        if request.method == "GET":
            if kind == VIRTUAL_MACHINES and "instanceview" in request.query.get("$expand", "").lower().split(","):
                return Reply(200, self.world.get_machine_with_instance_view(sub, rg, name))
            return Reply(200, self.world.get_machine(sub, kind, rg, name))
        if request.method not in ("PATCH", "PUT"):
            raise _method_not_allowed(request)
        fails = bool(fault and fault.kind == "operation_failed")
        if_match, body = request.headers.get("If-Match"), _object(request)
        if request.method == "PATCH":
            answer, operation_id = self.world.update_machine(sub, kind, rg, name, body, if_match, fails)
            created = False
        else:
            answer, operation_id, created = self.world.put_machine(sub, kind, rg, name, body, if_match, fails)
        base = f"https://{request.headers.get('Host')}"
        status_url = (
            f"{base}/subscriptions/{seed.SUBSCRIPTION_ID}/providers/Microsoft.Compute/locations/{answer['location']}"
            f"/operations/{operation_id}?api-version={request.query['api-version']}"
        )
        # Like real Compute: the status URL, and no Retry-After.
        headers = {"Azure-AsyncOperation": status_url, "Azure-AsyncNotification": "Enabled"}
        return Reply(201 if created else 200, answer, headers)

    # -- admin ----------------------------------------------------------------------------------------

    def admin(self, request: Request) -> Reply:
        route = (request.method, request.path.rstrip("/"))
        try:
            if route == ("POST", "/_emulator/reset"):
                self.world.reset()
                self.faults.clear()
                self.log.capture.stop()
                return Reply(200, {"mark": self.log.since(0)[1]})
            if route == ("GET", "/_emulator/faults"):
                return Reply(200, {"faults": self.faults.list()})
            if route == ("POST", "/_emulator/faults"):
                return Reply(201, asdict(self.faults.add(request.json())))
            if route == ("DELETE", "/_emulator/faults"):
                return Reply(200, {"cleared": self.faults.clear()})
            if route == ("GET", "/_emulator/settings"):
                return Reply(200, {**self.world.configure(), "rateLimits": self.buckets.settings()})
            if route == ("PATCH", "/_emulator/settings"):
                return Reply(200, self._configure(request.json()))
            if route == ("GET", "/_emulator/role-assignments"):
                return Reply(200, {"assignments": self.directory.assignments()})
            if route == ("POST", "/_emulator/role-assignments"):
                return Reply(201, self.directory.grant(request.json(), self.entra.object_ids()))
            if route == ("DELETE", "/_emulator/role-assignments"):
                return Reply(200, self.directory.revoke(request.json(), self.entra.object_ids()))
            if route == ("GET", "/_emulator/directory"):
                return Reply(200, {"objects": [o.to_json() for o in self.entra.objects()]})
            if route == ("POST", "/_emulator/directory"):
                return Reply(201, self.entra.add(request.json()).to_json())
            if route == ("GET", "/_emulator/requests"):
                entries, mark = self.log.since(int(request.query.get("since", "0")))
                limit = int(request.query.get("limit", len(entries)))
                return Reply(200, {"requests": entries[:limit], "mark": mark})
            if route[1] == "/_emulator/capture":
                return self._capture(request.method)
            if route == ("GET", "/_emulator/machine"):
                return self._machine_as_held(request.query)
        except ArmError as error:
            return Reply(error.status, error.body())
        except ValueError as error:
            return Reply(400, ArmError(400, "InvalidRequest", str(error)).body())
        message = f"no admin route {request.method} {request.path}; the routes are: " + "; ".join(ADMIN_HELP)
        return Reply(404, ArmError(404, "NoSuchAdminRoute", message).body())

    def _configure(self, body: Any) -> dict[str, Any]:
        """Every setting checked before any is changed."""
        if isinstance(body, dict) and "rateLimits" in body:
            body = dict(body)
            limits = parse_limits(body.pop("rateLimits"), self.buckets.limits)
        else:
            limits = {}
        settings = _settings(body)
        return {**self.world.configure(**settings), "rateLimits": self.buckets.configure(limits)}

    def _machine_as_held(self, query: dict[str, str]) -> Reply:
        missing = [name for name in ("kind", "group", "name") if not query.get(name)]
        if missing:
            raise ArmError(400, "InvalidRequest", f"missing query parameters: {', '.join(missing)}")
        return Reply(200, self.world.get_machine(seed.SUBSCRIPTION_ID, query["kind"], query["group"], query["name"]))

    def _capture(self, method: str) -> Reply:
        capture = self.log.capture
        if method == "POST":
            capture.start()
            return Reply(200, {"capturing": True})
        if method == "DELETE":
            capture.stop()
            return Reply(200, {"capturing": False})
        entries = capture.entries()
        if method != "GET" or entries is None:
            return Reply(409, ArmError(409, "NotCapturing", "start the capture first: POST /_emulator/capture").body())
        return Reply(200, {"requests": entries})


def _settings(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not set(body) <= {"operation_seconds", "token_lifetime", "imds_identity_delay"}:
        raise ValueError(
            "settings are operation_seconds (>= 0), token_lifetime (> 0 seconds), imds_identity_delay (>= 0)"
            " and rateLimits"
        )
    settings: dict[str, Any] = {}
    if "imds_identity_delay" in body:
        settings["imds_identity_delay"] = float(body["imds_identity_delay"])
        if settings["imds_identity_delay"] < 0:
            raise ValueError("imds_identity_delay must be >= 0")
    if "operation_seconds" in body:
        settings["operation_seconds"] = float(body["operation_seconds"])
        if settings["operation_seconds"] < 0:
            raise ValueError("operation_seconds must be >= 0")
    if "token_lifetime" in body:
        settings["token_lifetime"] = int(body["token_lifetime"])
        if settings["token_lifetime"] <= 0:
            raise ValueError("token_lifetime must be > 0")
    return settings


def _location(request: Request) -> str:
    """The region a request is routed to: a PUT's location, else the one region every emulated group is in."""
    body = json_or_text(request.body) if request.method == "PUT" else None
    location = body.get("location") if isinstance(body, dict) else None
    return location.replace(" ", "").lower() if isinstance(location, str) and location else seed.LOCATION


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def _cloud_metadata(base: str) -> dict[str, Any]:
    """This Resource Manager's endpoints, in the shape Azure serves at /metadata/endpoints?api-version=2022-09-01
    (the public cloud's answer as recorded in kubernetes-sigs/cloud-provider-azure's and pulumi-azure-native's
    metadata tests; `az cloud register --endpoint-resource-manager` reads it all, azure-cli core/cloud.py
    _arm_to_cli_mapper); the audiences are the ones its tokens are checked against. The other endpoints are the
    public cloud's: nothing here calls them."""
    return {
        "name": "ProvisionEmulator",
        "resourceManager": base,
        "portal": "https://portal.azure.com",
        "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com",
            "audiences": list(MANAGEMENT_AUDIENCES),
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": "https://rest.media.azure.net",
        "graphAudience": "https://graph.windows.net/",
        "graph": "https://graph.windows.net/",
        "batch": "https://batch.core.windows.net/",
        "activeDirectoryDataLake": "https://datalake.azure.net/",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/",
        "appInsightsResourceId": "https://api.applicationinsights.io",
        "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
        "attestationResourceId": "https://attest.azure.net",
        "synapseAnalyticsResourceId": "https://dev.azuresynapse.net",
        "logAnalyticsResourceId": "https://api.loganalytics.io",
        "ossrDbmsResourceId": seed.DATABASE_AUDIENCE,
        "suffixes": {
            "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
            "acrLoginServer": "azurecr.io",
            "sqlServerHostname": "database.windows.net",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
            "keyVaultDns": "vault.azure.net",
            "storage": "core.windows.net",
            "azureFrontDoorEndpointSuffix": "azurefd.net",
            "storageSyncEndpointSuffix": "afs.azure.net",
            "mhsmDns": "managedhsm.azure.net",
            "mysqlServerEndpoint": "mysql.database.azure.com",
            "postgresqlServerEndpoint": "postgres.database.azure.com",
            "mariadbServerEndpoint": "mariadb.database.azure.com",
            "synapseAnalytics": "dev.azuresynapse.net",
            "attestationEndpoint": "attest.azure.net",
        },
    }


def _no_route(request: Request) -> ArmError:
    return ArmError(
        404,
        "InvalidResourceType",
        f"The emulated Resource Manager has no resource type at '{request.path}'.",
    )


def _method_not_allowed(request: Request) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The method '{request.method}' is not allowed on '{request.path}'.")


def serve(
    host: str,
    port: int,
    authority: Authority,
    world: World,
    faults: Faults,
    log: RequestLog,
    flexible: FlexibleServers,
    entra: Entra,
) -> EmulatorServer:
    """Resource Manager on https://host:port, serving in a background thread."""
    service = ArmService(authority, world, faults, log, flexible, entra)
    server = EmulatorServer(host, port, service, faults, log, authority.server_context("arm"))
    server.start()
    return server
