"""One exception root for everything the tool reports to a user, mapped to exit codes in one place."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    FAILURE = 1  # Azure or Postgres said no; the message says what to do
    BAD_INPUT = 2  # bad usage or bad input; nothing was changed
    PENDING_CHANGES = 3  # --dry-run found changes it would make


class ProvisionError(Exception):
    """An expected failure: shown as one message, never as a traceback."""

    exit_status = ExitStatus.FAILURE

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
