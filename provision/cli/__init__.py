"""The command line: parse, call the library, render. Only click and light modules are imported here;
the Azure SDKs and psycopg load inside the commands, so `--help` stays fast."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from provision.cloud import CLOUD_NAMES, get_cloud
from provision.deadline import DEFAULT_TIMEOUT
from provision.errors import Interrupted, InvalidInput, ProvisionError, unexpected
from provision.plan import Failure, Result

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """The global options, shared by every command through the click context."""

    subscription: str | None
    cloud: str
    arm_endpoint: str | None
    output: str
    dry_run: bool
    arm_audience: str | None = None

    def emit(self, result: Result) -> NoReturn:
        """Print a command's result on stdout (warnings on stderr) and exit with its status."""
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        text = result.render(self.output)
        if text:
            click.echo(text)
        sys.exit(int(result.exit_status))


pass_settings = click.make_pass_decorator(Settings)


class ProvisionGroup(click.Group):
    """Every failure, usage errors and unexpected exceptions included, ends as one Failure: one line
    (and a hint) on stderr, or with -o json one JSON object on stdout; never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _usage_error_in_one_line(ctx, _requested_output(args)):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        output = ctx.params.get("output", "text")
        try:
            try:
                with _usage_error_in_one_line(ctx, output):  # the subcommands parse their options in here
                    return super().invoke(ctx)
            finally:
                ctx.close()  # the command's budget and signal handlers end before its failure is shown
        except Interrupted as error:
            failure = Failure.interrupted(error)
        except ProvisionError as error:
            failure = Failure.of(error)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:
            failure = Failure.of(unexpected(error, os.environ))
        _fail(ctx, failure, output)


def _fail(ctx: click.Context, failure: Failure, output: str) -> NoReturn:
    click.echo(failure.render(output), err=output != "json")
    ctx.exit(failure.exit_status)


@contextlib.contextmanager
def _usage_error_in_one_line(ctx: click.Context, output: str) -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # a bare group: its help is the answer
    except click.UsageError as error:
        command = (error.ctx or ctx).command_path
        message = f"{error.format_message()} (see '{command} --help')"
        _fail(ctx, Failure("UsageError", message, None, error.exit_code), output)


def _requested_output(args: list[str]) -> str:
    """-o/--output as given (else PROVISION_OUTPUT), for a usage error found before the options are parsed."""
    output = os.environ.get("PROVISION_OUTPUT", "text")
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("-o", "--output") and index + 1 < len(args):
            output = args[index + 1]
        elif arg.startswith("--output="):
            output = arg.partition("=")[2]
        elif arg.startswith("-o") and not arg.startswith("--"):
            output = arg[2:]
    return "json" if output == "json" else "text"


def _timeout_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInput(f"--timeout {value!r}: expected a number of seconds greater than 0")
    return seconds


@click.group(cls=ProvisionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--subscription",
    envvar="AZURE_SUBSCRIPTION_ID",
    metavar="ID",
    help="Subscription for Resource Manager calls. [env: AZURE_SUBSCRIPTION_ID]",
)
@click.option(
    "--cloud",
    envvar="PROVISION_CLOUD",
    default="AzureCloud",
    show_default=True,
    metavar="|".join(CLOUD_NAMES),
    help="Azure cloud: picks the Resource Manager URL and the database token resource. [env: PROVISION_CLOUD]",
)
@click.option(
    "--arm-endpoint",
    envvar="PROVISION_ARM_ENDPOINT",
    metavar="URL",
    help="Resource Manager URL instead of the cloud's (Azure Stack Hub, the local emulator)."
    " [env: PROVISION_ARM_ENDPOINT]",
)
@click.option(
    "--arm-audience",
    envvar="PROVISION_ARM_AUDIENCE",
    metavar="URL",
    help="Token audience for --arm-endpoint. Default: the first one the endpoint lists at /metadata/endpoints."
    " [env: PROVISION_ARM_AUDIENCE]",
)
@click.option(
    "-o",
    "--output",
    envvar="PROVISION_OUTPUT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Result format on stdout. [env: PROVISION_OUTPUT]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show every write (Resource Manager request, exact SQL) and make none. Exit 3 if something would change.",
)
@click.option("-v", "--verbose", count=True, help="Log progress on stderr (-vv: also HTTP); secrets are redacted.")
@click.option(
    "--timeout",
    envvar="PROVISION_TIMEOUT",
    default=f"{DEFAULT_TIMEOUT:g}",
    show_default=True,
    metavar="SECONDS",
    help="Bound on the whole command, every wait and retry included (not on `emulator start`)."
    " [env: PROVISION_TIMEOUT]",
)
@click.version_option(package_name="provision")
@click.pass_context
def cli(
    ctx: click.Context,
    subscription: str | None,
    cloud: str,
    arm_endpoint: str | None,
    arm_audience: str | None,
    output: str,
    dry_run: bool,
    verbose: int,
    timeout: str,
) -> None:
    """Connect with a managed identity to Azure Database for PostgreSQL.

    \b
    provision identity create -g RG -n NAME --vm VM   user-assigned identity, attached to a VM
    provision role create --host H --admin-user A --name ROLE --client-id ID
                                                      its role in PostgreSQL
    provision check --host H --user ROLE --client-id ID
                                                      on the VM: log in with a token
    provision emulator start                          the local Azure stack, for offline runs

    Exit status: 0 success, 1 the operation failed, 2 bad input (nothing changed),
    3 --dry-run found pending changes, 130/143 interrupted by SIGINT/SIGTERM.
    With -o json a failure is one JSON object on stdout too.
    """
    from provision import logs, validate

    logs.configure(verbose)
    get_cloud(cloud)
    if subscription is not None:
        subscription = validate.guid(subscription, "--subscription")
    if arm_endpoint is not None:
        arm_endpoint = validate.https_url(arm_endpoint, "--arm-endpoint")
    if arm_audience is not None:
        arm_audience = validate.https_url(arm_audience, "--arm-audience")
    seconds = _timeout_seconds(timeout)
    ctx.obj = Settings(subscription, get_cloud(cloud).name, arm_endpoint, output, dry_run, arm_audience)
    if ctx.invoked_subcommand != "emulator":  # the local Azure stack runs until stopped
        from provision.cli.bounds import command_bounds

        # psql replaces this process: its session is the user's, however long (its token fetch is short).
        psql = ctx.invoked_subcommand == "psql"
        ctx.with_resource(command_bounds(seconds, lambda: click.get_current_context().command_path, alarm=not psql))


def main() -> None:
    # Loading the Azure SDKs creates most of a command's objects, and Python's default thresholds (700, 10, 10)
    # collect them again and again while they load: 0.1-0.4 s of a Resource Manager command. Collected less
    # often, garbage cycles wait a little longer; nothing else changes.
    gc.set_threshold(10_000, 50, 100)
    try:
        cli(prog_name="provision")
    finally:
        # The interpreter's last garbage collection walks every object the Azure SDKs loaded (0.1-0.3 s);
        # frozen objects are skipped. Files and clients are closed by then, and the OS frees the rest.
        gc.freeze()


def _register() -> None:
    from provision.cli.bind import bind, unbind
    from provision.cli.emulator import emulator
    from provision.cli.identity import identity
    from provision.cli.manifest import apply, destroy, plan
    from provision.cli.role import role
    from provision.cli.server import server
    from provision.cli.vm import check, psql, token

    for command in (identity, role, server, token, check, psql, emulator, bind, unbind, plan, apply, destroy):
        cli.add_command(command)


_register()
