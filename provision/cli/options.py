"""Option groups shared by several commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from provision.db.target import Target

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Server:
    """Where to connect, as given: validated when a command asks for its Target, so that each command
    decides which of its inputs is checked first."""

    host: str
    port: int
    database: str
    sslmode: str
    sslrootcert: str | None

    def target(self, user: str, option: str = "--user") -> Target:
        from provision.db.target import Target
        from provision.errors import InvalidInput

        if not user:
            raise InvalidInput(f"{option}: a user name cannot be empty")
        return Target(self.host, user, self.port, self.database, self.sslmode, self.sslrootcert)


_SERVER_OPTIONS = (
    click.option("--host", envvar="PGHOST", required=True, help="Server host name. [env: PGHOST]"),
    click.option(
        "--port", envvar="PGPORT", default=5432, show_default=True, type=int, help="Server port. [env: PGPORT]"
    ),
    click.option(
        "--database",
        envvar="PGDATABASE",
        default="postgres",
        show_default=True,
        help="Database to connect to. [env: PGDATABASE]",
    ),
    click.option(
        "--sslmode",
        envvar="PGSSLMODE",
        default="verify-full",
        show_default=True,
        help="verify-full checks the server's certificate and host name; require (encrypted, not verified)"
        " and verify-ca (host name not checked) only when asked, with a warning. [env: PGSSLMODE]",
    ),
    click.option(
        "--sslrootcert",
        envvar="PGSSLROOTCERT",
        type=click.Path(dir_okay=False),
        help="CA certificate file to verify the server with. [default: the system's CA bundle] [env: PGSSLROOTCERT]",
    ),
)


def postgres_options(function: F) -> F:
    """--host/--port/--database/--sslmode/--sslrootcert (libpq's environment variables as defaults),
    handed to the command as one `server` argument."""

    @functools.wraps(function)
    def with_server(
        *args: Any, host: str, port: int, database: str, sslmode: str, sslrootcert: str | None, **kw: Any
    ) -> Any:
        return function(*args, server=Server(host, port, database, sslmode, sslrootcert), **kw)

    wrapped: Any = with_server
    for option in reversed(_SERVER_OPTIONS):
        wrapped = option(wrapped)
    return wrapped
