"""Log in to Azure Database for PostgreSQL with the VM's managed identity: the access token is the
password. For application code (`provision.connect`, `provision.pool`) and `provision psql`."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from provision import validate
from provision.azure import imds
from provision.cloud import get_cloud
from provision.db.doctor import diagnose_connection
from provision.db.target import Target, open_connection, warn_if_unverified
from provision.errors import DatabaseError, InvalidInput, NotFound

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

# A pooled connection must be open before its token expires; this is the slack for connecting.
CONNECT_SLACK = 60.0


def connect(
    host: str,
    user: str,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    **kw: Any,
) -> psycopg.Connection[Any]:
    """Open a connection as `user`, with a token of the managed identity `client_id` (None: the VM's
    system-assigned identity) as the password.

    Tokens are cached in the process until 5 minutes before they expire. `kw` goes to
    `psycopg.connect` (autocommit=True, row_factory=..., connect_timeout=...). On Single Server the
    user is `role@servername`. Raises CredentialError (no token) or DatabaseError (with the likely
    cause, as `provision check` would explain it)."""
    import psycopg

    target = Target(host, user, port, database, sslmode, sslrootcert)
    resource, client_id = _resource(cloud), validate.optional_guid(client_id, "--client-id")
    if "password" in kw:
        raise InvalidInput("connect() takes no password: the managed identity's access token is the password")
    token = imds.access_token(resource, client_id)
    try:
        return open_connection(target, token.token, **kw)
    except psycopg.OperationalError as error:
        diagnosis = diagnose_connection(error, target, imds.decode_claims(token.token), get_cloud(cloud))
        raise DatabaseError(
            f"could not connect to {target.describe()}: {diagnosis.summary}", hint=diagnosis.hint
        ) from error


def pool(
    host: str,
    user: str,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    max_lifetime: float = 3600.0,
    **kw: Any,
) -> ConnectionPool[Any]:
    """A psycopg_pool.ConnectionPool whose every new connection logs in with a token that outlives it.

    Connections are recycled after `max_lifetime` seconds, or half the token's lifetime if that is
    shorter, and each new one takes a token with at least that long to live (from the cache, or a
    fresh one from IMDS). `kw` goes to ConnectionPool (min_size, max_size, open, name, timeout,
    configure, ...). A token is requested here first, so a missing identity fails now, not in a
    pool worker."""
    target = Target(host, user, port, database, sslmode, sslrootcert)
    resource, client_id = _resource(cloud), validate.optional_guid(client_id, "--client-id")
    for reserved in ("conninfo", "kwargs"):
        if reserved in kw:
            raise InvalidInput(f"pool() sets {reserved} itself: pass host, user, database and port instead")
    if max_lifetime <= 0:
        raise InvalidInput(f"max_lifetime {max_lifetime!r}: expected a number of seconds above 0")
    lifetime = min(max_lifetime, imds.access_token(resource, client_id).lifetime / 2)
    warn_if_unverified(target)
    log.info("pool for %s recycles connections after %.0f s", target.describe(), lifetime)

    def connection_kwargs() -> dict[str, Any]:
        token = imds.access_token(resource, client_id, min_validity=lifetime + CONNECT_SLACK)
        return target.connect_kwargs(token.token)

    from psycopg_pool import ConnectionPool

    return ConnectionPool(kwargs=connection_kwargs, max_lifetime=lifetime, **kw)


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
