"""Option groups and helpers shared by several commands."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
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


@dataclasses.dataclass(frozen=True)
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


def postgres_options(function: F, host_required: bool = True) -> F:
    """--host/--port/--database/--sslmode/--sslrootcert (libpq's environment variables as defaults),
    handed to the command as one `server` argument."""

    @functools.wraps(function)
    def with_server(
        *args: Any, host: str | None, port: int, database: str, sslmode: str, sslrootcert: str | None, **kw: Any
    ) -> Any:
        return function(*args, server=Server(host or "", port, database, sslmode, sslrootcert), **kw)

    host = click.option("--host", envvar="PGHOST", required=host_required, help="Server host name. [env: PGHOST]")
    wrapped: Any = with_server
    for option in reversed((host, *_SERVER_OPTIONS)):
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


@dataclasses.dataclass(frozen=True)
class AdminLogin:
    """How to reach the server as its Entra administrator, as given on the command line: --host and
    --admin-user, or --server, whose host, flavor and admin Resource Manager tells (`named`)."""

    server: Server
    user: str
    client_id: str | None
    flavor: str
    named: tuple[str, str] | None = None  # --server: its resource group and name, until resolved

    def check(self) -> None:
        """InvalidInput for any bad input, before the first request."""
        if self.named is not None:
            validate.port(self.server.port)
            validate.sslmode(self.server.sslmode)
            return
        if self.flavor == "single" and self.user:  # with --flavor auto the server's answer tells, after connecting
            validate.single_server_user(self.user, "--admin-user")
        self.target()
        validate.optional_guid(self.client_id, "--admin-client-id")

    def target(self) -> Target:
        assert self.named is None, "resolve --server first"
        return self.server.target(self.user, "--admin-user")

    def resolved(self, arm: Arm) -> AdminLogin:
        """With --server: the host, flavor and the signed-in admin's login name, from one read of the server
        and its Entra admins."""
        if self.named is None:
            return self
        from provision.azure import servers

        login = servers.admin_login(arm.postgres_client(), arm, *self.named)
        return AdminLogin(dataclasses.replace(self.server, host=login.host), login.user, None, login.flavor)

    def resolved_with(self, settings: Settings) -> AdminLogin:
        if self.named is None:
            return self
        with open_arm(settings) as arm:
            return self.resolved(arm)

    def run(self, settings: Settings, command: Callable[[psycopg.Connection], Result]) -> Result:
        """Connect as the administrator and run `command` on the connection."""
        from provision.cloud import get_cloud
        from provision.db import admin

        self.check()
        login = self.resolved_with(settings)
        with admin.connect(login.target(), get_cloud(settings.cloud), login.client_id) as connection:
            return command(connection)


def _named_server(
    name: str | None, group: str | None, group_option: str, host: str | None, user: str | None, admin: AdminLogin
) -> tuple[str, str] | None:
    """--server's resource group and name, or None for --host/--admin-user; InvalidInput for a bad mix.
    `host` and `user` are the values given on the command line (PGHOST and PGUSER yield to --server)."""
    if name is None:
        if not admin.server.host:
            raise click.UsageError("Missing option '--host' (or --server NAME for a flexible server)")
        if not admin.user:
            raise click.UsageError("Missing option '--admin-user' (it goes with --host)")
        return None
    given = [
        flag
        for flag, value in (("--host", host), ("--admin-user", user), ("--admin-client-id", admin.client_id))
        if value
    ]
    if given:
        raise InvalidInput(
            f"--server and {' and '.join(given)}: --server reads the host and the admin from Resource Manager;"
            " give one way or the other"
        )
    if admin.flavor == "single":
        raise InvalidInput(
            "--server names a flexible server; Single Server was retired on 2025-03-28 and has no Resource"
            " Manager name here: give --host and --admin-user NAME@SERVER"
        )
    if group is None:
        raise InvalidInput(f"--server needs {group_option}")
    from provision.azure.servers import server_name

    return validate.resource_group(group, group_option), server_name(name, "--server")


def admin_options(function: F) -> F:
    """The server options, --admin-user, --admin-client-id, --flavor and --server, handed over as one `admin`.
    --server's resource group is --server-resource-group when the command has it, else -g."""

    @functools.wraps(function)
    def with_admin(
        *args: Any,
        server: Server,
        admin_user: str | None,
        admin_client_id: str | None,
        flavor: str,
        server_name: str | None,
        **kw: Any,
    ) -> Any:
        from click.core import ParameterSource

        context = click.get_current_context()
        typed = {p: context.get_parameter_source(p) == ParameterSource.COMMANDLINE for p in ("host", "admin_user")}
        admin = AdminLogin(server, admin_user or "", admin_client_id, flavor)
        if "server_resource_group" in kw:
            given_group = kw.pop("server_resource_group")
            if given_group is not None and server_name is None:
                raise InvalidInput("--server-resource-group goes with --server")
            group, group_option = given_group or kw["resource_group"], "--server-resource-group"
        else:
            group, group_option = kw.get("resource_group"), "-g/--resource-group"
        named = _named_server(
            server_name,
            group,
            group_option,
            server.host if typed["host"] else None,
            admin_user if typed["admin_user"] else None,
            admin,
        )
        if named is not None:
            admin = AdminLogin(dataclasses.replace(server, host=""), "", None, "flexible", named)
        return function(*args, admin=admin, **kw)

    wrapped: Any = with_admin
    wrapped = click.option(
        "--server",
        "server_name",
        metavar="NAME",
        help="A flexible server by its Resource Manager name (with its resource group), instead of --host and"
        " --admin-user: the host is its FQDN, and the admin the principal signed in to Resource Manager, when"
        " it is one of the server's Entra admins.",
    )(wrapped)
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
        metavar="USER",
        help="The server's Microsoft Entra administrator; Single Server: name@servername. [env: PGUSER]",
    )(wrapped)
    return postgres_options(wrapped, host_required=False)
