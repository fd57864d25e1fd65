"""`provision emulator`: the local Azure stack, for tests, the demo and offline pipelines."""

import click

from provision.emulator import seed
from provision.errors import EmulatorError, InvalidInput


@click.group()
def emulator() -> None:
    """The local Azure stack: Resource Manager, the Instance Metadata Service and Azure Database for
    PostgreSQL (Single and Flexible Server), on loopback, so everything runs without Azure."""


@emulator.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="State directory (CA, keys, env.sh, requests.jsonl, database files); kept, and its CA reused, on the"
    " next start; locked while a stack runs in it. Default: a new temporary directory, removed on exit.",
)
@click.option(
    "--port-base",
    type=click.IntRange(0, 65531),
    default=0,
    show_default=True,
    help="0: free ports. N: Resource Manager N, IMDS N+1, Single Server N+2, Flexible Server N+3, Entra sign-in N+4.",
)
@click.option(
    "--operation-seconds",
    type=click.FloatRange(min=0),
    default=4.0,
    show_default=True,
    help="How long a VM or scale set update stays InProgress (real Compute takes about 4 s).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Loopback address to listen on: 127.0.0.1 or ::1. Any other address is refused.",
)
@click.option(
    "--postgres-version",
    type=click.Choice(["15", "16", "17", "18"]),
    help="PostgreSQL major version of both database servers. Default: the newest installed"
    " (`make postgres` installs 16, 17 and 18).",
)
@click.option(
    "--single-name",
    default=seed.SINGLE_SERVER,
    show_default=True,
    help="Single Server name: host NAME.postgres.database.azure.com, logins user@NAME.",
)
@click.option(
    "--flexible-name",
    default=seed.FLEXIBLE_SERVER,
    show_default=True,
    help="Flexible Server name: host NAME.postgres.database.azure.com.",
)
@click.option(
    "--vms",
    type=click.IntRange(0, 10000),
    default=0,
    show_default=True,
    help="Seed N more VMs, vm-1..vm-N, in myResourceGroup (no identities), for fleets of bindings.",
)
@click.option(
    "--flexible-entra",
    type=click.Choice(["enabled", "disabled"]),
    default="enabled",
    show_default=True,
    help="Microsoft Entra authentication on the Flexible server at start. enabled: with aadadmin (the"
    " operator) as its Entra admin, ready for the walkthrough. disabled: as Azure creates a server by default,"
    " password authentication only and no Entra admin, for `provision server entra enable` and"
    " `provision server admin add` to prepare.",
)
def start(
    directory: str | None,
    port_base: int,
    operation_seconds: float,
    host: str,
    postgres_version: str | None,
    single_name: str,
    flexible_name: str,
    vms: int,
    flexible_entra: str,
) -> None:
    """Run the local Azure stack in the foreground until SIGTERM or Ctrl-C.

    It prints `export NAME=value` lines for every variable a client needs, writes the same to
    DIR/env.sh, then prints `# ready`. In another shell:

    \b
      . DIR/env.sh
      provision identity create -g myResourceGroup -n myIdentity --vm myVM

    The seed world: subscription $AZURE_SUBSCRIPTION_ID, resource group myResourceGroup, VM myVM with
    a system-assigned identity (the operator, whose tokens IMDS hands out by default) and the
    user-assigned identity existingIdentity, and scale set myScaleSet (Manual upgrade policy).
    Tests drive it through https://.../_emulator/ (reset, faults, settings, requests, capture, machine).

    The database servers answer to their Azure host names too: with the exported PGHOSTADDR and PGPORT,
    `psql -h mydemoserver.postgres.database.azure.com --user myuser@mydemoserver postgres` connects to
    loopback and verifies that name.
    """
    from pathlib import Path

    from provision.emulator import errors, stack
    from provision.emulator.postgres.databases import ServerNames

    with stack.stop_signals() as stopped:
        # The emulator has its own errors (it imports nothing from the tool it judges): said as the tool's.
        try:
            running = stack.start(
                Path(directory) if directory else None,
                port_base,
                operation_seconds,
                host,
                int(postgres_version) if postgres_version else None,
                ServerNames(single_name, flexible_name),
                vms,
                flexible_entra == "enabled",
            )
        except errors.InvalidSetting as error:
            raise InvalidInput(error.message, hint=error.hint) from error
        except errors.EmulatorError as error:
            raise EmulatorError(error.message, hint=error.hint) from error
        try:
            for line in running.export_lines():
                click.echo(line)
            click.echo("# ready")
            while not stopped.wait(1.0):
                pass
        finally:
            running.close()
