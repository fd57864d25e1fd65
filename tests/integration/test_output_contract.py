"""The output contract against the local Azure stack: a CA variable that points nowhere is named (no
traceback), and refused input (a bad --timeout, --dry-run psql) changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import server_options

pytestmark = pytest.mark.integration

SHOW = ("identity", "show", "-g", "myResourceGroup", "-n", "existingIdentity")


@pytest.mark.parametrize("output", ["text", "json"])
def test_requests_ca_bundle_pointing_nowhere_is_named(emulator: Any, tmp_path: Path, output: str) -> None:
    missing = tmp_path / "missing-ca.pem"

    result = emulator.run("-o", output, *SHOW, env={"REQUESTS_CA_BUNDLE": str(missing)})

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    message = f"REQUESTS_CA_BUNDLE names {missing}, which is not a file"
    if output == "json":
        assert json.loads(result.stdout)["error"]["message"] == message
    else:
        assert result.stderr.splitlines()[0] == f"error: {message}"


@pytest.mark.parametrize("value", ["0", "-1", "ten"])
def test_a_bad_timeout_changes_nothing(fresh_emulator: Any, value: str) -> None:
    mark = fresh_emulator.mark()

    result = fresh_emulator.run("--timeout", value, "identity", "create", "-g", "myResourceGroup", "-n", "newIdentity")

    assert result.returncode == 2
    assert result.stderr == f"error: --timeout {value!r}: expected a number of seconds greater than 0\n"
    assert fresh_emulator.requests(since=mark) == []


def test_dry_run_psql_runs_nothing(fresh_emulator: Any) -> None:
    mark = fresh_emulator.mark()

    result = fresh_emulator.run(
        "-o", "json", "--dry-run", "psql", *server_options(fresh_emulator, "flexible"), "--user", "myuser",
        "--", "-c", "CREATE TABLE t ()",
    )  # fmt: skip

    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "InvalidInput"
    assert fresh_emulator.requests(since=mark) == []  # not even a token was asked for
