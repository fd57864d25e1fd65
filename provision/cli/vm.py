"""On the VM: `provision token`, `provision check` and `provision psql`, with the VM's managed identity.

`token` is the only command that prints an access token."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from provision import validate
from provision.cli import Settings, pass_settings
from provision.cli.options import Server, postgres_options
from provision.errors import ExitStatus, InvalidInput
from provision.plan import Failure, Result

if TYPE_CHECKING:
    from provision.db.doctor import Diagnosis

client_id_option = click.option(
    "--client-id",
    metavar="ID",
    help="Client id of a user-assigned identity attached to this VM. [default: the VM's system-assigned identity]",
)

user_option = click.option(
    "--user", envvar="PGUSER", required=True, help="Role to log in as (Single Server: ROLE@SERVERNAME). [env: PGUSER]"
)


@click.command()
@client_id_option
@click.option("--resource", metavar="URL", help="Audience of the token. [default: the cloud's database resource]")
@pass_settings
def token(settings: Settings, client_id: str | None, resource: str | None) -> None:
    """Print an access token of this VM's managed identity, and nothing else.

    \b
    export PGPASSWORD="$(provision token --client-id ID)"

    With -o json: the token, its expiry (expiresOn, epoch seconds) and its claims
    (aud, appid, oid, tid, exp)."""
    from provision.azure import imds
    from provision.cloud import get_cloud

    client_id = validate.optional_guid(client_id, "--client-id")
    resource = imds.resource_url(resource) if resource is not None else get_cloud(settings.cloud).database_resource
    access = imds.access_token(resource, client_id)
    if settings.output == "json":
        claims = imds.decode_claims(access.token)
        fields = {
            "accessToken": access.token,
            "expiresOn": access.expires_on,
            "resource": resource,
            "clientId": client_id,
            "claims": claims.as_dict() if claims else None,
        }
        settings.emit(Result(fields=fields))
    click.echo(access.token)


@click.command()
@postgres_options
@user_option
@client_id_option
@pass_settings
def check(
    settings: Settings,
    server: Server,
    user: str,
    client_id: str | None,
) -> None:
    """Log in with a token of this VM's managed identity and show the server's version.

    On failure, says which step failed (the token from the metadata service, or the connection) and
    the most likely cause, with its evidence. Exit status 0 only when connected."""
    from provision.cloud import get_cloud
    from provision.db import doctor

    target = server.target(user)
    text = settings.output == "text"
    report = doctor.check(
        target,
        validate.optional_guid(client_id, "--client-id"),
        get_cloud(settings.cloud),
        click.echo if text else _quiet,
    )
    if not text:
        data = Result(fields=report.as_dict()).as_dict()
        if report.diagnosis is not None:  # the failure contract every command keeps: error and exitStatus
            diagnosis = report.diagnosis
            data.update(Failure(diagnosis.cause, diagnosis.summary, diagnosis.hint, int(ExitStatus.FAILURE)).as_dict())
        click.echo(json.dumps(data, indent=2))
    elif report.connected:
        click.echo(f"\nConnected!\n\nPostgres version: {report.server_version}")
    if report.diagnosis is not None:
        if text:
            _render_diagnosis(report.diagnosis)
        sys.exit(int(ExitStatus.FAILURE))


@click.command()
@postgres_options
@user_option
@client_id_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PSQL_ARGS...]")
@pass_settings
def psql(
    settings: Settings,
    server: Server,
    user: str,
    client_id: str | None,
    psql_args: tuple[str, ...],
) -> None:
    """Run psql (from PATH) logged in with a token of this VM's managed identity.

    The token reaches psql in PGPASSWORD, never on its command line; psql verifies the server
    (verify-full, with the CA file of --sslrootcert or the system's bundle) unless --sslmode or
    PGSSLMODE says otherwise. Not with --dry-run: psql would run the SQL.

    Exit status: psql's own once it runs (0 ok, 1 fatal error, 2 connection lost or refused,
    3 a script error with ON_ERROR_STOP); before psql starts, provision's 1 (no token, psql not
    found) or 2 (bad input).

    \b
    provision psql --host H --user ROLE --client-id ID -- -c 'select current_user'"""
    from provision.db.connect import exec_psql

    if settings.dry_run:
        raise InvalidInput("--dry-run: provision psql cannot show what psql would do without running it")

    exec_psql(
        server.target(user),
        validate.optional_guid(client_id, "--client-id"),
        settings.cloud,
        psql_args,
    )


def _quiet(step: str) -> None:
    """Progress is for people: with -o json only the result is printed."""


def _render_diagnosis(diagnosis: Diagnosis) -> None:
    from provision.db.doctor import STEP_NAMES

    lines = [f"error: {STEP_NAMES[diagnosis.step]} failed: {diagnosis.summary}"]
    width = max(len(label) for label in diagnosis.evidence) + 1
    lines += [f"  {(label + ':').ljust(width)} {value}" for label, value in diagnosis.evidence.items()]
    lines.append(f"hint: {diagnosis.hint}")
    click.echo("\n".join(lines), err=True)
