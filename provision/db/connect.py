"""Log in to Azure Database for PostgreSQL with an Entra access token as the password: the VM's
managed identity, or any azure-identity credential. For application code (`provision.connect`,
`provision.pool`, `provision.connect_async`, `provision.async_pool`) and `provision psql`."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from collections.abc import Hashable, Mapping, Sequence
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
    login = _login(host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server, kw)
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
    login = _login(
        host,
        user,
        database,
        client_id,
        cloud,
        port,
        sslmode,
        sslrootcert,
        credential,
        single_server,
        kw,
        asynchronous=True,
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
    login, lifetime = _pool_login(
        host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server, max_lifetime, kw
    )
    token = login.token()
    warn_if_unverified(login.target(token))
    lifetime = min(lifetime, token.lifetime / 2)
    log.info("pool for %s recycles connections after %.0f s", login.host, lifetime)

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
    login, lifetime = _pool_login(
        host,
        user,
        database,
        client_id,
        cloud,
        port,
        sslmode,
        sslrootcert,
        credential,
        single_server,
        max_lifetime,
        kw,
        asynchronous=True,
    )
    token = await login.token_async()
    warn_if_unverified(login.target(token))
    lifetime = min(lifetime, token.lifetime / 2)
    log.info("pool for %s recycles connections after %.0f s", login.host, lifetime)

    async def connection_kwargs() -> dict[str, Any]:
        return login.connect_kwargs(await login.token_async(min_validity=lifetime + CONNECT_SLACK))

    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(kwargs=connection_kwargs, max_lifetime=lifetime, **{"open": False, **kw})


def _login(
    host: str,
    user: str | None,
    database: str,
    client_id: str | None,
    cloud: str,
    port: int,
    sslmode: str,
    sslrootcert: str | None,
    credential: TokenCredential | AsyncTokenCredential | None,
    single_server: bool | str,
    kw: Mapping[str, Any],
    *,
    asynchronous: bool = False,
) -> TokenLogin:
    if "password" in kw:
        raise InvalidInput("takes no password: the access token is the password")
    arguments = (host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server)
    key = _login_key(arguments, asynchronous)
    with _logins_lock:
        login = _logins.get(key) if key is not None else None
    if login is None:
        login = TokenLogin(*arguments, asynchronous)
        if key is not None:
            with _logins_lock:
                if len(_logins) >= _LOGINS_KEPT:
                    del _logins[next(iter(_logins))]
                _logins[key] = login
    return login


# Logins already checked, by their arguments: a process that connects again and again with the same
# arguments checks them (host, CA file, client id, ...) once. Only logins that passed are kept; a
# caller with endlessly new arguments has the oldest forgotten.
_LOGINS_KEPT = 64
_logins: dict[tuple[Hashable, ...], TokenLogin] = {}
_logins_lock = threading.Lock()


def _login_key(arguments: tuple[Any, ...], asynchronous: bool) -> tuple[Hashable, ...] | None:
    """What tells logins apart; None when an argument is no dictionary key (a list...), to be checked
    afresh. Each argument with its type, since 1 == True: single_server=1 is refused where True is not.
    A credential by identity: the login kept keeps it alive, so its id is not reused. The variables
    pick the CA file a login settles on (trust_store_for)."""
    *plain, credential, single_server = arguments
    key = (
        *((type(argument), argument) for argument in (*plain, single_server)),
        id(credential),
        asynchronous,
        os.environ.get("PGSSLROOTCERT"),
        os.environ.get("SSL_CERT_FILE"),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _pool_login(
    host: str,
    user: str | None,
    database: str,
    client_id: str | None,
    cloud: str,
    port: int,
    sslmode: str,
    sslrootcert: str | None,
    credential: TokenCredential | AsyncTokenCredential | None,
    single_server: bool | str,
    max_lifetime: float,
    kw: Mapping[str, Any],
    *,
    asynchronous: bool = False,
) -> tuple[TokenLogin, float]:
    for reserved in ("conninfo", "kwargs"):
        if reserved in kw:
            raise InvalidInput(f"the pool sets {reserved} itself: pass host, user, database and port instead")
    if not isinstance(max_lifetime, (int, float)) or max_lifetime <= 0:
        raise InvalidInput(f"max_lifetime {max_lifetime!r}: expected a number of seconds above 0")
    login = _login(
        host,
        user,
        database,
        client_id,
        cloud,
        port,
        sslmode,
        sslrootcert,
        credential,
        single_server,
        {},
        asynchronous=asynchronous,
    )
    return login, float(max_lifetime)


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
