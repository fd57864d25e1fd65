"""The time budget of one command (`--timeout`, env PROVISION_TIMEOUT): every wait, poll, retry and
network timeout draws on what is left of it, so a command ends within its budget however Azure or
PostgreSQL behave.

The CLI sets the budget once (`start`); the steps ask `current()` how long they may still wait.
Library callers (provision.connect, ...) have no budget unless they set one: `current()` then
imposes no bound beyond each call's own timeouts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from provision.errors import TimedOut

DEFAULT_TIMEOUT = 600.0  # seconds: long enough for a slow Azure update, short enough for a CI step
MAX_SINGLE_WAIT = 60.0  # no one Retry-After or backoff sleeps longer than this, whatever Azure asks


class Deadline:
    """`option` names the setting the budget comes from in messages (the CLI's --timeout); None for a
    limit of the library's own, which no caller sets."""

    def __init__(
        self, seconds: float | None, clock: Callable[[], float] = time.monotonic, *, option: str | None = None
    ) -> None:
        self.seconds = seconds  # None: unbounded
        self.option = option
        self._clock = clock
        self._ends = math.inf if seconds is None else clock() + seconds

    @property
    def bounded(self) -> bool:
        return self.seconds is not None

    def remaining(self) -> float:
        return max(0.0, self._ends - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def check(self, doing: str) -> None:
        """TimedOut when the budget is spent; `doing` says what was under way ("waiting for VM myVM")."""
        if self.expired():
            if self.option is None:
                raise TimedOut(f"the time limit of {self.seconds:g} s ran out while {doing}")
            raise TimedOut(
                f"{self.option} {self.seconds:g} s ran out while {doing}",
                hint=f"Raise {self.option} (or PROVISION_TIMEOUT) if the operation needs longer.",
            )

    def cap(self, seconds: float, ceiling: float = MAX_SINGLE_WAIT) -> float:
        """How long one wait or network timeout may last: `seconds`, but never beyond `ceiling` or the budget."""
        return max(0.0, min(seconds, ceiling, self.remaining()))

    def sleep(self, seconds: float, doing: str) -> None:
        """Sleep `seconds` (capped); TimedOut instead when the budget cannot cover the wait."""
        self.check(doing)
        wait = self.cap(seconds)
        time.sleep(wait)
        if wait < min(seconds, MAX_SINGLE_WAIT):
            self.check(doing)


_current = Deadline(None)


def start(seconds: float | None) -> Deadline:
    """Begin the budget of this process's command."""
    global _current
    _current = Deadline(seconds, option="--timeout")
    return _current


def current() -> Deadline:
    return _current
