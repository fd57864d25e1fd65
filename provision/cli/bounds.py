"""The bounds every CLI command runs within, except `provision emulator start` (it runs until stopped,
with signal handlers of its own):

- its time budget (--timeout): the steps draw on `provision.deadline`, and a SIGALRM shortly after the
  deadline ends the command even where a step waits without consulting it;
- SIGINT and SIGTERM raise `Interrupted` in the main thread, so the command ends with a message (and a
  step with a write in flight can say so) instead of silently."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from provision import deadline, naming
from provision.errors import Interrupted, TimedOut

# The steps' own checks come first: they know what they were doing, and which write may have been made.
GRACE = 1.0


@contextlib.contextmanager
def command_bounds(seconds: float, command: Callable[[], str], *, alarm: bool = True) -> Iterator[None]:
    """Start the command's budget and install its signal handlers, and have messages name command-line
    options (`provision.naming`); all end with the block. `command`
    names the command that runs ("provision role list"), for the message when the budget runs out.
    `alarm` False: no SIGALRM backstop, for a command that becomes another program (exec), since an
    interval timer survives execve(2) and would kill that program when the budget ends."""
    deadline.start(seconds)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    def out_of_time(signum: int, frame: Any) -> None:
        raise TimedOut(
            f"--timeout {seconds:g} s ran out while running `{command()}`",
            hint="Raise --timeout (or PROVISION_TIMEOUT) if the operation needs longer.",
        )

    handlers: dict[int, Callable[[int, Any], None]] = {signal.SIGINT: interrupt, signal.SIGTERM: interrupt}
    if alarm:
        handlers[signal.SIGALRM] = out_of_time
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, seconds + GRACE)
    try:
        with naming.command_line():
            yield
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, handler in previous.items():
            signal.signal(number, handler)
        deadline.start(None)  # library code run after the command has no budget, as before it
