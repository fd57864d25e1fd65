"""A second `provision emulator start --dir D` while a stack runs in D refuses at once, names the running
stack's pid, and touches nothing: the first stack keeps its files, its env.sh and its gateway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import admin_options

pytestmark = pytest.mark.integration


def tree(directory: Path) -> set[str]:
    """Every path under the directory, relative to it."""
    return {str(path.relative_to(directory)) for path in directory.rglob("*")}


def test_a_second_start_on_a_running_stacks_dir_refuses_and_changes_nothing(emulator: Any) -> None:
    directory = emulator.directory
    env_sh = (directory / "env.sh").read_bytes()
    ca = (directory / "ca.pem").read_bytes()
    before = tree(directory)

    second = subprocess.run(
        [sys.executable, "-m", "provision", "emulator", "start", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert second.returncode == 1, second.stderr
    assert second.stdout == ""
    assert second.stderr == (
        f"error: {directory.resolve()} is in use by a running local Azure stack (pid {emulator._process.pid}):"
        " stop it, or pick another --dir\n"
    )
    assert (directory / "env.sh").read_bytes() == env_sh
    assert (directory / "ca.pem").read_bytes() == ca
    assert before <= tree(directory)  # nothing removed (the running stack may add its own files)
    # The first stack still serves: Resource Manager and both database servers behind their gateway.
    show = emulator.run("identity", "show", "-g", "myResourceGroup", "-n", "existingIdentity")
    assert show.returncode == 0, show.stderr
    for flavor in ("single", "flexible"):
        listed = emulator.run("role", "list", *admin_options(emulator, flavor))
        assert listed.returncode == 0, listed.stderr


def test_the_lock_is_released_when_the_stack_stops(tmp_path: Path) -> None:
    from provision.emulator import stack

    directory = tmp_path / "state"
    release = stack._lock(directory)
    with pytest.raises(Exception, match=r"in use by a running local Azure stack \(pid \d+\)"):
        stack._lock(directory)
    release()

    stack._lock(directory)()
