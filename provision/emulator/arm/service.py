"""The emulated Azure Resource Manager (HTTPS), and the HTTP plumbing it shares with the emulated
Instance Metadata Service: the request log, fault injection and a threaded loopback server.

Routes (names and fixed segments are case-insensitive, as in Azure):
  GET                 /metadata/endpoints (no token needed, as in Azure)
  GET                 /subscriptions/{sub}
  GET                 /subscriptions/{sub}/locations
  GET                 /subscriptions/{sub}/providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}
  GET                 /subscriptions/{sub}/resourceGroups/{rg}
  GET                 .../providers/Microsoft.ManagedIdentity/userAssignedIdentities
  GET PUT PATCH DELETE .../providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}
  GET PUT PATCH       .../userAssignedIdentities/{name}/providers/Microsoft.Resources/tags/default
  GET                 .../providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}
  GET PATCH           .../providers/Microsoft.Compute/{virtualMachines|virtualMachineScaleSets}/{name}
  GET                 /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}
  Microsoft.DBforPostgreSQL/flexibleServers: see provision.emulator.arm.postgresql
Every request is authorized first, as Resource Manager does (provision.emulator.directory).
Admin routes for tests, no token needed, not recorded: see `ADMIN_HELP`.
"""

from __future__ import annotations

import fnmatch
import json
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt

from provision.emulator import seed
from provision.emulator.arm.postgresql import PROVIDER as POSTGRES_PROVIDER
from provision.emulator.arm.postgresql import FlexibleServers
from provision.emulator.arm.world import MACHINE_KINDS, VIRTUAL_MACHINES, ArmError, World
from provision.emulator.directory import Directory
from provision.emulator.entra import Entra
from provision.emulator.keys import Authority, TokenRejected
from provision.emulator.recording import Capture, masked, masked_headers

ADMIN_PREFIX = "/_emulator/"
ADMIN_HELP = {
    "POST /_emulator/reset": "back to the seed world and settings; clears faults",
    "GET /_emulator/faults": "the active faults with the count each has left",
    "POST /_emulator/faults": "add a fault: {kind, service, method, path, count, seconds, retry_after, identity}",
    "DELETE /_emulator/faults": "remove every fault",
    "GET /_emulator/settings": "operation_seconds, token_lifetime, imds_identity_delay",
    "PATCH /_emulator/settings": "change operation_seconds, token_lifetime and/or imds_identity_delay",
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
COMPUTE_API_VERSION = "2026-04-01"
TAGS_SEGMENTS = ["providers", "microsoft.resources", "tags", "default"]  # the Tags API below a resource

# -- requests, replies and the log ------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise ArmError(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            ) from None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class RequestLog:
    """Every request the emulated services answered, in order, as JSON lines in the state directory
    and in memory; a request's number is its position, so a test can look at what one step sent."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._file = path.open("w", encoding="utf-8")
        self.capture = Capture()  # the unredacted counterpart, for tests; off unless switched on

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry = {"seq": len(self._entries), **entry}
            self._entries.append(entry)
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()

    def since(self, mark: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            return self._entries[mark:], len(self._entries)

    def close(self) -> None:
        with self._lock:
            self._file.close()


# -- fault injection ----------------------------------------------------------------------------------

FAULT_KINDS = {
    "latency": "wait `seconds` (default 1) before answering normally",
    "throttle": "429 TooManyRequests with Retry-After: `retry_after` (default 1)",
    "server_error": "500 InternalServerError",
    "updating": "410 Gone: the metadata service is being updated (imds only)",
    "conflict": "409 with Azure's wording for `code` (default AnotherOperationInProgress; see CONFLICTS)",
    "operation_failed": "the operation this PATCH starts ends Failed and the earlier identities come back",
    "drop": "close the connection without an answer (the request is not carried out)",
    "concurrent_change": "someone else changes the machine first (new etag; attaches `identity` if given;"
    " `system_assigned` true/false adds or removes its system-assigned identity, changing `type`)",
    "retry_after": "answer normally, with Retry-After: `retry_after` (default 1)",
}


# 409s by code, worded as Azure words them where a recorded answer was found.
CONFLICTS = {
    # No recorded Compute text found: the same wording the emulator gives a PATCH on a busy machine.
    "Conflict": "The request failed due to conflict with a concurrent request. Retry after the operation on"
    " this resource has completed.",
    # A provider's "one write at a time" answer (Microsoft.Network's, which Bicep templates and terraform
    # configurations retry on).
    "AnotherOperationInProgress": "Another operation on this or dependent resource is in progress. Retry when"
    " it has completed.",
    # Resource Manager's wording, as recorded in terraform and azure-cli output (resource provider
    # registration, container apps).
    "ConflictingConcurrentWriteNotAllowed": "The operation was interrupted by a conflicting concurrent write on"
    " the same entity. Please retry later.",
    # Compute's final 409, as recorded in azure-cli and terraform output ("Operation 'startTenantUpdate'
    # is not allowed on VM '...' since the VM is marked for deletion. ...").
    "OperationNotAllowed": "Operation 'PATCH' is not allowed on VM since the VM is marked for deletion. You can"
    " only retry the Delete operation (or wait for an ongoing one to complete).",
}


@dataclass
class Fault:
    kind: str
    service: str = "arm"  # or "imds"
    method: str = "*"
    path: str = "*"  # shell-style pattern on the URL path, case-insensitive
    count: int | None = 1  # how many matching requests it hits; None: until cleared
    seconds: float = 1.0
    retry_after: int = 1
    identity: str | None = None
    system_assigned: bool | None = None
    code: str = "AnotherOperationInProgress"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            self.service == service
            and self.method in ("*", method.upper())
            and fnmatch.fnmatchcase(path.lower(), self.path.lower())
        )


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, spec: Any) -> Fault:
        if not isinstance(spec, dict) or spec.get("kind") not in FAULT_KINDS:
            raise ArmError(400, "InvalidFault", f"a fault needs a kind, one of: {', '.join(FAULT_KINDS)}")
        known = set(Fault.__dataclass_fields__) - {"id"}
        if not set(spec) <= known:
            raise ArmError(400, "InvalidFault", f"unknown fault fields: {', '.join(sorted(set(spec) - known))}")
        try:
            fault = Fault(**spec)
            fault.method = str(fault.method).upper()
            fault.count = None if fault.count is None else int(fault.count)
            fault.seconds, fault.retry_after = float(fault.seconds), int(fault.retry_after)
            valid = (
                fault.service in ("arm", "imds")
                and (fault.kind != "updating" or fault.service == "imds")
                and (fault.count is None or fault.count > 0)
                and fault.seconds >= 0
                and fault.code in CONFLICTS
                and fault.system_assigned in (None, True, False)
            )
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ArmError(400, "InvalidFault", f"invalid fault: {spec}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, service: str, method: str, path: str) -> Fault | None:
        """The first fault that matches this request, counted as used."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(service, method, path):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
            return None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared


def _fault_reply(fault: Fault) -> Reply | None:
    """The answer a fault gives instead of the service's, if it gives one."""
    if fault.kind == "throttle":
        error = ArmError(429, "TooManyRequests", "The request is being throttled. Retry after the given time.")
        return Reply(429, error.body(), {"Retry-After": str(fault.retry_after)})
    if fault.kind == "server_error":
        error = ArmError(500, "InternalServerError", "Encountered internal server error. Please try again.")
        return Reply(500, error.body())
    if fault.kind == "conflict":
        return Reply(409, ArmError(409, fault.code, CONFLICTS[fault.code]).body())
    return None


# -- the server -----------------------------------------------------------------------------------


class Service:
    """What one emulated endpoint answers."""

    name = ""

    def handle(self, request: Request, fault: Fault | None) -> Reply:
        raise NotImplementedError

    def admin(self, request: Request) -> Reply | None:
        """An answer to an admin request, or None when this service has no admin routes."""
        return None

    def fault_reply(self, fault: Fault) -> Reply | None:
        """The answer a fault gives instead of this service's, if it gives one, in this service's shape."""
        return _fault_reply(fault)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this
    server: EmulatorServer

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_PATCH = do_DELETE = do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log records every request."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(self.command, unquote(url.path), dict(parse_qsl(url.query)), self.headers, body)
        service = self.server.service
        if request.path.startswith(ADMIN_PREFIX):
            reply = _guarded(service.admin, request) or Reply(404, {"error": "no admin routes here"})
            self._send(reply)
            return
        self.server.log.capture.record(
            {
                "service": service.name,
                "method": request.method,
                "target": self.path,
                "headers": list(self.headers.items()),
                "body": body.decode("latin-1"),
            }
        )
        fault = self.server.faults.take(service.name, request.method, request.path)
        entry: dict[str, Any] = {
            "time": round(time.time(), 3),
            "service": service.name,
            "method": request.method,
            "path": request.path,
            "query": masked(request.query),
            "headers": masked_headers(request.headers),
            "body": masked(_json_or_text(body)),
            "fault": fault.kind if fault else None,
        }
        if fault and fault.kind == "latency":
            time.sleep(fault.seconds)
        if fault and fault.kind == "drop":
            self.server.log.record({**entry, "status": None})
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        reply = (fault and service.fault_reply(fault)) or _guarded(service.handle, request, fault)
        if fault and fault.kind == "retry_after":
            reply.headers["Retry-After"] = str(fault.retry_after)
        self.server.log.record({**entry, "status": reply.status})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _guarded(method: Callable[..., Any], *args: Any) -> Any:
    """The service's answer; an unexpected exception becomes a 500 with a JSON body and a traceback on stderr."""
    try:
        return method(*args)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return Reply(500, ArmError(500, "InternalServerError", "The emulator failed on this request.").body())


def _json_or_text(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class EmulatorServer(ThreadingHTTPServer):
    """A threaded server on one loopback address; TLS, when given, is negotiated in the connection's thread
    so that a slow client cannot hold up the others."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        service: Service,
        faults: Faults,
        log: RequestLog,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in seed.loopback(host) else socket.AF_INET
        self.service, self.faults, self.log, self.tls = service, faults, log, tls
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            secured = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(secured, client_address)
        finally:
            secured.close()

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name=f"{self.service.name}-server", daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# -- Resource Manager ---------------------------------------------------------------------------------


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
        world.on_reset(self.directory.reset)

    def handle(self, request: Request, fault: Fault | None) -> Reply:
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        if request.method == "GET" and request.path.rstrip("/").lower() == "/metadata/endpoints":
            return Reply(200, _cloud_metadata(f"https://{request.headers.get('Host')}"), headers)
        try:
            caller = self._authenticate(request)
            self.directory.authorize(caller, request.method, request.path, _json_or_text(request.body))
            if "api-version" not in request.query:
                raise ArmError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
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

    def _authenticate(self, request: Request) -> str:
        """The caller's object id, from a valid bearer token; else Azure's 401."""
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
            return str(self.authority.verify_token(token.strip(), ARM_AUDIENCES)["oid"])
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
        write = self.world.update_machine if request.method == "PATCH" else self.world.replace_machine
        body, operation_id = write(sub, kind, rg, name, _object(request), request.headers.get("If-Match"), fails)
        base = f"https://{request.headers.get('Host')}"
        status_url = (
            f"{base}/subscriptions/{seed.SUBSCRIPTION_ID}/providers/Microsoft.Compute/locations/{body['location']}"
            f"/operations/{operation_id}?api-version={request.query.get('api-version', COMPUTE_API_VERSION)}"
        )
        # Like real Compute: the status URL, and no Retry-After.
        return Reply(200, body, {"Azure-AsyncOperation": status_url, "Azure-AsyncNotification": "Enabled"})

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
                return Reply(200, self.world.configure())
            if route == ("PATCH", "/_emulator/settings"):
                return Reply(200, self.world.configure(**_settings(request.json())))
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
            "settings are operation_seconds (>= 0), token_lifetime (> 0 seconds) and imds_identity_delay (>= 0)"
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
