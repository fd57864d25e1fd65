"""`provision bind` and `provision unbind`: identity, attach, role and grants as one step, and back."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision.cli import Settings, pass_settings
from provision.cli.options import (
    AdminLogin,
    admin_options,
    machine_of,
    open_arm,
    resource_group_option,
    wait_progress,
)

if TYPE_CHECKING:
    from provision.bind import Binding

F = TypeVar("F", bound=Callable[..., Any])


def _binding_options(function: F) -> F:
    """Everything that names the binding, handed to the command as one validated `binding`."""

    @functools.wraps(function)
    def with_binding(
        *args: Any,
        resource_group: str,
        identity: str,
        vm: str | None,
        vmss: str | None,
        vm_resource_group: str | None,
        role: str,
        member_of: tuple[str, ...],
        grant: tuple[str, ...],
        **kw: Any,
    ) -> Any:
        from provision.bind import Binding
        from provision.db.grants import parse_grants

        machine = machine_of(vm, vmss, vm_resource_group, resource_group, True)
        assert machine is not None  # required: machine_of raised otherwise
        admin: AdminLogin = kw["admin"]
        binding = Binding(
            resource_group, identity, machine, role, member_of, parse_grants(grant), admin.server.database
        )
        return function(*args, binding=binding, **kw)

    wrapped: Any = with_binding
    for option in reversed(
        (
            resource_group_option("identity"),
            click.option("--identity", required=True, metavar="NAME", help="User-assigned identity name."),
            click.option("--vm", metavar="NAME", help="VM the identity is attached to. Give --vm or --vmss."),
            click.option("--vmss", metavar="NAME", help="Scale set the identity is attached to."),
            click.option("--vm-resource-group", metavar="RG", help="Resource group of the machine, if not -g."),
            click.option(
                "--server-resource-group",
                metavar="RG",
                help="Resource group of --server, if not -g.",
            ),
            click.option("--role", required=True, metavar="ROLE", help="PostgreSQL role the identity logs in as."),
            click.option("--member-of", multiple=True, metavar="ROLE", help="Group role to join; repeatable."),
            click.option(
                "--grant",
                multiple=True,
                metavar="GRANT",
                help="Privileges on --database; repeatable: 'PRIV[, PRIV]... ON (SCHEMA s | ALL TABLES IN SCHEMA s"
                " | ALL SEQUENCES IN SCHEMA s | TABLE s.t | FUTURE TABLES IN SCHEMA s FOR ROLE owner)'.",
            ),
        )
    ):
        wrapped = option(wrapped)
    return admin_options(wrapped)  # outermost: `admin` is made before the binding


def _connect(settings: Settings, admin: AdminLogin) -> Any:
    """How the binding's steps connect to a database of the server, as its admin (resolved)."""
    from provision.cloud import get_cloud
    from provision.db import admin as admin_db

    target = admin.target()
    cloud = get_cloud(settings.cloud)
    return lambda database: admin_db.connect(dataclasses.replace(target, database=database), cloud, admin.client_id)


@click.command()
@_binding_options
@pass_settings
def bind(settings: Settings, admin: AdminLogin, binding: Binding) -> None:
    """Create the identity, attach it, create its role with the grants: one idempotent step.

    Everything is read and planned first (both sides), so a refusal on the database side leaves
    nothing created in Azure. An identity bind creates is tagged provision:created-by=provision.
    --dry-run shows every write (exit 3); a re-run changes nothing (exit 0).

    \b
    Example:
      provision bind -g myResourceGroup --identity app1-id --vm app1-vm \\
          --server myflex --role app1 \\
          --grant 'USAGE ON SCHEMA app' --grant 'SELECT ON ALL TABLES IN SCHEMA app'
    """
    from provision import bind as bind_

    admin.check()
    with open_arm(settings) as arm:
        admin = admin.resolved(arm)
        result = bind_.bind(
            arm, _connect(settings, admin), admin.flavor, binding, settings.dry_run, wait_progress(settings)
        )
    settings.emit(result)


@click.command()
@_binding_options
@click.option(
    "--delete-identity",
    is_flag=True,
    help="Also delete the identity, only if provision created it (tag provision:created-by=provision).",
)
@pass_settings
def unbind(settings: Settings, admin: AdminLogin, binding: Binding, delete_identity: bool) -> None:
    """Undo bind: revoke the grants, drop the role (only this identity's), detach the identity."""
    from provision import bind as bind_

    admin.check()
    with open_arm(settings) as arm:
        admin = admin.resolved(arm)
        result = bind_.unbind(
            arm,
            _connect(settings, admin),
            admin.flavor,
            binding,
            delete_identity,
            settings.dry_run,
            wait_progress(settings),
        )
    settings.emit(result)
