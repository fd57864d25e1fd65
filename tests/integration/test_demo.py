"""`make demo` keeps working: the server prepared, the walkthrough end to end, and nothing left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_walkthrough_and_cleans_up() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="provision-demo-test-"))
    scratch.chmod(0o755)  # the emulator's PostgreSQL runs as the postgres user and must enter it
    env = {**os.environ, "TMPDIR": str(scratch), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        done = subprocess.run(
            [str(ROOT / "scripts" / "demo")], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        for step in (
            # The Flexible server starts as Azure creates one by default, and the demo prepares it.
            "$ provision server show -g myResourceGroup -n myflex",
            "activeDirectoryAuth=Disabled, passwordAuth=Enabled",
            "$ provision server entra enable -g myResourceGroup -n myflex",
            "update: server myflex (Microsoft Entra authentication is off)",
            "$ provision server admin add -g myResourceGroup -n myflex --object-id ",
            "create: Entra admin aadadmin (",
            "$ provision identity create -g myResourceGroup -n myManagedIdentity --vm myVM",
            "userAssignedIdentities=existingIdentity, myManagedIdentity",
            "flavor      single",
            "flavor      flexible",
            "$ export PGPASSWORD=$(provision token --client-id ",
            "$ psql -h mydemoserver.postgres.database.azure.com --user myuser@mydemoserver postgres"
            " -c 'SELECT version()'",
            "$ provision check --host myflex.postgres.database.azure.com --sslmode verify-full --user myuser",
        ):
            assert step in out
        assert out.count("Connected!") == 2
        assert out.rstrip().splitlines()[-1].startswith("Postgres version: PostgreSQL ")
        assert "eyJ" not in out + done.stderr  # no token is ever shown
        assert list(scratch.iterdir()) == []  # the emulator's state is gone
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
