"""`provision plan|apply|destroy -f MANIFEST.toml`: many bindings from one file, against live state."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from provision.cli import Settings, pass_settings
from provision.cli.options import open_arm
from provision.errors import InvalidInput

if TYPE_CHECKING:
    from provision.manifest import Manifest, Outcome, Report

F = TypeVar("F", bound=Callable[..., Any])


# Resource Manager lets a subscription have 200 writes in its bucket, refilled at 10 a second
# (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling): 25 at
# once stays far below it while a fleet's 4 s machine updates overlap.
DEFAULT_PARALLEL = 25


def _manifest_options(function: F) -> F:
    function = click.option(
        "--fail-fast", is_flag=True, help="Start nothing new once a binding has failed (the rest are skipped)."
    )(function)
    function = click.option(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        show_default=True,
        metavar="N",
        help="Requests in flight at once (identities, machine updates, servers).",
    )(function)
    return click.option("-f", "--file", "path", required=True, metavar="MANIFEST.toml", help="The bindings, in TOML.")(
        function
    )


def _read(path: str, parallel: int) -> Manifest:
    from provision import manifest

    if not 1 <= parallel <= 64:
        raise InvalidInput(f"--parallel {parallel}: expected 1-64")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise InvalidInput(f"-f {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"-f {path}: not UTF-8 text") from None
    return manifest.parse(text, path)


def _progress(dry_run: bool) -> Callable[[Outcome, int, int], None]:
    """A plain line on stderr as each binding is done, readable in a CI log as on a terminal."""

    def show(outcome: Outcome, done: int, total: int) -> None:
        status = outcome.status(dry_run)
        click.echo(f"[{done}/{total}] line {outcome.entry.line} {outcome.entry.binding.label}: {status}", err=True)

    return show


def _run(settings: Settings, path: str, parallel: int, fail_fast: bool, destroy: bool, dry_run: bool) -> None:
    from provision import manifest
    from provision.cloud import get_cloud
    from provision.db import admin
    from provision.db.target import Target

    parsed = _read(path, parallel)
    cloud = get_cloud(settings.cloud)
    # requests keeps 10 connections a host; with more workers urllib3 warns each time it closes a surplus
    # one after use, which is all that happens: not worth a line on stderr per request.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    def connect(server: manifest.Server, database: str) -> Any:
        target = Target(server.host, server.admin_user, server.port, database, server.sslmode, server.sslrootcert)
        return admin.connect(target, cloud)

    run = manifest.destroy if destroy else manifest.apply
    with open_arm(settings) as arm:
        report = run(arm, connect, parsed, manifest.RunOptions(dry_run, parallel, fail_fast, _progress(dry_run)))
    _emit(settings, report)


def _emit(settings: Settings, report: Report) -> None:
    import json

    if settings.output == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(report.render_text())
    sys.exit(int(report.exit_status))


@click.command()
@_manifest_options
@pass_settings
def plan(settings: Settings, path: str, parallel: int, fail_fast: bool) -> None:
    """Compare the file with live state (no state file) and show the difference per binding.

    Exit 0 in sync, 3 when apply would change something, 1 when a binding cannot be planned."""
    _run(settings, path, parallel, fail_fast, destroy=False, dry_run=True)


@click.command()
@_manifest_options
@pass_settings
def apply(settings: Settings, path: str, parallel: int, fail_fast: bool) -> None:
    """Make every binding of the file so: identities, then attachments (one PATCH per machine), then
    roles and grants (one connection per server, a transaction per role).

    \b
    [defaults]
    resource_group = "myResourceGroup"
    server = "myflex"                 # or host = "..." and admin_user = "..."

    \b
    [[binding]]
    identity = "app1-id"
    vm = "app1-vm"                    # or vmss = "..."
    role = "app1"
    member_of = ["app_readers"]
    grants = ["USAGE ON SCHEMA public", "SELECT ON ALL TABLES IN SCHEMA public"]

    A binding that fails does not stop the others (unless --fail-fast); exit 1 if any failed."""
    _run(settings, path, parallel, fail_fast, destroy=False, dry_run=settings.dry_run)


@click.command()
@_manifest_options
@pass_settings
def destroy(settings: Settings, path: str, parallel: int, fail_fast: bool) -> None:
    """Remove what the file declares and nothing else: revoke its grants, drop its roles, detach its
    identities, and delete those provision created (tag provision:created-by=provision)."""
    _run(settings, path, parallel, fail_fast, destroy=True, dry_run=settings.dry_run)
