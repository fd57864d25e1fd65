"""Log in to Azure Database for PostgreSQL with an Entra access token as the password: the VM's
managed identity, or any azure-identity credential. For application code (`provision.connect`,
`provision.pool`, `provision.connect_async`, `provision.async_pool`) and `provision psql`."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, overload

from provision.azure import imds
from provision.cloud import get_cloud
from provision.db.login import TokenLogin
from provision.db.target import Target, open_connection, warn_if_unverified
from provision.errors import DatabaseError, InvalidInput, NotFound

if TYPE_CHECKING:
    import psycopg
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from psycopg.rows import AsyncRowFactory, Row, RowFactory, TupleRow
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

log = logging.getLogger(__name__)

# A pooled connection must be open before its token expires; this is the slack for connecting.
CONNECT_SLACK = 60.0


@overload
def connect(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | None = None,
    single_server: bool | str = False,
    row_factory: RowFactory[Row],
    **kw: Any,
) -> psycopg.Connection[Row]: ...


@overload
def connect(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | None = None,
    single_server: bool | str = False,
    **kw: Any,
) -> psycopg.Connection[TupleRow]: ...


def connect(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | None = None,
    single_server: bool | str = False,
    **kw: Any,
) -> psycopg.Connection[Any]:
    """Open a connection with an access token as the password: from `credential` (any azure-identity
    TokenCredential) or else the VM's managed identity `client_id` (None: its system-assigned identity).

    `user` None takes the role name from the token (`provision.db.login.user_from_claims`);
    `single_server` adds Single Server's `@server` (True: the host's first label, or the server's name).
    Tokens are cached in the process until 5 minutes before they expire. `kw` goes to `psycopg.connect`
    (autocommit=True, row_factory=..., ...). Raises InvalidInput (bad arguments, nothing requested),
    CredentialError (no token) or DatabaseError (with the likely cause, as `provision check` explains it)."""
    _refuse_password(kw)
    login = TokenLogin(host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server)
    import psycopg

    token = login.token()
    target = login.target(token)
    try:
        return open_connection(target, token.token, **kw)
    except psycopg.OperationalError as error:
        raise _connect_failed(error, target, token, cloud) from error


@overload
async def connect_async(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
    row_factory: AsyncRowFactory[Row],
    **kw: Any,
) -> psycopg.AsyncConnection[Row]: ...


@overload
async def connect_async(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
    **kw: Any,
) -> psycopg.AsyncConnection[TupleRow]: ...


async def connect_async(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
    **kw: Any,
) -> psycopg.AsyncConnection[Any]:
    """`connect` for asyncio: a psycopg AsyncConnection. `credential` may also be an AsyncTokenCredential
    (azure.identity.aio), awaited on the loop; a token from IMDS or a sync credential that is not cached
    is fetched in a worker thread, so the event loop never waits on the network. The cache is `connect`'s."""
    _refuse_password(kw)
    login = TokenLogin(
        host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server, asynchronous=True
    )
    import psycopg

    token = await login.token_async()
    target = login.target(token)
    warn_if_unverified(target)
    log.info("connecting to %s (sslmode=%s)", target.describe(), target.sslmode)
    try:
        return await psycopg.AsyncConnection.connect(**{**target.connect_kwargs(token.token), **kw})
    except psycopg.OperationalError as error:
        raise _connect_failed(error, target, token, cloud) from error


def pool(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | None = None,
    single_server: bool | str = False,
    max_lifetime: float = 3600.0,
    **kw: Any,
) -> ConnectionPool[psycopg.Connection[TupleRow]]:
    """A psycopg_pool.ConnectionPool whose every new connection logs in with a token that outlives it.

    Connections are recycled after `max_lifetime` seconds, or half the token's lifetime if that is
    shorter, and each new one takes a token with at least that long to live (from the cache, or a
    fresh one). `kw` goes to ConnectionPool (min_size, max_size, open, name, timeout, configure, ...).
    A token is requested here first, so a missing identity fails now, not in a pool worker."""
    max_lifetime = _pool_max_lifetime(max_lifetime, kw)
    login = TokenLogin(host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server)
    lifetime = _recycle_after(login, login.token(), max_lifetime)

    def connection_kwargs() -> dict[str, Any]:
        return login.connect_kwargs(login.token(min_validity=lifetime + CONNECT_SLACK))

    from psycopg_pool import ConnectionPool

    return ConnectionPool(kwargs=connection_kwargs, max_lifetime=lifetime, **kw)


async def async_pool(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
    max_lifetime: float = 3600.0,
    **kw: Any,
) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
    """`pool` for asyncio: a psycopg_pool.AsyncConnectionPool, unopened unless `open=True` is passed
    (psycopg_pool wants `async with pool` or `await pool.open()` inside the running loop). Tokens come
    as in `connect_async`."""
    max_lifetime = _pool_max_lifetime(max_lifetime, kw)
    login = TokenLogin(
        host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server, asynchronous=True
    )
    lifetime = _recycle_after(login, await login.token_async(), max_lifetime)

    async def connection_kwargs() -> dict[str, Any]:
        return login.connect_kwargs(await login.token_async(min_validity=lifetime + CONNECT_SLACK))

    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(kwargs=connection_kwargs, max_lifetime=lifetime, **{"open": False, **kw})


def _refuse_password(kw: Mapping[str, Any]) -> None:
    if "password" in kw:
        raise InvalidInput("takes no password: the access token is the password")


def _pool_max_lifetime(max_lifetime: float, kw: Mapping[str, Any]) -> float:
    for reserved in ("conninfo", "kwargs"):
        if reserved in kw:
            raise InvalidInput(f"the pool sets {reserved} itself: pass host, user, database and port instead")
    if not isinstance(max_lifetime, (int, float)) or max_lifetime <= 0:
        raise InvalidInput(f"max_lifetime {max_lifetime!r}: expected a number of seconds above 0")
    return float(max_lifetime)


def _recycle_after(login: TokenLogin, token: imds.ManagedIdentityToken, max_lifetime: float) -> float:
    """How long a pooled connection may live: max_lifetime, or half the first token's lifetime if shorter."""
    warn_if_unverified(login.target(token))
    lifetime = min(max_lifetime, token.lifetime / 2)
    log.info("pool for %s recycles connections after %.0f s", login.host, lifetime)
    return lifetime


def _connect_failed(error: Exception, target: Target, token: imds.ManagedIdentityToken, cloud: str) -> DatabaseError:
    # Loaded on failure only: a process that connects fine never pays for the diagnosis rules.
    from provision.db.doctor import diagnose_connection

    diagnosis = diagnose_connection(error, target, imds.decode_claims(token.token), get_cloud(cloud))
    return DatabaseError(f"could not connect to {target.describe()}: {diagnosis.summary}", hint=diagnosis.hint)


# libpq's environment variables for Target.connect_kwargs. The keepalives have none; psql's
# interactive session goes without them.
_PSQL_ENVIRONMENT = {
    "host": "PGHOST",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "gssencmode": "PGGSSENCMODE",
}


def psql_environment(target: Target, password: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for psql: libpq variables for the target, the token in PGPASSWORD."""
    env = dict(environ)
    for name, value in target.connect_kwargs(password).items():
        if name in _PSQL_ENVIRONMENT:
            env[_PSQL_ENVIRONMENT[name]] = str(value)
    return env


def exec_psql(target: Target, client_id: str | None, cloud: str, psql_args: Sequence[str]) -> NoReturn:
    """Replace this process with psql logged in as the managed identity; psql's exit status is ours.

    The token travels in PGPASSWORD, where other users cannot read it (unlike argv)."""
    program = shutil.which("psql")
    if program is None:
        raise NotFound(
            "psql is not on PATH", hint="Install the PostgreSQL client (e.g. apt-get install postgresql-client)."
        )
    warn_if_unverified(target)
    token = imds.access_token(_resource(cloud), client_id)
    log.info("running %s as %s (token in PGPASSWORD)", program, target.describe())
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: signals (Ctrl-C) and the exit status belong to psql.
    os.execve(program, [program, *psql_args], psql_environment(target, token.token, os.environ))  # noqa: S606


def _resource(cloud: str) -> str:
    return get_cloud(cloud).database_resource
