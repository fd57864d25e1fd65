"""Option groups and helpers shared by several commands."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision import validate
from provision.cli import Settings
from provision.errors import InvalidInput

if TYPE_CHECKING:
    import psycopg

    from provision.azure.arm import Arm
    from provision.azure.machines import Machine
    from provision.db.target import Target
    from provision.plan import Result

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


def resource_group_option(what: str) -> Callable[[F], F]:
    """-g/--resource-group, required and validated as it is parsed, before anything else runs."""
    return click.option(
        "-g",
        "--resource-group",
        required=True,
        callback=lambda ctx, param, value: validate.resource_group(value),
        help=f"Resource group of the {what}.",
    )


def open_arm(settings: Settings) -> Arm:
    """Resource Manager, as the global options point to it."""
    from provision.azure.arm import Arm

    return Arm.from_options(settings.subscription, settings.cloud, settings.arm_endpoint, settings.arm_audience)


def wait_progress(settings: Settings) -> Callable[[float], None] | None:
    """Progress on stderr while a long-running operation runs, only when a person is watching."""
    if not sys.stderr.isatty() or settings.output == "json":
        return None
    return lambda delay: click.echo(f"  waiting for the update to finish (next check in {delay:.1f} s)", err=True)


def machine_of(
    vm: str | None, vmss: str | None, group: str | None, resource_group: str, required: bool
) -> Machine | None:
    """The VM or scale set named by --vm/--vmss/--vm-resource-group, validated (None: not given)."""
    from provision.azure.machines import Machine

    if vm and vmss:
        raise InvalidInput("--vm and --vmss: give one of them, not both")
    if not vm and not vmss:
        if required:
            raise InvalidInput("--vm or --vmss is required")
        if group:
            raise InvalidInput("--vm-resource-group needs --vm or --vmss")
        return None
    option, name = ("--vm", vm) if vm else ("--vmss", vmss)
    assert name is not None
    group = validate.resource_group(group, "--vm-resource-group") if group else resource_group
    return Machine("vm" if vm else "vmss", group, validate.machine_name(name, option))


@dataclass(frozen=True)
class AdminLogin:
    """How to reach the server as its Entra administrator, as given on the command line."""

    server: Server
    user: str
    client_id: str | None
    flavor: str

    def validated(self) -> tuple[Target, str | None]:
        """The connection target and the admin's client id, or InvalidInput."""
        if self.flavor == "single" and self.user:  # with --flavor auto the server's answer tells, after connecting
            validate.single_server_user(self.user, "--admin-user")
        target = self.server.target(self.user, "--admin-user")
        return target, validate.optional_guid(self.client_id, "--admin-client-id")

    def run(self, settings: Settings, command: Callable[[psycopg.Connection], Result]) -> Result:
        """Connect as the administrator and run `command` on the connection."""
        from provision.cloud import get_cloud
        from provision.db import admin

        target, client_id = self.validated()
        with admin.connect(target, get_cloud(settings.cloud), client_id) as connection:
            return command(connection)


def admin_options(function: F) -> F:
    """The server options, --admin-user, --admin-client-id and --flavor, handed over as one `admin`."""

    @functools.wraps(function)
    def with_admin(
        *args: Any, server: Server, admin_user: str, admin_client_id: str | None, flavor: str, **kw: Any
    ) -> Any:
        return function(*args, admin=AdminLogin(server, admin_user, admin_client_id, flavor), **kw)

    wrapped: Any = with_admin
    wrapped = click.option(
        "--flavor",
        type=click.Choice(["auto", "single", "flexible"]),
        default="auto",
        show_default=True,
        help="Server flavor. auto: Flexible Server has pgaadauth_create_principal_with_oid, Single Server has"
        " the role azure_ad_user.",
    )(wrapped)
    wrapped = click.option(
        "--admin-client-id",
        metavar="ID",
        help="Client id of the managed identity to sign in as administrator with (default: the credential"
        " chain's choice). Not used when PGPASSWORD is set.",
    )(wrapped)
    wrapped = click.option(
        "--admin-user",
        envvar="PGUSER",
        required=True,
        metavar="USER",
        help="The server's Microsoft Entra administrator; Single Server: name@servername. [env: PGUSER]",
    )(wrapped)
    return postgres_options(wrapped)
