"""`provision server`: Microsoft Entra authentication and Entra admins of a flexible server, the
walkthrough's prerequisite ("a server that has Azure AD authentication configured"), made safe to re-run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from provision import validate
from provision.cli import Settings, pass_settings
from provision.cli.options import open_arm, resource_group_option, wait_progress
from provision.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal")


@click.group()
def server() -> None:
    """Azure Database for PostgreSQL flexible servers: Entra authentication and Entra admins.

    Every command reads the server first and writes only what differs, so re-running one changes
    nothing. With --dry-run each write is printed (method, URL, JSON body) and none is made.
    """


def _server_name(value: str) -> str:
    from provision.azure.servers import server_name

    return server_name(value)


def _server_options(function: F) -> F:
    """-g and -n, validated as they are parsed, before anything else runs."""
    function = click.option(
        "-n",
        "--name",
        required=True,
        callback=lambda ctx, param, value: _server_name(value),
        help="Server name: 3-63 letters, digits and hyphens.",
    )(function)
    return resource_group_option("server")(function)


@server.command()
@_server_options
@pass_settings
def show(settings: Settings, resource_group: str, name: str) -> None:
    """Print the server's host name, version, state, authentication settings and Entra admins.

    \b
    Example:
      provision -o json server show -g myResourceGroup -n myflex | jq -r .fullyQualifiedDomainName
    """
    from provision.azure import servers

    with open_arm(settings) as arm:
        result = servers.show(arm.postgres_client(), arm, resource_group, name)
    settings.emit(result)


@server.group()
def entra() -> None:
    """Microsoft Entra authentication of the server."""


@entra.command()
@_server_options
@click.option(
    "--disable-password-auth",
    is_flag=True,
    help="Also turn PostgreSQL password authentication off: only Entra tokens log in then.",
)
@pass_settings
def enable(settings: Settings, resource_group: str, name: str, disable_password_auth: bool) -> None:
    """Turn Microsoft Entra authentication on (PATCH of properties.authConfig), and wait for it.

    Password authentication stays as it is unless --disable-password-auth is given; it is never
    turned back on. Nothing is sent when the server is already as asked.
    """
    from provision.azure import servers

    with open_arm(settings) as arm:
        result = servers.enable_entra(
            arm.postgres_client(),
            arm,
            resource_group,
            name,
            disable_password_auth,
            settings.dry_run,
            wait_progress(settings),
        )
    settings.emit(result)


@server.group()
def admin() -> None:
    """Microsoft Entra admins of the server: they manage the server's Entra roles (provision role)."""


def _principal_options(function: F) -> F:
    for option in reversed(
        (
            click.option("--identity", metavar="NAME", help="A user-assigned managed identity to make an admin."),
            click.option(
                "--identity-resource-group",
                metavar="RG",
                help="Resource group of --identity, when it is not the server's.",
            ),
            click.option("--object-id", metavar="OID", help="Object (principal) id of a user, group or application."),
            click.option("--principal-name", metavar="NAME", help="With --object-id: its name, the login name."),
            click.option("--type", "principal_type", type=click.Choice(PRINCIPAL_TYPES), help="With --object-id."),
            click.option("--me", is_flag=True, help="The principal this command signs in as (from its token)."),
        )
    ):
        function = option(function)
    return function


def _check_principal(
    identity: str | None,
    identity_group: str | None,
    object_id: str | None,
    principal_name: str | None,
    principal_type: str | None,
    me: bool,
    needs_name: bool,
) -> None:
    """Exactly one way to name the principal, complete, before any request."""
    given = [flag for flag, value in (("--identity", identity), ("--object-id", object_id), ("--me", me)) if value]
    if len(given) != 1:
        raise InvalidInput(
            "give one of --identity NAME, --object-id OID or --me" + (f", not {' and '.join(given)}" if given else "")
        )
    if identity_group and not identity:
        raise InvalidInput("--identity-resource-group needs --identity")
    if object_id is None and (principal_name or principal_type):
        raise InvalidInput("--principal-name and --type go with --object-id")
    if identity:
        validate.identity_name(identity, "--identity")
    if identity_group:
        validate.resource_group(identity_group, "--identity-resource-group")
    if object_id is not None:
        validate.guid(object_id, "--object-id")
        if needs_name and (not principal_name or not principal_type):
            raise InvalidInput("--object-id needs --principal-name and --type")
        if principal_name is not None:
            validate.role_name(principal_name, "--principal-name")


def _principal(
    arm: Any,
    resource_group: str,
    identity: str | None,
    identity_group: str | None,
    object_id: str | None,
    principal_name: str | None,
    principal_type: str | None,
) -> Any:
    """The admin to add or remove, as named on the command line; --me reads the credential's token."""
    from provision.azure import identities, servers

    if identity:
        found = identities.get_identity(arm, identity_group or resource_group, identity)
        return servers.EntraAdmin(str(found.principal_id).lower(), found.name, "ServicePrincipal", found.tenant_id)
    if object_id:
        return servers.EntraAdmin(validate.guid(object_id, "--object-id"), principal_name or "", principal_type or "")
    return servers.signed_in_admin(arm)


@admin.command()
@_server_options
@_principal_options
@pass_settings
def add(
    settings: Settings,
    resource_group: str,
    name: str,
    identity: str | None,
    identity_resource_group: str | None,
    object_id: str | None,
    principal_name: str | None,
    principal_type: str | None,
    me: bool,
) -> None:
    """Make a principal an Entra admin of the server (PUT administrators/{objectId}), and wait for it.

    \b
    Examples:
      provision server admin add -g myResourceGroup -n myflex --me
      provision server admin add -g myResourceGroup -n myflex --identity myManagedIdentity
      provision server admin add -g myResourceGroup -n myflex --object-id OID --principal-name dba --type User
    """
    _check_principal(identity, identity_resource_group, object_id, principal_name, principal_type, me, True)
    from provision.azure import servers

    with open_arm(settings) as arm:
        wanted = _principal(
            arm, resource_group, identity, identity_resource_group, object_id, principal_name, principal_type
        )
        result = servers.add_admin(
            arm.postgres_client(),
            arm,
            resource_group,
            name,
            wanted,
            settings.dry_run,
            wait_progress(settings),
            any_name=me,
        )
    settings.emit(result)


@admin.command()
@_server_options
@_principal_options
@pass_settings
def remove(
    settings: Settings,
    resource_group: str,
    name: str,
    identity: str | None,
    identity_resource_group: str | None,
    object_id: str | None,
    principal_name: str | None,
    principal_type: str | None,
    me: bool,
) -> None:
    """Remove a principal from the server's Entra admins (DELETE administrators/{objectId}).

    Removing one that is not an admin changes nothing. The last admin of a server with password
    authentication disabled is kept.
    """
    _check_principal(identity, identity_resource_group, object_id, principal_name, principal_type, me, False)
    from provision.azure import servers

    with open_arm(settings) as arm:
        wanted = _principal(
            arm, resource_group, identity, identity_resource_group, object_id, principal_name, principal_type
        )
        result = servers.remove_admin(
            arm.postgres_client(),
            arm,
            resource_group,
            name,
            wanted.object_id,
            settings.dry_run,
            wait_progress(settings),
        )
    settings.emit(result)


@admin.command(name="list")
@_server_options
@pass_settings
def list_admins(settings: Settings, resource_group: str, name: str) -> None:
    """List the server's Entra admins: object id, principal name (the login name), type."""
    from provision.azure import servers

    with open_arm(settings) as arm:
        result = servers.list_admins(arm.postgres_client(), arm, resource_group, name)
    settings.emit(result)
