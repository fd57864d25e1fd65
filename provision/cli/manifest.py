"""`provision plan|apply|destroy -f MANIFEST.toml`: many bindings from one file, against live state."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

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
        help="Machines worked on at once (their identities, update and its wait), and servers.",
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


def live_terminal(isatty: bool, environ: Mapping[str, str], bindings: int, rows: int) -> bool:
    """Whether the progress may rewrite its lines in place: a terminal that is not a CI log, not asked to stay
    plain (NO_COLOR, TERM=dumb), with room for a line per binding (lines scrolled away cannot be rewritten)."""
    plain = "CI" in environ or "NO_COLOR" in environ or environ.get("TERM", "dumb") == "dumb"
    return isatty and not plain and bindings < rows


class BindingLines:
    """Progress on stderr. Live: a line per binding ("line 6  app1  attaching…"), rewritten in place with ANSI
    cursor moves as the binding moves on, and its result at the end. Plain (CI logs, files): one line as each
    binding is done, as a log reads best."""

    def __init__(self, stream: TextIO, live: bool, width: int, dry_run: bool) -> None:
        self._stream, self.live, self._width, self._dry_run = stream, live, width, dry_run
        self._row: dict[int, int] = {}
        self._labels: dict[int, str] = {}

    def begin(self, outcomes: Sequence[Outcome]) -> None:
        if not self.live:
            return
        lines = max(len(str(o.entry.line)) for o in outcomes)
        roles = max(len(o.entry.binding.role) for o in outcomes)
        for row, outcome in enumerate(outcomes):
            self._row[id(outcome)] = row
            self._labels[id(outcome)] = f"line {outcome.entry.line:<{lines}}  {outcome.entry.binding.role:<{roles}}"
            self._stream.write(self._fit(f"{self._labels[id(outcome)]}  waiting") + "\n")
        self._stream.flush()

    def doing(self, outcome: Outcome, what: str) -> None:
        if self.live:
            self._rewrite(outcome, f"{what}…")

    def done(self, outcome: Outcome, count: int, total: int) -> None:
        if self.live:
            self._rewrite(outcome, self._result(outcome))
            return
        b = outcome.entry.binding
        self._stream.write(f"[{count}/{total}] line {outcome.entry.line} {b.label}: {outcome.status(self._dry_run)}\n")
        self._stream.flush()

    def _result(self, outcome: Outcome) -> str:
        status = outcome.status(self._dry_run)
        if outcome.failure is not None:
            return f"failed: {outcome.failure.message}"
        changes = [f"{action.verb} {action.target}" for action in outcome.actions if action.changes]
        word = "done" if status == "changed" else status
        return f"{word} ({', '.join(changes)})" if changes else word

    def _rewrite(self, outcome: Outcome, text: str) -> None:
        up = len(self._row) - self._row[id(outcome)]
        line = self._fit(f"{self._labels[id(outcome)]}  {text}")
        self._stream.write(f"\x1b[{up}A\r\x1b[2K{line}\x1b[{up}B\r")
        self._stream.flush()

    def _fit(self, line: str) -> str:
        """One terminal row: a wrapped line would throw the cursor moves off."""
        return line if len(line) < self._width else line[: max(self._width - 2, 0)] + "…"


def _progress(dry_run: bool, bindings: int) -> BindingLines:
    isatty = sys.stderr.isatty()
    try:
        size = os.get_terminal_size(sys.stderr.fileno()) if isatty else shutil.get_terminal_size()
    except OSError:
        size = shutil.get_terminal_size()
    # With -v the log lines share stderr, and would throw the rewritten lines off.
    logging_on = logging.getLogger("provision").isEnabledFor(logging.INFO)
    live = live_terminal(isatty, os.environ, bindings, size.lines) and not logging_on
    return BindingLines(sys.stderr, live, size.columns, dry_run)


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
        progress = _progress(dry_run, len(parsed.entries))
        report = run(arm, connect, parsed, manifest.RunOptions(dry_run, parallel, fail_fast, progress))
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
    """Make every binding of the file so. Each machine, as soon as a worker is free: its identities,
    then their attachment (one PATCH per machine), then its roles and grants (one connection per
    server, a transaction per role), while other machines are still being updated.

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
    identities (a machine as soon as its roles are gone), and delete those provision created (tag
    provision:created-by=provision)."""
    _run(settings, path, parallel, fail_fast, destroy=True, dry_run=settings.dry_run)
