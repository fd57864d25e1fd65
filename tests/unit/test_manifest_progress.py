"""The manifest's progress on stderr: live lines rewritten in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from provision.cli.manifest import BindingLines, live_terminal
from provision.errors import NotFound
from provision.manifest import Outcome, parse
from provision.plan import Action, Failure

TEXT = """\
[defaults]
resource_group = "rg"
host = "myflex.postgres.database.azure.com"
admin_user = "aadadmin"

[[binding]]
identity = "app1-id"
vm = "vm-1"
role = "app1"

[[binding]]
identity = "app22-id"
vm = "vm-2"
role = "app22"
"""


def outcomes() -> list[Outcome]:
    return [Outcome(entry) for entry in parse(TEXT, "f.toml").entries]


def first_done(lines: BindingLines) -> Outcome:
    """Both bindings shown, the first attached and done (a role created); the second, still going."""
    first, second = outcomes()
    lines.begin([first, second])
    lines.doing(first, "attaching")
    first.actions.append(Action("create", "role app1", "missing"))
    first.actions.append(Action("noop", "identity app1-id", "exists"))
    lines.done(first, 1, 2)
    return second


def test_on_a_terminal_each_binding_has_a_line_rewritten_in_place() -> None:
    stream = io.StringIO()
    lines = BindingLines(stream, live=True, width=80, dry_run=False)

    second = first_done(lines)
    second.failure = Failure.of(NotFound("vm vm-2 was not found"))
    lines.done(second, 2, 2)

    assert stream.getvalue() == (
        "line 6   app1   waiting\n"
        "line 11  app22  waiting\n"
        "\x1b[2A\r\x1b[2Kline 6   app1   attaching…\x1b[2B\r"
        "\x1b[2A\r\x1b[2Kline 6   app1   done (create role app1)\x1b[2B\r"
        "\x1b[1A\r\x1b[2Kline 11  app22  failed: vm vm-2 was not found\x1b[1B\r"
    )


def test_a_live_line_never_wraps() -> None:
    stream = io.StringIO()
    lines = BindingLines(stream, live=True, width=20, dry_run=True)
    (first, _) = outcomes()
    lines.begin([first])
    lines.doing(first, "reading the machine")
    rewritten = stream.getvalue().split("\x1b[2K")[1].split("\x1b[")[0]
    assert rewritten == "line 6  app1  read…"
    assert len(rewritten) < 20


def test_in_ci_a_plain_line_as_each_binding_is_done_and_nothing_else() -> None:
    stream = io.StringIO()
    lines = BindingLines(stream, live=False, width=80, dry_run=True)

    first_done(lines)

    assert stream.getvalue() == "[1/2] line 6 app1-id -> VM vm-1 -> role app1: would change\n"
    assert "\x1b" not in stream.getvalue()


@pytest.mark.parametrize(
    ("isatty", "environ", "bindings", "rows", "live"),
    [
        (True, {"TERM": "xterm-256color"}, 5, 40, True),
        (False, {"TERM": "xterm-256color"}, 5, 40, False),
        (True, {"TERM": "xterm-256color", "CI": "true"}, 5, 40, False),
        (True, {"TERM": "xterm-256color", "NO_COLOR": ""}, 5, 40, False),
        (True, {"TERM": "dumb"}, 5, 40, False),
        (True, {}, 5, 40, False),
        (True, {"TERM": "xterm"}, 40, 40, False),
    ],
)
def test_lines_are_live_only_on_a_terminal_that_is_not_a_ci_log_and_has_room(
    isatty: bool, environ: dict[str, str], bindings: int, rows: int, live: bool
) -> None:
    assert live_terminal(isatty, environ, bindings, rows) is live


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_lines_stay_plain_while_v_logs_share_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import sys

    from provision.cli.manifest import _progress

    monkeypatch.setattr(sys, "stderr", Terminal())
    for name, value in {"TERM": "xterm", "LINES": "40", "COLUMNS": "100"}.items():
        monkeypatch.setenv(name, value)
    for name in ("CI", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("provision")
    level = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert _progress(dry_run=False, bindings=2).live is True
        logger.setLevel(logging.INFO)
        assert _progress(dry_run=False, bindings=2).live is False
    finally:
        logger.setLevel(level)
