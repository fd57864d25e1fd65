"""How a message names the caller's arguments: the command line's options (`--client-id`) while a
command runs, the library's parameters (`client_id=`) otherwise. Messages are written once, with
`argument()`; the CLI switches the naming for the length of a command (`command_line()`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_on_command_line = False


def argument(name: str, value: str | None = None) -> str:
    """The argument `name` (the library's parameter name), with `value` if given: `--client-id ID` on the
    command line, `client_id=ID` from the library."""
    if _on_command_line:
        option = "--" + name.replace("_", "-")
        return option if value is None else f"{option} {value}"
    return f"{name}=" if value is None else f"{name}={value}"


def on_command_line() -> bool:
    return _on_command_line


@contextmanager
def command_line() -> Iterator[None]:
    """Messages name command-line options within the block (one command of the CLI)."""
    global _on_command_line
    previous, _on_command_line = _on_command_line, True
    try:
        yield
    finally:
        _on_command_line = previous
