"""Azure Database for PostgreSQL, emulated: a Single Server and a Flexible Server.

Each is its own throwaway cluster (roles are cluster-wide, so they cannot leak between the two),
named NAME.postgres.database.azure.com in its certificate. Both gateway ports serve both servers,
picked by that name (TLS SNI), each port defaulting to its own server. Everything runs on one
event loop in a background thread, which also parents the PostgreSQL servers so that they die with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from provision.emulator import seed
from provision.emulator.arm.postgresql import FlexibleServers
from provision.emulator.entra import GROUP, SERVICE_PRINCIPAL, USER, DirectoryObject
from provision.emulator.errors import EmulatorError
from provision.emulator.keys import Authority
from provision.emulator.postgres.cluster import SUPERUSER, Clusters, Installation
from provision.emulator.postgres.gateway import (
    BackendError,
    ClusterClient,
    Flavor,
    FlexibleServer,
    Gateway,
    Route,
    SingleServer,
)
from provision.emulator.recording import Capture

log = logging.getLogger(__name__)

SINGLE, FLEXIBLE = "single", "flexible"
DIRECTORY_SOCKET = "entra.sock"  # no longer than the cluster's own socket name
_START_TIMEOUT = 60.0
_RESET_TIMEOUT = 60.0


# pgaadauth's words for Entra's object types (pgaadauth_create_principal_with_oid's objectType).
PGAADAUTH_TYPES = {USER: "user", GROUP: "group", SERVICE_PRINCIPAL: "service"}


class Tenant(Protocol):
    """What the database servers need from Microsoft Entra ID: which object an id or a name is."""

    def find(self, object_id: str) -> DirectoryObject | None: ...

    def find_by_name(self, name: str) -> DirectoryObject | None: ...


@dataclass
class _Server:
    """One emulated server on the loop: its cluster connection and what its seed holds."""

    name: str
    socket: Path
    admin: ClusterClient
    seed_roles: str = "{}"  # oid[] literals
    seed_databases: str = "{}"

    async def remember_seed(self) -> None:
        [[roles, databases]] = await self.admin.query(
            "SELECT (SELECT array_agg(oid) FROM pg_catalog.pg_roles)::text,"
            " (SELECT array_agg(oid) FROM pg_catalog.pg_database)::text"
        )
        self.seed_roles, self.seed_databases = roles or "{}", databases or "{}"

    async def reset(self) -> None:
        """Drop the databases and roles created since the seed, with everything they own."""
        roles, databases = self.seed_roles, self.seed_databases
        for (statement,) in await self.admin.query(
            "SELECT pg_catalog.format('DROP DATABASE %I WITH (FORCE)', datname) FROM pg_catalog.pg_database"
            " WHERE oid <> ALL($1::oid[])",
            databases,
        ):
            await self.admin.script(statement or "")
        await self.admin.query(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
            " WHERE usesysid <> ALL($1::oid[])",
            roles,
        )
        names = "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(rolname), ', ') FROM pg_catalog.pg_roles"
        names += " WHERE oid <> ALL($1::oid[])"
        [[doomed]] = await self.admin.query(names, roles)  # identifiers quoted by the server
        if not doomed:
            return
        # DROP OWNED works in the current database (and on shared objects): visit each one.
        for (database,) in await self.admin.query("SELECT datname FROM pg_catalog.pg_database WHERE datallowconn"):
            client = await ClusterClient.connect(self.socket, SUPERUSER, database or "")
            try:
                await client.script(f"DROP OWNED BY {doomed} CASCADE")
            finally:
                await client.close()
        await self.admin.script(f"DROP ROLE {doomed}")


@dataclass(frozen=True)
class ServerNames:
    """The emulated servers' names, as `az postgres ... create --name` would give them."""

    single: str = seed.SINGLE_SERVER
    flexible: str = seed.FLEXIBLE_SERVER

    def of(self, flavor: str) -> str:
        return self.single if flavor == SINGLE else self.flexible


DEFAULT_NAMES = ServerNames()


class Databases:
    """The two emulated servers, served from a background thread until `close()`."""

    def __init__(self, host: str, ports: dict[str, int], ca_path: Path, names: ServerNames) -> None:
        self.host, self.ports, self._ca_path, self.names = host, ports, ca_path, names
        self._lock = threading.Lock()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[_Server] = []
        self._stop: Callable[[], object] | None = None
        self._thread: threading.Thread | None = None

    def exports(self) -> dict[str, str]:
        """Where the servers are. PGHOSTADDR and PGPORT let libpq clients use the servers' Azure host
        names (PROVISION_*_NAME) unchanged: the connection goes to loopback, the certificate is checked
        against the name, and the name picks the server."""
        return {
            "PROVISION_SINGLE_HOST": self.host,
            "PROVISION_SINGLE_PORT": str(self.ports[SINGLE]),
            "PROVISION_SINGLE_NAME": seed.host_name(self.names.single),
            "PROVISION_SINGLE_ADMIN": f"{seed.DATABASE_ADMIN}@{self.names.single}",
            "PROVISION_FLEX_HOST": self.host,
            "PROVISION_FLEX_PORT": str(self.ports[FLEXIBLE]),
            "PROVISION_FLEX_NAME": seed.host_name(self.names.flexible),
            "PROVISION_FLEX_ADMIN": seed.DATABASE_ADMIN,
            "PGHOSTADDR": self.host,
            "PGPORT": str(self.ports[SINGLE]),
            "PGSSLROOTCERT": str(self._ca_path),
        }

    def reset(self) -> None:
        """Back to the seed on both servers: every role (and database) created since is dropped."""
        loop = self._loop
        if not loop:
            raise EmulatorError("the database servers are not running")

        async def reset_all() -> None:
            await asyncio.gather(*(server.reset() for server in self._servers))

        try:
            asyncio.run_coroutine_threadsafe(reset_all(), loop).result(_RESET_TIMEOUT)
        except BackendError as error:
            raise EmulatorError(f"resetting the database servers failed: {error}") from error

    def close(self) -> None:
        """Stop serving, stop the clusters and remove their files; also while still starting."""
        with self._lock:
            self._closing = True
            stop, self._stop, self._loop = self._stop, None, None
        if stop:
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                stop()
        if self._thread:
            self._thread.join()

    def _serving(self, loop: asyncio.AbstractEventLoop, servers: list[_Server], stop: Callable[[], object]) -> bool:
        """Called from the loop once everything is up; False when close() came first."""
        with self._lock:
            if self._closing:
                return False
            self._loop, self._servers, self._stop = loop, servers, stop
            return True


def start(
    state_dir: Path,
    authority: Authority,
    tenant: Tenant,
    host: str,
    single_port: int,
    flexible_port: int,
    installation: Installation,
    names: ServerNames,
    capture: Capture | None = None,
    flexible: FlexibleServers | None = None,
) -> Databases:
    """Start the Single Server and the Flexible Server called `names` on `host` (port 0: a free port),
    both running `installation`'s PostgreSQL. Client messages go into `capture` while it is on. With
    `flexible` (Resource Manager's view of the Flexible server), its authentication settings and Entra
    admins apply to logins; without, Entra is on.

    Returns once both accept logins; their files live under `state_dir` when the server user can
    enter it, else in a temporary directory, and are removed by `close()`."""
    seed.loopback(host)
    listeners = {SINGLE: _listen(host, single_port), FLEXIBLE: _listen(host, flexible_port)}
    ports = {name: sock.getsockname()[1] for name, sock in listeners.items()}
    databases = Databases(host, ports, authority.ca_path, names)
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
    thread = threading.Thread(
        target=_run,
        args=(databases, ready, state_dir, authority, tenant, listeners, installation, capture or Capture(), flexible),
        name="provision-databases",
        daemon=True,
    )
    databases._thread = thread
    thread.start()
    try:
        ready.result(_START_TIMEOUT)
    except BaseException:
        databases.close()
        raise
    return databases


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(512)
    except OSError as error:
        listener.close()
        raise EmulatorError(f"the database gateway cannot listen on {host} port {port}: {error.strerror}") from error
    return listener


def _run(
    databases: Databases,
    ready: concurrent.futures.Future[None],
    state_dir: Path,
    authority: Authority,
    tenant: Tenant,
    listeners: dict[str, socket.socket],
    installation: Installation,
    capture: Capture,
    flexible: FlexibleServers | None,
) -> None:
    """The thread: bring the clusters up, serve until closed, tear down."""
    loop = asyncio.new_event_loop()
    clusters: Clusters | None = None
    try:
        clusters = Clusters((SINGLE, FLEXIBLE), state_dir, installation)
        clusters.start()  # from this thread: the servers die with it
        loop.run_until_complete(_serve(databases, ready, clusters, authority, tenant, listeners, capture, flexible))
    except BaseException as error:
        if not ready.done():
            ready.set_exception(error)
        else:
            log.exception("the database servers stopped")
    finally:
        for listener in listeners.values():
            listener.close()
        if clusters:
            clusters.close()
        loop.close()


async def _serve(
    databases: Databases,
    ready: concurrent.futures.Future[None],
    clusters: Clusters,
    authority: Authority,
    tenant: Tenant,
    listeners: dict[str, socket.socket],
    capture: Capture,
    flexible: FlexibleServers | None,
) -> None:
    names = databases.names
    admins = {name: await ClusterClient.connect(clusters.socket(name), SUPERUSER) for name in (SINGLE, FLEXIBLE)}
    entra_enabled = (lambda: flexible.entra_enabled(names.flexible)) if flexible else None
    flavors: dict[str, Flavor] = {
        SINGLE: SingleServer(names.single, seed.DATABASE_ADMIN, seed.OPERATOR_PRINCIPAL_ID, admins[SINGLE]),
        FLEXIBLE: FlexibleServer(names.flexible, admins[FLEXIBLE], entra_enabled),
    }
    routes = {}
    for name in (SINGLE, FLEXIBLE):
        host_name = seed.host_name(names.of(name))
        tls = authority.server_context(f"postgres-{names.of(name)}", host_name)
        routes[name] = Route(host_name, flavors[name], tls, clusters.socket(name))
    gateway = Gateway(list(routes.values()), authority, capture)
    servers = [_Server(name, clusters.socket(name), admins[name]) for name in (SINGLE, FLEXIBLE)]
    directory_socket = clusters.socket_dir(FLEXIBLE) / DIRECTORY_SOCKET
    directory = await asyncio.start_unix_server(_directory_answerer(tenant), str(directory_socket))
    clusters.share_with_server(directory_socket)
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            await asyncio.gather(
                admins[SINGLE].script(_sql("single.sql")),
                _set_up_flexible(admins[FLEXIBLE], directory_socket, _seed_admins(flexible)),
            )
            for server in servers:
                await server.remember_seed()
        except BackendError as error:
            raise EmulatorError(f"setting up the emulated database servers failed: {error}") from error
        tasks += [asyncio.create_task(gateway.serve(listeners[name], routes[name])) for name in (SINGLE, FLEXIBLE)]
        loop, stopped = asyncio.get_running_loop(), asyncio.Event()
        if flexible:
            flexible.on_admin_change(_admin_changer(admins[FLEXIBLE], loop))
        if databases._serving(loop, servers, lambda: loop.call_soon_threadsafe(stopped.set)):
            ready.set_result(None)
            await stopped.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        directory.close()
        for admin in admins.values():
            await admin.close()


def _seed_admins(flexible: FlexibleServers | None) -> list[tuple[str, str]]:
    """(role name, object id) of each Entra admin the Flexible server starts with: Resource Manager's, or
    without it the operator as `aadadmin`."""
    if flexible is None:
        return [(seed.DATABASE_ADMIN, seed.OPERATOR_PRINCIPAL_ID)]
    return [(admin.principal_name, admin.object_id) for admin in flexible.seed_admins()]


async def _set_up_flexible(cluster: ClusterClient, directory_socket: Path, admins: list[tuple[str, str]]) -> None:
    await cluster.script(_sql("flexible.sql"))
    await cluster.query(
        "INSERT INTO pgaadauth.settings (tenant_id, directory_socket) VALUES ($1, $2)",
        seed.TENANT_ID,
        str(directory_socket),
    )
    for name, object_id in admins:
        await cluster.query(
            "SELECT pg_catalog.pgaadauth_create_principal_with_oid($1, $2, 'service', true, false)", name, object_id
        )


def _admin_changer(cluster: ClusterClient, loop: asyncio.AbstractEventLoop) -> Callable[[bool, str, str, str], None]:
    """What an Entra admin added or removed through Resource Manager does on the server, from Resource
    Manager's thread: the principal's role, created if missing, gets (or loses) the admin's powers, as
    pgaadauth_create_principal_with_oid(..., isadmin) gives them."""

    async def change(added: bool, name: str, object_id: str, principal_type: str) -> None:
        kind = {"User": "user", "Group": "group"}.get(principal_type, "service")
        [[exists]] = await cluster.query(
            "SELECT (EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1))::text", name
        )
        if added and exists != "true":
            await cluster.query(
                "SELECT pg_catalog.pgaadauth_create_principal_with_oid($1, $2, $3, true, false)", name, object_id, kind
            )
            return
        if exists != "true":
            return
        await cluster.query(
            "SELECT pgaadauth.register($1, $2, $3, $4::boolean, false)", name, object_id, kind, str(added)
        )
        template = "ALTER ROLE %I WITH CREATEROLE CREATEDB; GRANT azure_pg_admin TO %I WITH ADMIN OPTION"
        if not added:
            template = "REVOKE azure_pg_admin FROM %I; ALTER ROLE %I WITH NOCREATEROLE NOCREATEDB"
        [[statements]] = await cluster.query("SELECT pg_catalog.format($1, $2::text, $2::text)", template, name)
        await cluster.script(statements or "")

    def apply(added: bool, name: str, object_id: str, principal_type: str) -> None:
        asyncio.run_coroutine_threadsafe(change(added, name, object_id, principal_type), loop).result(_RESET_TIMEOUT)

    return apply


def _directory_answerer(tenant: Tenant) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Answers the cluster's questions to Entra (pgaadauth.ask_directory): a line `oid HEX` or `name HEX`
    (the object id or the name, UTF-8 in hex), answered by a line `OBJECT_ID TYPE` (TYPE in pgaadauth's
    words), empty when the tenant has no such object."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            question, _, value = (await reader.readline()).decode().strip().partition(" ")
            text = bytes.fromhex(value).decode()
            found = tenant.find(text) if question == "oid" else tenant.find_by_name(text)
            writer.write(f"{found.object_id} {PGAADAUTH_TYPES[found.type]}\n".encode() if found else b"\n")
            await writer.drain()
        except (ValueError, OSError) as error:
            log.debug("directory lookup failed: %s", error)
        finally:
            writer.close()

    return answer


def _sql(name: str) -> str:
    return resources.files("provision.emulator.postgres").joinpath(name).read_text()
