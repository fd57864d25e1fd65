"""`provision identity`: the walkthrough's `az identity create`, `az identity show` and
`az vm identity assign`, made safe to re-run."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision import validate
from provision.cli import Settings, pass_settings
from provision.cli.options import machine_of, open_arm, resource_group_option, wait_progress

if TYPE_CHECKING:
    from provision.azure.machines import Machine

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def identity() -> None:
    """User-assigned managed identities and the VMs or scale sets they are attached to.

    Every command reads the current state first and writes only what differs, so re-running one
    changes nothing. With --dry-run each write is printed (method, URL, JSON body) and none is made.
    """


def _identity_options(function: F) -> F:
    """-g and -n, validated as they are parsed, before anything else runs."""
    function = click.option(
        "-n",
        "--name",
        required=True,
        callback=lambda ctx, param, value: validate.identity_name(value),
        help="Identity name: 3-128 letters, digits, '-' or '_'.",
    )(function)
    return resource_group_option("identity")(function)


def _machine_options(required: bool) -> Callable[[F], F]:
    """--vm/--vmss and --vm-resource-group, handed to the command as one `machine` (None: not given)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def with_machine(*args: Any, vm: str | None, vmss: str | None, vm_resource_group: str | None, **kw: Any) -> Any:
            machine = machine_of(vm, vmss, vm_resource_group, kw["resource_group"], required)
            return function(*args, machine=machine, **kw)

        wrapped: Any = click.option(
            "--vm-resource-group",
            metavar="RG",
            help="Resource group of the VM or scale set, when it is not the identity's.",
        )(with_machine)
        wrapped = click.option("--vmss", metavar="NAME", help="Scale set to attach the identity to.")(wrapped)
        what = "VM to attach the identity to" + ("" if required else " after creating it")
        return click.option("--vm", metavar="NAME", help=f"{what}. Give --vm or --vmss.")(wrapped)

    return decorate


@identity.command()
@_identity_options
@click.option(
    "-l",
    "--location",
    help="Region for a new identity, one the subscription offers. Default: the resource group's region.",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag to set; repeatable. Other tags are kept.")
@_machine_options(required=False)
@pass_settings
def create(
    settings: Settings,
    resource_group: str,
    name: str,
    location: str | None,
    tags: tuple[str, ...],
    machine: Machine | None,
) -> None:
    """Create a user-assigned identity (if missing) and optionally attach it.

    The VM or scale set is read before anything is created, so a typo in its name leaves no orphan
    identity. The identity is attached with one PATCH that keeps the machine's system-assigned
    identity and every user-assigned identity already there, guarded by the machine's etag.

    \b
    Example:
      provision identity create -g myResourceGroup -n myManagedIdentity --vm myVM
    """
    region = validate.location(location) if location is not None else None
    tag_map = validate.tags(tags)
    from provision.azure import flows

    with open_arm(settings) as arm:
        compute = arm.compute_client()
        result = flows.create(
            arm,
            arm.identity_client(),
            compute,
            resource_group,
            name,
            region,
            tag_map,
            machine,
            settings.dry_run,
            wait_progress(settings),
        )
    settings.emit(result)


@identity.command()
@_identity_options
@_machine_options(required=True)
@pass_settings
def assign(
    settings: Settings,
    resource_group: str,
    name: str,
    machine: Machine,
) -> None:
    """Attach an existing identity to a VM or scale set, keeping the identities already there.

    Nothing is sent when it is already attached. A scale set with a Manual upgrade policy gets a
    warning: its instances need an update to receive the identity.
    """
    from provision.azure import flows

    with open_arm(settings) as arm:
        result = flows.assign(
            arm,
            arm.identity_client(),
            arm.compute_client(),
            resource_group,
            name,
            machine,
            settings.dry_run,
            wait_progress(settings),
        )
    settings.emit(result)


@identity.command()
@_identity_options
@_machine_options(required=True)
@pass_settings
def remove(
    settings: Settings,
    resource_group: str,
    name: str,
    machine: Machine,
) -> None:
    """Detach an identity from a VM or scale set; the other identities stay.

    Refused while the machine uses the identity for disk encryption
    (securityProfile.encryptionIdentity).
    """
    from provision.azure import flows

    with open_arm(settings) as arm:
        result = flows.remove(
            arm, arm.compute_client(), resource_group, name, machine, settings.dry_run, wait_progress(settings)
        )
    settings.emit(result)


@identity.command()
@_identity_options
@pass_settings
def delete(settings: Settings, resource_group: str, name: str) -> None:
    """Delete an identity. Deleting one that does not exist changes nothing and succeeds.

    Refused while a VM or scale set uses it for disk encryption (securityProfile.encryptionIdentity).
    Machines it is still attached to are named in a warning: Azure lets them keep a dangling reference,
    and they can no longer get its tokens (run `identity remove` first to detach it cleanly).
    """
    from provision.azure import flows

    with open_arm(settings) as arm:
        result = flows.delete(arm, arm.identity_client(), resource_group, name, settings.dry_run)
    settings.emit(result)


@identity.command()
@_identity_options
@pass_settings
def show(settings: Settings, resource_group: str, name: str) -> None:
    """Print an identity's id, clientId, principalId and tenantId.

    \b
    Example (the walkthrough's `az identity show ... --query clientId`):
      provision -o json identity show -g myResourceGroup -n myManagedIdentity | jq -r .clientId
    """
    from provision.azure import flows

    with open_arm(settings) as arm:
        result = flows.show(arm, arm.identity_client(), resource_group, name)
    settings.emit(result)
