"""The emulator's own failures. It imports nothing from the tool it judges (an import contract in
pyproject.toml holds it to that); `provision emulator start` turns these into the tool's errors."""

from __future__ import annotations


class EmulatorError(Exception):
    """The local Azure stack could not start or serve; `hint` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


class InvalidSetting(EmulatorError):
    """An option of the local Azure stack is out of range; nothing was started."""
