"""`provision role`: the walkthrough's "Creating a PostgreSQL user for your Managed Identity", made safe
to re-run, on Single and Flexible Server."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision import validate
from provision.cli import Settings, pass_settings
from provision.cli.options import AdminLogin, admin_options
from provision.errors import InvalidInput

if TYPE_CHECKING:
    from provision.db.roles import IdentityIds
    from provision.plan import Result

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def role() -> None:
    """The PostgreSQL role a managed identity logs in as.

    Connects as the server's Microsoft Entra administrator: the password is an access token for the
    cloud's database resource from the Azure credential chain (az login, environment service
    principal, workload identity, managed identity), or PGPASSWORD when it is set. With --server NAME -g RG
    instead of --host and --admin-user, the host, the flavor and the admin's login name come from the
    flexible server in Resource Manager and the principal signed in there.

    Single Server maps a role to the identity's client id, Flexible Server to its object (principal)
    id; --flavor auto tells them apart with one query. Each command is one transaction, serialised
    per role name, so concurrent pipelines creating the same role all succeed, once. Re-running
    changes nothing; --dry-run prints the exact SQL and runs none of it.
    """


def _server_group_option(function: F) -> F:
    """-g for the commands that name no identity: --server's resource group, and nothing else."""

    @functools.wraps(function)
    def without_group(*args: Any, admin: AdminLogin, resource_group: str | None, **kw: Any) -> Any:
        if resource_group is not None and admin.named is None:
            raise InvalidInput("-g/--resource-group goes with --server")
        return function(*args, admin=admin, **kw)

    wrapped: Any = without_group
    return click.option("-g", "--resource-group", metavar="RG", help="Resource group of --server.")(wrapped)


def _name_option(function: F) -> F:
    return click.option(
        "--name",
        required=True,
        metavar="ROLE",
        help="Role name the identity logs in as: up to 63 bytes, always quoted; no leading or trailing whitespace,"
        " no invisible characters. Names Azure or PostgreSQL reserve (azure_*, pg_*, public) are refused.",
    )(function)


def _identity_lookup(
    settings: Settings,
    client_id: str | None,
    object_id: str | None,
    identity_id: str | None,
    identity_name: str | None,
    resource_group: str | None,
    server_named: bool,
) -> Callable[[], IdentityIds] | None:
    """Validate how the identity was given; a lookup in Resource Manager to run once every input is valid,
    or None when the ids were given directly."""
    ways = [bool(client_id or object_id), bool(identity_id), bool(identity_name)]
    if sum(ways) > 1:
        raise InvalidInput(
            "give the identity one way: --client-id and/or --object-id, or --identity-id, or --identity with -g"
        )
    if not any(ways):
        raise InvalidInput(
            "which identity? Give --client-id (Single Server), --object-id (Flexible Server),"
            " --identity-id ARM_ID or --identity NAME -g RG"
        )
    if resource_group is not None and not identity_name and not server_named:
        raise InvalidInput("-g/--resource-group goes with --identity or --server")
    subscription: str | None
    if identity_id:
        parsed = validate.identity_id(identity_id)
        subscription, group, name = parsed.subscription, parsed.resource_group, parsed.name
    elif identity_name:
        if resource_group is None:
            raise InvalidInput("--identity needs -g/--resource-group")
        group = validate.resource_group(resource_group)
        name = validate.identity_name(identity_name, "--identity")
        subscription = settings.subscription
    else:
        return None
    from provision.azure.arm import Arm

    arm = Arm.from_options(subscription, settings.cloud, settings.arm_endpoint)

    def lookup() -> IdentityIds:
        from provision.azure.identities import get_identity
        from provision.db.roles import IdentityIds

        found = get_identity(arm, group, name)
        return IdentityIds(client_id=found.client_id, object_id=found.principal_id)

    return lookup


def _emit(settings: Settings, result: Result) -> None:
    if settings.output == "text":
        # The statements show under each action in a dry run, and with -v as they run.
        result.fields.pop("statements", None)
    settings.emit(result)


@role.command()
@admin_options
@_name_option
@click.option("--client-id", metavar="ID", help="The identity's client (application) id: what Single Server needs.")
@click.option("--object-id", metavar="ID", help="The identity's object (principal) id: what Flexible Server needs.")
@click.option(
    "--identity-id",
    metavar="ARM_ID",
    help="Resource id of a user-assigned identity; both ids are read from Resource Manager.",
)
@click.option(
    "--identity",
    "identity_name",
    metavar="NAME",
    help="Name of a user-assigned identity (with -g); both ids are read from Resource Manager.",
)
@click.option("-g", "--resource-group", metavar="RG", help="Resource group of --identity, and of --server.")
@click.option(
    "--member-of",
    multiple=True,
    metavar="ROLE",
    help="Existing group role to make this role a member of; repeatable. Memberships already there are kept."
    " Refused: roles that can log in, have SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS (or"
    " reach one that does), Azure's administrator roles, and PostgreSQL's predefined pg_* roles unless"
    " --allow-predefined names them.",
)
@click.option(
    "--allow-predefined",
    multiple=True,
    metavar="ROLE",
    help="A predefined pg_* role given in --member-of that may be granted (e.g. pg_monitor); repeatable."
    " Never pg_execute_server_program, pg_read_server_files or pg_write_server_files.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="When the role is mapped to another identity, drop it and create it again for this one (its grants"
    " and memberships go with it).",
)
@pass_settings
def create(
    settings: Settings,
    admin: AdminLogin,
    name: str,
    client_id: str | None,
    object_id: str | None,
    identity_id: str | None,
    identity_name: str | None,
    resource_group: str | None,
    member_of: tuple[str, ...],
    allow_predefined: tuple[str, ...],
    replace: bool,
) -> None:
    """Create the role a managed identity logs in as, or confirm it is there.

    \b
    Single Server:   SET aad_validate_oids_in_tenant = off;
                     CREATE ROLE "ROLE" WITH LOGIN PASSWORD 'CLIENT_ID' IN ROLE azure_ad_user;
    Flexible Server: SELECT * FROM pgaadauth_create_principal_with_oid('ROLE', 'OBJECT_ID', 'service',
                     false, false);
    then GRANT CONNECT ON DATABASE (--database) and the --member-of memberships; nothing more.

    A role already mapped to the same identity is left alone (exit 0). One mapped to another identity
    is refused (exit 1) unless --replace; a role of that name that is not a Microsoft Entra role is
    always refused. Single Server keeps the client id only as a password verifier, which the Azure
    administrator cannot read, so provision also records it in the role's comment and compares that on
    re-runs; a role made by hand (no record) is reported as unverified, with a warning.

    \b
    Examples:
      provision role create --host mydemoserver.postgres.database.azure.com \\
          --admin-user aadadmin@mydemoserver --name myuser --client-id CLIENT_ID
      provision role create --host myflex.postgres.database.azure.com --admin-user aadadmin \\
          --name myuser --identity myManagedIdentity -g myResourceGroup --member-of app_readers
      provision role create --server myflex -g myResourceGroup --name myuser --identity myManagedIdentity
    """
    from provision.db import roles

    request = roles.RoleRequest(name, roles.IdentityIds(client_id, object_id), member_of, replace, allow_predefined)
    roles.refuse_admin_name(name, admin.user, admin.flavor)
    lookup = _identity_lookup(
        settings, client_id, object_id, identity_id, identity_name, resource_group, admin.named is not None
    )
    flavor = admin.flavor
    if lookup is None and flavor != "auto":
        roles.require_ids(flavor, request.identity)
    admin.check()  # before the Resource Manager reads: nothing is requested while any input is bad
    if admin.named is not None:  # the first request: every input is valid by now
        admin = admin.resolved_with(settings)
        roles.refuse_admin_name(name, admin.user, admin.flavor)
    if lookup is not None:
        request = dataclasses.replace(request, identity=lookup())
        if flavor != "auto":
            roles.require_ids(flavor, request.identity)
    _emit(
        settings,
        admin.run(settings, lambda connection: roles.create_role(connection, flavor, request, settings.dry_run)),
    )


@role.command()
@admin_options
@_server_group_option
@_name_option
@click.option(
    "--force",
    is_flag=True,
    help="When the role owns objects, give them to the administrator (REASSIGN OWNED) and drop the role anyway.",
)
@pass_settings
def drop(
    settings: Settings,
    admin: AdminLogin,
    name: str,
    force: bool,
) -> None:
    """Drop a managed identity's role.

    Only Microsoft Entra roles are dropped. A role that owns objects is refused, with the objects
    listed, unless --force. Its privileges in the connected database go with it; a role that owns
    objects or holds privileges in other databases is refused until those are dealt with there.
    A role that does not exist is fine (exit 0).
    """
    from provision.db import roles

    validate.role_name(name)
    _emit(
        settings,
        admin.run(
            settings, lambda connection: roles.drop_role(connection, admin.flavor, name, force, settings.dry_run)
        ),
    )


@role.command()
@admin_options
@_server_group_option
@_name_option
@pass_settings
def show(
    settings: Settings,
    admin: AdminLogin,
    name: str,
) -> None:
    """Show one role: whether it is a Microsoft Entra role, its object id (Flexible Server), memberships,
    CONNECT on the database and how many objects it owns. Exit 1 when it does not exist.

    Single Server keeps the client id only as a password verifier, so it cannot be shown.
    """
    from provision.db import roles

    validate.role_name(name)
    _emit(settings, admin.run(settings, lambda connection: roles.show_role(connection, admin.flavor, name)))


@role.command(name="list")
@admin_options
@_server_group_option
@pass_settings
def list_(
    settings: Settings,
    admin: AdminLogin,
) -> None:
    """List every Microsoft Entra principal: pgaadauth_list_principals(false) on Flexible Server, the
    members of azure_ad_user on Single Server."""
    from provision.db import roles

    result = admin.run(settings, lambda connection: roles.list_roles(connection, admin.flavor))
    if settings.output == "json":
        settings.emit(result)
    principals = result.fields["principals"]
    click.echo(f"{result.fields['flavor']} server ({result.fields['detectedBy']}): {len(principals)} principals")
    if principals:
        columns = list(principals[0])
        widths = {column: max(len(column), *(len(_cell(row[column])) for row in principals)) for column in columns}
        click.echo("  ".join(column.ljust(widths[column]) for column in columns).rstrip())
        for row in principals:
            click.echo("  ".join(_cell(row[column]).ljust(widths[column]) for column in columns).rstrip())


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
