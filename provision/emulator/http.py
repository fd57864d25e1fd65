"""The HTTP machinery the emulated services share: requests and replies, the request log, fault injection
and a threaded loopback server (TLS optional) that hands each request to a Service."""

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

from provision.emulator import seed
from provision.emulator.recording import Capture, masked, masked_headers

ADMIN_PREFIX = "/_emulator/"


class ArmError(Exception):
    """An answer in Resource Manager's error shape, `{"error": {"code", "message"}}`, which the admin routes
    and the injected faults answer in too."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


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
            "body": masked(json_or_text(body)),
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


def json_or_text(body: bytes) -> Any:
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
    # socketserver keeps 5 connections waiting to be accepted: in a burst (100 clients at once) the kernel
    # drops the rest's handshakes, and they hang in TCP retransmissions for minutes, which no Azure
    # endpoint does. As many as the database listeners keep.
    request_queue_size = 512

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
