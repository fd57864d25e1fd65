"""Option groups shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def postgres_options(function: F) -> F:
    """--host/--port/--database/--sslmode/--sslrootcert, defaulting to libpq's environment variables."""
    options = [
        click.option("--host", envvar="PGHOST", required=True, help="Server host name. [env: PGHOST]"),
        click.option("--port", envvar="PGPORT", default=5432, show_default=True, type=int, help="[env: PGPORT]"),
        click.option(
            "--database", envvar="PGDATABASE", default="postgres", show_default=True, help="[env: PGDATABASE]"
        ),
        click.option(
            "--sslmode",
            envvar="PGSSLMODE",
            default="require",
            show_default=True,
            help="libpq sslmode; never weaker than require unless you ask. [env: PGSSLMODE]",
        ),
        click.option(
            "--sslrootcert",
            envvar="PGSSLROOTCERT",
            type=click.Path(dir_okay=False),
            help="CA certificate to verify the server (with --sslmode verify-full). [env: PGSSLROOTCERT]",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function
