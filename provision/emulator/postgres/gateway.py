"""The gateway of the emulated Azure Database for PostgreSQL: TLS, Entra token login, then a relay.

Clients talk to it as to Azure: SSLRequest, TLS with a certificate from the emulator's CA, a
StartupMessage, and an access token sent as a cleartext password. The gateway checks the token
(signature, audience, nbf/exp) and the role's Entra mapping the way the flavor does, then opens a
session on the cluster's Unix socket as that role (`trust` there), replays the startup and relays
bytes both ways. Only Single Server looks into client messages, to accept a setting that vanilla
PostgreSQL does not know. Tokens and passwords are never logged.

Every listening port serves both servers: the name the client asks for in TLS (SNI, which libpq
sends for a host name, also beside `hostaddr`) picks the server and its certificate; a client that
sends no known name gets the port's own server. So `psql -h mydemoserver.postgres.database.azure.com`
with PGHOSTADDR=127.0.0.1 reaches the emulated Single Server and verifies its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.emulator import seed
from provision.emulator.keys import Authority, TokenRejected
from provision.emulator.postgres import scram
from provision.emulator.recording import Capture

log = logging.getLogger(__name__)

PROTOCOL_3 = 3 << 16
CANCEL_REQUEST = 80877102
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
MAX_STARTUP = 10_000  # PostgreSQL's own limit for a startup packet
MAX_PASSWORD = 65_536  # the server's limit for an authentication message
LOGIN_TIMEOUT = 30.0  # seconds from accept to relay, like authentication_timeout (60 s) but shorter
_CHUNK = 65_536
_MAX_REWRITE = 1 << 20  # larger Query/Parse messages stream through unread

SSL_REQUIRED = "SSL connection is required. Please specify SSL options and retry."
TOKEN_EXPIRED = "The access token has expired. Please acquire a new token and retry."
WRONG_AUDIENCE = (
    "The access token does not have a valid audience claim."
    f' Please acquire a new token for the resource "{seed.DATABASE_AUDIENCE}".'
)
# Flexible Server's refusals of a registered role, as users met them on Azure:
# cyrilgdn/terraform-provider-postgresql#423 ("pq: Service Principal oid mismatch for role[...]") and
# MicrosoftDocs/azure-docs#120133 (a service principal's token for a role registered as a user).
OID_MISMATCH = "Service Principal oid mismatch for role[{role}]."
APP_TOKEN_FOR_USER = "Service Principals cannot generate AAD_AUTH_TOKENTYPE_APP_USER tokens for role[{role}]"
SINGLE_USER_FORM = (
    "Invalid Username specified. Please check the Username and retry connection."
    " The Username should be in <username@hostname> format."
)


class Refused(Exception):
    """A login the server turns down with a FATAL error; `reason` is for the log, never shown or secret."""

    def __init__(self, message: str, reason: str, sqlstate: str = "28P01") -> None:
        super().__init__(message)
        self.message, self.reason, self.sqlstate = message, reason, sqlstate


def password_failed(user: str, reason: str) -> Refused:
    return Refused(f'password authentication failed for user "{user}"', reason)


class BackendError(Exception):
    """The cluster answered a query of the emulator's own with an error."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", "unknown error"))
        self.sqlstate = fields.get("C", "")


# -- messages -----------------------------------------------------------------------------------


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", text)]
    return message(b"E", b"".join(code.encode() + value.encode() + b"\0" for code, value in fields) + b"\0")


def startup_message(version: int, parameters: dict[str, str]) -> bytes:
    body = struct.pack("!I", version)
    body += b"".join(key.encode() + b"\0" + value.encode() + b"\0" for key, value in parameters.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def parse_startup(body: bytes) -> tuple[int, dict[str, str]]:
    """The protocol version and the parameters (user, database, options, ...) of a StartupMessage body."""
    (version,) = struct.unpack("!I", body[:4])
    fields = body[4:].split(b"\0")
    if len(fields) < 2 or fields[-2:] != [b"", b""] or len(fields) % 2:
        raise ValueError("malformed startup packet")
    pairs = fields[:-2]
    return version, {pairs[i].decode(): pairs[i + 1].decode() for i in range(0, len(pairs), 2)}


def parse_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse or NoticeResponse body."""
    return {item[:1].decode(): item[1:].decode(errors="replace") for item in body.split(b"\0") if item}


async def read_message(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    if not 4 <= length <= limit:
        raise ValueError(f"message of {length} bytes")
    return header[:1], await reader.readexactly(length - 4)


# -- Single Server's setting --------------------------------------------------------------------

# `SET [SESSION|LOCAL] aad_validate_oids_in_tenant ...` or `RESET ...` at the start of a statement.
_AAD_SETTING = re.compile(
    rb"(^|;)(\s*(?:SET\s+(?:SESSION\s+|LOCAL\s+)?|RESET\s+))aad_validate_oids_in_tenant\b", re.IGNORECASE
)
AAD_SETTING_STANDIN = b"azure.aad_validate_oids_in_tenant"
# `SHOW aad_validate_oids_in_tenant` reads the stand-in under the setting's own name, one row and column
# as SHOW answers; its value is on until a session turns it off (single.sql: the walkthrough's
# "SET aad_validate_oids_in_tenant = off" before CREATE ROLE exists because validation is on).
_SHOW_AAD_SETTING = re.compile(rb"(^|;)(\s*)SHOW\s+aad_validate_oids_in_tenant\b", re.IGNORECASE)
_SHOW_STANDIN = b"SELECT pg_catalog.current_setting('" + AAD_SETTING_STANDIN + b"') AS aad_validate_oids_in_tenant"


def _rename_aad_setting(query: bytes) -> bytes:
    query = _SHOW_AAD_SETTING.sub(rb"\1\2" + _SHOW_STANDIN, query)
    return _AAD_SETTING.sub(rb"\1\2" + AAD_SETTING_STANDIN, query)


def rewrite_aad_setting(kind: bytes, body: bytes) -> bytes:
    """A Query or Parse message body with Single Server's own setting renamed to a custom one vanilla
    PostgreSQL accepts; every other message unchanged."""
    if kind == b"Q":
        return _rename_aad_setting(body)
    if kind == b"P":
        name, query, rest = body.split(b"\0", 2)
        return name + b"\0" + _rename_aad_setting(query) + b"\0" + rest
    return body


# -- SCRAM --------------------------------------------------------------------------------------


# -- the emulator's own connection to a cluster -------------------------------------------------


class ClusterClient:
    """A minimal client on a cluster's Unix socket, as its superuser: text results, one query at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, socket_path: Path, user: str, database: str = "postgres") -> ClusterClient:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        client = cls(reader, writer)
        writer.write(startup_message(PROTOCOL_3, {"user": user, "database": database}))
        await client._until_ready()
        return client

    async def query(self, sql: str, *parameters: str | None) -> list[list[str | None]]:
        """Rows of one statement with text parameters ($1, $2, ...), through the extended protocol."""
        bind = b"\0\0" + struct.pack("!hh", 0, len(parameters))
        for value in parameters:
            bind += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value.encode())) + value.encode()
        bind += struct.pack("!h", 0)
        async with self._lock:
            self._writer.write(
                message(b"P", b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))
                + message(b"B", bind)
                + message(b"E", b"\0" + struct.pack("!i", 0))
                + message(b"S", b"")
            )
            return await self._until_ready()

    async def script(self, sql: str) -> None:
        """Run statements separated by semicolons (simple protocol), stopping at the first error."""
        async with self._lock:
            self._writer.write(message(b"Q", sql.encode() + b"\0"))
            await self._until_ready()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            self._writer.write(message(b"X", b""))
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _until_ready(self) -> list[list[str | None]]:
        rows: list[list[str | None]] = []
        error: BackendError | None = None
        while True:
            kind, body = await read_message(self._reader, 1 << 30)
            if kind == b"Z":
                if error:
                    raise error
                return rows
            if kind == b"E":
                error = error or BackendError(parse_fields(body))
            elif kind == b"R" and body[:4] != b"\0\0\0\0":
                raise BackendError({"M": "the cluster asked the emulator for a password"})
            elif kind == b"D":
                rows.append(_data_row(body))


def _data_row(body: bytes) -> list[str | None]:
    (count,) = struct.unpack("!h", body[:2])
    values: list[str | None] = []
    offset = 2
    for _ in range(count):
        (length,) = struct.unpack("!i", body[offset : offset + 4])
        offset += 4
        if length < 0:
            values.append(None)
        else:
            values.append(body[offset : offset + length].decode())
            offset += length
    return values


# -- flavors ------------------------------------------------------------------------------------


class Flavor:
    """How one emulated server maps a login to a role and decides whether the token may use it."""

    server_name: str
    # Single Server renames its own setting in client messages; None relays client bytes untouched.
    rewrite: Callable[[bytes, bytes], bytes] | None = None

    def role_for(self, user: str) -> str:
        return user

    async def authorize(self, user: str, role: str, claims: dict[str, Any]) -> None:
        raise NotImplementedError


class SingleServer(Flavor):
    """`role@server` user names; members of azure_ad_user log in with a token whose appid is their
    password (checked against the SCRAM verifier); the Entra admin logs in by the token's oid."""

    rewrite = staticmethod(rewrite_aad_setting)

    def __init__(self, server_name: str, admin: str, admin_object_id: str, cluster: ClusterClient) -> None:
        self.server_name = server_name
        self._admin, self._admin_object_id = admin, admin_object_id
        self._cluster = cluster

    def role_for(self, user: str) -> str:
        role, at, server = user.rpartition("@")
        if not at or not role or server.lower() != self.server_name.lower():
            raise Refused(SINGLE_USER_FORM, "user name not in the form role@server", "28000")
        return role

    async def authorize(self, user: str, role: str, claims: dict[str, Any]) -> None:
        if role == self._admin:
            if not _same_id(claims["oid"], self._admin_object_id):
                raise password_failed(user, "the token's oid is not the Entra admin's")
            return
        rows = await self._cluster.query(
            "SELECT rolpassword, pg_catalog.pg_has_role(oid, 'azure_ad_user', 'MEMBER')::text"
            " FROM pg_catalog.pg_authid WHERE rolname = $1",
            role,
        )
        if not rows:
            raise password_failed(user, "no such role")
        verifier, member = rows[0]
        if member != "true":
            raise password_failed(user, "the role is not a member of azure_ad_user")
        # PBKDF2 takes milliseconds and releases the GIL: keep it off the loop.
        if not await asyncio.to_thread(scram.verifies, verifier, str(claims["appid"])):
            raise password_failed(user, "the token's appid is not the role's client id")


class FlexibleServer(Flavor):
    """Plain role names; a role logs in with a token whose oid is the object id registered for it by
    pgaadauth_create_principal_with_oid (kept in pgaadauth.principals), and an app token (a service
    principal's, as every managed identity's is) only for a role registered as a service."""

    def __init__(
        self, server_name: str, cluster: ClusterClient, entra_enabled: Callable[[], bool] | None = None
    ) -> None:
        self.server_name, self._cluster, self._entra_enabled = server_name, cluster, entra_enabled

    async def authorize(self, user: str, role: str, claims: dict[str, Any]) -> None:
        if self._entra_enabled is not None and not self._entra_enabled():
            # Without Entra authentication the server checks PostgreSQL passwords only, and a token is
            # just a wrong one: PostgreSQL's own 28P01 message. Unsourced: neither Microsoft's Entra pages
            # (security-entra-configure, security-entra-concepts) nor an issue we found quotes what such a
            # login gets.
            raise password_failed(user, "Microsoft Entra authentication is disabled on the server")
        rows = await self._cluster.query(
            "SELECT p.objectid, p.principaltype FROM pgaadauth.principals p"
            " JOIN pg_catalog.pg_roles r ON r.oid = p.roleoid WHERE r.rolname = $1",
            role,
        )
        if not rows:
            raise password_failed(user, "no Entra principal is registered for the role")
        object_id, principal_type = rows[0]
        if claims.get("idtyp") == "app" and principal_type != "service":
            raise Refused(APP_TOKEN_FOR_USER.format(role=role), f"an app token for a {principal_type} role")
        if not _same_id(claims["oid"], object_id or ""):
            raise Refused(OID_MISMATCH.format(role=role), "the token's oid is not the role's object id")


def _same_id(left: object, right: str) -> bool:
    return isinstance(left, str) and left.lower() == right.lower()


# -- the gateway --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One emulated server behind the gateway: who it is, its certificate, and its cluster's socket."""

    host_name: str
    flavor: Flavor
    tls: ssl.SSLContext
    backend_socket: Path


class Gateway:
    """Accepts clients on listening sockets, sends each to the server its TLS server name asks for
    (else the listener's own), serves the login, then relays to that server's cluster."""

    def __init__(self, routes: Sequence[Route], authority: Authority, capture: Capture) -> None:
        self._routes, self._authority, self._capture = tuple(routes), authority, capture
        self._session_numbers = itertools.count()
        self._by_name = {route.host_name.lower(): route for route in routes}
        self._by_tls = {id(route.tls): route for route in routes}
        for route in routes:
            route.tls.sni_callback = self._pick_certificate
        self._sessions: set[asyncio.Task[None]] = set()

    def _pick_certificate(self, connection: Any, server_name: str | None, tls: ssl.SSLContext) -> None:
        route = self._by_name.get((server_name or "").lower())
        if route:
            connection.context = route.tls  # the named server's certificate; read back after the handshake

    async def serve(self, listener: socket.socket, default: Route) -> None:
        """Accept until cancelled; then end every session."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        try:
            while True:
                connection, _ = await loop.sock_accept(listener)
                task = asyncio.create_task(self._session(connection, default))
                self._sessions.add(task)
                task.add_done_callback(self._sessions.discard)
        finally:
            for task in list(self._sessions):
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _session(self, connection: socket.socket, default: Route) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        route = default
        session = next(self._session_numbers)

        def record(kind: str, data: bytes) -> None:
            """Into the capture (when on): what this client sent, as it arrived."""
            self._capture.record(
                {"service": "postgres", "server": route.host_name, "session": session, "message": kind,
                 "data": data.decode("latin-1")}
            )  # fmt: skip

        try:
            try:
                client = await asyncio.wait_for(self._negotiate(connection, default), LOGIN_TIMEOUT)
                if client is None:
                    return
                route = self._by_tls[id(client[1].get_extra_info("ssl_object").context)]
                backend = await asyncio.wait_for(self._login(*client, route, record), LOGIN_TIMEOUT)
                if backend is None:
                    return
            except Refused as refused:
                log.info("%s: %s (%s)", route.flavor.server_name, refused.message, refused.reason)
                if client:
                    client[1].write(error_response(refused.sqlstate, refused.message))
                    await client[1].drain()
                return
            await self._relay(*client, *backend, route.flavor, record)
        except (OSError, EOFError, ValueError, asyncio.TimeoutError, ssl.SSLError) as error:
            log.debug("%s: session ended: %s", route.flavor.server_name, type(error).__name__)
        except BackendError as error:
            log.warning("%s: the cluster failed a login check: %s", route.flavor.server_name, error)
        finally:
            if client:
                _close(client[1])
            else:
                connection.close()

    async def _negotiate(
        self, connection: socket.socket, default: Route
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The pre-TLS part: answer SSLRequest (refusing GSS encryption and plain connections) and
        forward CancelRequest; then the TLS handshake. None when there is nothing more to serve."""
        loop = asyncio.get_running_loop()
        while True:
            length, code = struct.unpack("!II", await _receive(loop, connection, 8))
            if length == 16 and code == CANCEL_REQUEST:
                # Before TLS nothing names the server: the key only matches a session on its own cluster.
                key = await _receive(loop, connection, 8)
                await asyncio.gather(*(_forward_cancel(route.backend_socket, key) for route in self._routes))
                return None
            if length == 8 and code == GSSENC_REQUEST:
                await loop.sock_sendall(connection, b"N")
                continue
            if length == 8 and code == SSL_REQUEST:
                await loop.sock_sendall(connection, b"S")
                break
            await loop.sock_sendall(connection, error_response("28000", SSL_REQUIRED))
            return None
        reader = asyncio.StreamReader(limit=_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, connection, ssl=default.tls, ssl_handshake_timeout=LOGIN_TIMEOUT
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        route: Route,
        record: Callable[[str, bytes], None],
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """StartupMessage, cleartext password (the token), checks; returns the backend session,
        started as the role, whose answers (AuthenticationOk onwards) the relay passes on.
        None after a CancelRequest."""
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        if not 8 <= length <= MAX_STARTUP:
            raise ValueError("startup packet length")
        body = await reader.readexactly(length - 4)
        record("startup", body)
        if length == 16 and body[:4] == struct.pack("!I", CANCEL_REQUEST):  # libpq 17+ cancels over TLS too
            await _forward_cancel(route.backend_socket, body[4:])
            return None
        version, parameters = parse_startup(body)
        if version >> 16 != 3:
            raise Refused(f"unsupported frontend protocol {version >> 16}.{version & 0xFFFF}", "protocol", "0A000")
        user = parameters.get("user", "")
        if not user:
            raise Refused("no PostgreSQL user name specified in startup packet", "no user name", "28000")
        flavor = route.flavor
        role = flavor.role_for(user)
        writer.write(message(b"R", struct.pack("!I", 3)))  # AuthenticationCleartextPassword
        await writer.drain()
        kind, body = await read_message(reader, MAX_PASSWORD)
        record("password" if kind == b"p" else "other", kind + body)
        if kind != b"p":
            raise EOFError("no password")
        try:
            claims = self._authority.verify_token(
                body.rstrip(b"\0").decode(errors="replace"), (seed.DATABASE_AUDIENCE,)
            )
        except TokenRejected as rejected:
            if rejected.reason == "expired":
                raise Refused(TOKEN_EXPIRED, "expired token") from None
            if rejected.reason == "wrong_audience":
                raise Refused(WRONG_AUDIENCE, "token for another audience") from None
            raise password_failed(user, f"token rejected: {rejected.reason}") from None
        await flavor.authorize(user, role, claims)
        log.debug("%s: %s logged in (oid %s)", flavor.server_name, role, claims["oid"])
        backend_reader, backend_writer = await asyncio.open_unix_connection(str(route.backend_socket))
        backend_writer.write(startup_message(version, {**parameters, "user": role}))
        return backend_reader, backend_writer

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        backend_reader: asyncio.StreamReader,
        backend_writer: asyncio.StreamWriter,
        flavor: Flavor,
        record: Callable[[str, bytes], None],
    ) -> None:
        rewrite = flavor.rewrite

        def relayed(data: bytes) -> None:
            record("relayed", data)

        upstream = (
            _copy_messages(client_reader, backend_writer, rewrite, relayed)
            if rewrite
            else _copy(client_reader, backend_writer, relayed)
        )
        directions = {asyncio.create_task(upstream), asyncio.create_task(_copy(backend_reader, client_writer))}
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            _close(backend_writer)


async def _forward_cancel(backend_socket: Path, key: bytes) -> None:
    # The client learnt the backend's process id and key from the relayed BackendKeyData.
    _, writer = await asyncio.open_unix_connection(str(backend_socket))
    writer.write(struct.pack("!II", 16, CANCEL_REQUEST) + key)
    await writer.drain()
    _close(writer)


async def _receive(loop: asyncio.AbstractEventLoop, connection: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from a raw socket (before TLS nothing may be read ahead)."""
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(connection, size - len(data))
        if not chunk:
            raise EOFError("client went away")
        data += chunk
    return data


async def _copy(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Callable[[bytes], None] = lambda data: None
) -> None:
    while data := await reader.read(_CHUNK):
        seen(data)
        writer.write(data)
        await writer.drain()


async def _copy_messages(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    rewrite: Callable[[bytes, bytes], bytes],
    seen: Callable[[bytes], None],
) -> None:
    """Relay typed messages, passing Query and Parse bodies through `rewrite`; others stream as they come.
    `seen` gets the client's bytes as they arrived, before any rewrite."""
    while True:
        try:
            header = await reader.readexactly(5)
        except asyncio.IncompleteReadError:
            return
        seen(header)
        kind, (length,) = header[:1], struct.unpack("!I", header[1:])
        if kind in (b"Q", b"P") and 4 <= length <= _MAX_REWRITE:
            body = await reader.readexactly(length - 4)
            seen(body)
            writer.write(message(kind, rewrite(kind, body)))
        else:
            writer.write(header)
            remaining = length - 4
            while remaining > 0:
                chunk = await reader.read(min(remaining, _CHUNK))
                if not chunk:
                    return
                seen(chunk)
                writer.write(chunk)
                remaining -= len(chunk)
        await writer.drain()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
