"""The emulated Instance Metadata Service of the VM myVM (plain HTTP, like the real one).

  GET /metadata/identity/oauth2/token?api-version=...&resource=...[&client_id=|object_id=|msi_res_id=]
      with `Metadata: true`: an access token for one of the identities Resource Manager says myVM has
  GET /jwks: the public key that signs the tokens (what Entra publishes), for the database gateways

azure-identity and MSAL find it through AZURE_POD_IDENTITY_AUTHORITY_HOST. Errors have the real
service's shape, `{"error": ..., "error_description": ...}`.

A newly attached user-assigned identity is not served at once: for `imds_identity_delay` seconds (a setting
in /_emulator/settings, 0 unless set) after the update that attached it ends, a token request for it is
answered 400 "Identity not found", as for an identity the VM does not have. Azure's own aad-pod-identity
documents 10-20 s on a VM and 40-60 s on a scale set between an assignment and the identity being usable
(https://azure.github.io/aad-pod-identity/docs/best-practices, "Retry on token retrieval"), and MSAL's IMDS
retry specification lists "Identity Not Found" among the answers to retry (AzureAD/microsoft-authentication-
library-for-dotnet, docs/imds_retry_based_on_errors.md). The default is 0 so that tests and the demo that
attach and then log in at once stay fast; set 15 for a realistic VM.
"""

from __future__ import annotations

import time

from provision.emulator import seed
from provision.emulator.arm.msi import ManagedIdentity
from provision.emulator.arm.world import World
from provision.emulator.http import EmulatorServer, Fault, Faults, Reply, Request, RequestLog, Service
from provision.emulator.keys import Authority

TOKEN_PATH = "/metadata/identity/oauth2/token"
JWKS_PATH = "/jwks"
# The parameters that name a user-assigned identity (mi_res_id is the newer spelling of msi_res_id).
SELECTORS = ("client_id", "object_id", "msi_res_id", "mi_res_id")

# Entra issues tokens only for resources it knows: Resource Manager and the database service of each cloud.
KNOWN_RESOURCES = frozenset(
    resource.rstrip("/").lower() for resources in seed.CLOUD_RESOURCES.values() for resource in resources
)


class ImdsError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.reply = Reply(status, {"error": error, "error_description": description})


# The injectable faults in the metadata service's own error shape. The status codes and reasons are
# Microsoft Learn's ("How to use managed identities for Azure resources on an Azure VM to acquire an access
# token", Error handling: 410 "IMDS is going through updates", 429 "IMDS Throttle limit reached", 500
# "unknown" / "Failed to retrieve token from the Active directory"); no recorded 410 or 429 body was found,
# so their `error` values are the emulator's.
FAULT_ERRORS = {
    "updating": (410, "service_updating", "IMDS is going through updates. It will be available within 70 seconds."),
    "throttle": (429, "too_many_requests", "IMDS Throttle limit reached. Retry with exponential backoff."),
    "server_error": (500, "unknown", "Failed to retrieve token from the Active directory."),
}


class ImdsService(Service):
    name = "imds"

    def __init__(self, authority: Authority, world: World) -> None:
        self.authority, self.world = authority, world

    def fault_reply(self, fault: Fault) -> Reply | None:
        if fault.kind not in FAULT_ERRORS:
            return None
        status, error, description = FAULT_ERRORS[fault.kind]
        headers = {"Retry-After": str(fault.retry_after)} if fault.kind == "throttle" else {}
        return Reply(status, {"error": error, "error_description": description}, headers)

    def handle(self, request: Request, fault: Fault | None) -> Reply:
        try:
            if request.method == "GET" and request.path == JWKS_PATH:
                return Reply(200, self.authority.jwks())
            if request.path != TOKEN_PATH:
                raise ImdsError(404, "not_found", f"No such path: {request.path}")
            if request.method != "GET":
                raise ImdsError(405, "invalid_request", "Only GET is allowed")
            return self._token(request)
        except ImdsError as error:
            return error.reply

    def _token(self, request: Request) -> Reply:
        if (request.headers.get("Metadata") or "").lower() != "true":
            raise ImdsError(400, "invalid_request", "Required metadata header not specified")
        query = request.query
        if not query.get("api-version"):
            raise ImdsError(400, "invalid_request", "Required query variable 'api-version' is missing")
        resource = query.get("resource")
        if not resource:
            raise ImdsError(400, "invalid_request", "Required query variable 'resource' is missing")
        if resource.rstrip("/").lower() not in KNOWN_RESOURCES:
            raise ImdsError(
                400,
                "invalid_resource",
                f"AADSTS500011: The resource principal named {resource} was not found in the tenant named"
                f" {seed.TENANT_ID}.",
            )
        identity = self._select(query)
        lifetime = self.world.configure()["token_lifetime"]
        token, expires_on = self.authority.mint_token(resource, identity.token_subject(), lifetime)
        return Reply(
            200,
            {
                "access_token": token,
                "client_id": identity.client_id,
                "expires_in": str(lifetime),
                "expires_on": str(expires_on),
                "ext_expires_in": str(lifetime),
                "not_before": str(expires_on - lifetime),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _select(self, query: dict[str, str]) -> ManagedIdentity:
        """The identity a token request names, from myVM's point of view."""
        delay = self.world.configure()["imds_identity_delay"]
        system, user = self.world.vm_identities(attached_before=time.time() - delay)
        named = {name: query[name] for name in SELECTORS if query.get(name)}
        if len(named) > 1:
            raise ImdsError(400, "invalid_request", "Only one of client_id, object_id or msi_res_id may be given")
        if not named:
            if system is not None:
                return system
            if len(user) == 1:
                return user[0]
            if user:
                raise ImdsError(
                    400,
                    "invalid_request",
                    "Multiple user assigned identities exist, please specify the clientId / resourceId of the"
                    " identity in the token request",
                )
            raise ImdsError(400, "invalid_request", "Identity not found")
        ((selector, value),) = named.items()
        candidates = ([system] if system and selector in ("client_id", "object_id") else []) + user
        for identity in candidates:
            if value.lower() == _selected_value(identity, selector).lower():
                return identity
        raise ImdsError(400, "invalid_request", "Identity not found")


def _selected_value(identity: ManagedIdentity, selector: str) -> str:
    if selector == "client_id":
        return identity.client_id
    if selector == "object_id":
        return identity.principal_id
    return identity.resource_id


def serve(host: str, port: int, authority: Authority, world: World, faults: Faults, log: RequestLog) -> EmulatorServer:
    """The Instance Metadata Service on http://host:port, serving in a background thread."""
    server = EmulatorServer(host, port, ImdsService(authority, world), faults, log)
    server.start()
    return server
