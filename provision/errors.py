"""One exception root for everything the tool reports to a user, mapped to exit codes in one place."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    FAILURE = 1  # Azure or Postgres said no; the message says what to do
    BAD_INPUT = 2  # bad usage or bad input; nothing was changed
    PENDING_CHANGES = 3  # --dry-run found changes it would make


class ProvisionError(Exception):
    """An expected failure: shown as one message, never as a traceback.

    `code` names the kind of failure for pipelines (`-o json`); `outcome` is "unknown" when a write was
    sent but whether it took effect could not be read (a re-run shows it)."""

    exit_status = ExitStatus.FAILURE
    outcome: str | None = None

    @property
    def code(self) -> str:
        return type(self).__name__

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class InvalidInput(ProvisionError):
    """A value failed validation before anything touched Azure or the database."""

    exit_status = ExitStatus.BAD_INPUT


class NotFound(ProvisionError):
    """A resource the command needs does not exist."""


class Forbidden(ProvisionError):
    """The caller lacks an Azure role or a database privilege."""


class Conflict(ProvisionError):
    """The current state contradicts what was asked (and --replace or --force was not given)."""


class AzureError(ProvisionError):
    """Resource Manager refused or failed an operation."""


class CredentialError(ProvisionError):
    """No access token could be obtained."""


class DatabaseError(ProvisionError):
    """PostgreSQL refused or failed an operation."""


class EmulatorError(ProvisionError):
    """The local Azure stack could not start or serve."""


class OutcomeUnknown(ProvisionError):
    """A write was sent or accepted, but its result could not be read: it may have been made."""

    outcome = "unknown"


class TimedOut(ProvisionError):
    """The command's time budget (--timeout) ran out."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (raised in the main thread by the CLI's signal handlers). A BaseException,
    like KeyboardInterrupt, so no `except Exception` swallows it. A step that had a write in flight sets
    `during` ("updating VM myVM") before re-raising, so the message can say the change may have been made."""

    def __init__(self, signum: int, during: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.during = during

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class BadEnvironment(ProvisionError):
    """An environment variable points at something that is not there (a CA bundle file, ...)."""


class UnexpectedError(ProvisionError):
    """An exception the tool has no message for: still one line, never a traceback."""


# Variables that name a CA certificate file: requests (and so the Azure SDKs), OpenSSL, libpq.
CA_FILE_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PGSSLROOTCERT")


def unexpected(error: Exception, environ: Mapping[str, str]) -> ProvisionError:
    """What to tell the user about an exception that escaped every step. A missing file named by a CA
    variable is the usual cause of an OSError from deep inside requests or ssl: name the variable."""
    if isinstance(error, OSError):
        for name in CA_FILE_VARIABLES:
            path = environ.get(name)
            if path and not os.path.isfile(path):
                return BadEnvironment(
                    f"{name} names {path}, which is not a file",
                    hint=f"Point {name} at a CA certificate file (PEM), or unset it.",
                )
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return UnexpectedError(
        f"unexpected {type(error).__name__}" + (f": {detail}" if detail else ""),
        hint="This is a bug in provision: please report it, with the command that caused it.",
    )
