"""The suites that run pinned third-party tools (az, azure-postgresql-auth) skip where the tool is not installed,
except in CI, where a missing tool is a broken pipeline, not a reason to skip."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import require_installed


def test_a_missing_tool_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    # Both caught, so that a skip turns this test red instead of skipping it.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as stopped:
        require_installed(tmp_path / "venv-az" / "bin" / "az", "the Azure CLI", "az")
    assert stopped.type is pytest.fail.Exception
    assert stopped.match(r"the Azure CLI is missing from .*: CI must install it \(`make az`\)")


def test_a_missing_tool_skips_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"the Azure CLI is not installed in .* \(`make az`"):
        require_installed(tmp_path / "venv-az" / "bin" / "az", "the Azure CLI", "az")


def test_an_installed_tool_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    program = tmp_path / "az"
    program.touch()
    assert require_installed(program, "the Azure CLI", "az") == program
