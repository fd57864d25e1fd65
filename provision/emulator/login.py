"""Microsoft Entra's sign-in endpoints for the tenant's service principals that hold a client secret (the CI
pipeline's), over TLS: MSAL accepts only an https authority.

  GET  /{tenant}/v2.0/.well-known/openid-configuration   the tenant's OpenID metadata (MSAL's tenant discovery)
  GET  /{tenant}/discovery/v2.0/keys                     the keys that sign its tokens
  POST /{tenant}/oauth2/v2.0/token                       grant_type=client_credentials, client_id, client_secret,
                                                         scope=RESOURCE/.default: an access token for RESOURCE

azure-identity's ClientSecretCredential and EnvironmentCredential find it through AZURE_AUTHORITY_HOST. For an
authority host that is not one of Microsoft's, MSAL first asks login.microsoftonline.com's instance discovery
whether the host is a known one (msal/authority.py, _initialize_entra_authority), which no local host is and no
loopback-only test may ask: clients turn it off, as azure-identity documents for private authorities
(disable_instance_discovery=True; the Azure CLI's core.instance_discovery=false). So no instance discovery
document is served here.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qsl

from provision.emulator import seed
from provision.emulator.arm.world import World
from provision.emulator.http import EmulatorServer, Faults, Reply, Request, RequestLog, Service
from provision.emulator.imds import KNOWN_RESOURCES
from provision.emulator.keys import Authority

DEFAULT_SCOPE_SUFFIX = "/.default"


class LoginError(Exception):
    """Entra's OAuth error answer: `error`, and an AADSTS code and text in `error_description`
    (shape as recorded in Azure/sap-automation#418 and OfficeDev/microsoft-365-agents-toolkit#8621)."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        self.reply = Reply(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID:"
                f" {correlation}\r\nTimestamp: {now}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={code}",
            },
        )


class LoginService(Service):
    name = "login"

    def __init__(self, authority: Authority, world: World) -> None:
        self.authority, self.world = authority, world
        # The CI service principal's client secret: made at each start, handed to tests through env.sh only.
        self.ci_secret = secrets.token_urlsafe(30)

    def handle(self, request: Request, fault: Any) -> Reply:
        base = f"https://{request.headers.get('Host')}"
        segments = [s for s in request.path.split("/") if s]
        try:
            if len(segments) < 2 or segments[0].lower() != seed.TENANT_ID:
                raise LoginError(
                    400,
                    "invalid_tenant",
                    90002,
                    f"Tenant '{segments[0] if segments else ''}' not found. Check to make sure you have the correct"
                    " tenant ID and are signing into the correct cloud.",
                )
            route = (request.method, "/".join(segments[1:]))
            if route == ("GET", "v2.0/.well-known/openid-configuration"):
                return Reply(200, _openid_configuration(base))
            if route == ("GET", "discovery/v2.0/keys"):
                return Reply(200, self.authority.jwks())
            if route == ("POST", "oauth2/v2.0/token"):
                return self._token(request)
            return Reply(404, {"error": "not_found", "error_description": f"No such endpoint: {request.path}"})
        except LoginError as error:
            return error.reply

    def _token(self, request: Request) -> Reply:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            raise LoginError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type')}'.",
            )
        client_id = (form.get("client_id") or "").lower()
        if client_id != seed.CI_CLIENT_ID:
            raise LoginError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{seed.TENANT_ID}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), self.ci_secret):
            raise LoginError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret"
                f" value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        scope = form.get("scope", "").split()
        resources = [s[: -len(DEFAULT_SCOPE_SUFFIX)] for s in scope if s.endswith(DEFAULT_SCOPE_SUFFIX)]
        if len(resources) != 1:
            raise LoginError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope', '')} is not valid. Client credential flows must"
                " have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        (resource,) = resources
        if resource.rstrip("/").lower() not in KNOWN_RESOURCES:
            raise LoginError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {seed.TENANT_ID}.",
            )
        lifetime = self.world.configure()["token_lifetime"]
        subject = {"client_id": seed.CI_CLIENT_ID, "principal_id": seed.CI_PRINCIPAL_ID}
        token, _ = self.authority.mint_token(resource, subject, lifetime)
        return Reply(
            200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
        )


def _openid_configuration(base: str) -> dict[str, Any]:
    """The tenant's v2.0 OpenID metadata in the shape Entra serves it, its endpoints here."""
    tenant = f"{base}/{seed.TENANT_ID}"
    return {
        "token_endpoint": f"{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{tenant}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{tenant}/oauth2/v2.0/logout",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }


def serve(
    host: str, port: int, authority: Authority, service: LoginService, faults: Faults, log: RequestLog
) -> EmulatorServer:
    """Entra's sign-in endpoints on https://host:port, serving in a background thread."""
    server = EmulatorServer(host, port, service, faults, log, authority.server_context("login"))
    server.start()
    return server
