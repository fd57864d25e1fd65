"""Real processes, real signals, servers that never answer: SIGINT and SIGTERM end a command with one
line (or one JSON object) and exit 130/143; --timeout ends a command that waits on a silent
PostgreSQL or Resource Manager, with exit 1 and what it was doing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import writes

pytestmark = pytest.mark.integration

HANG_GUARD = 60  # seconds: only a command that ignores its bounds gets anywhere near this


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(HANG_GUARD)
        yield listener


def port(listener: socket.socket) -> str:
    return str(listener.getsockname()[1])


def role_list(listener: socket.socket, *global_options: str) -> subprocess.Popen[str]:
    """`provision role list` against the silent server, with a password so no token is needed first."""
    return subprocess.Popen(
        [sys.executable, "-m", "provision", *global_options, "role", "list"]
        + ["--host", "127.0.0.1", "--port", port(listener), "--admin-user", "aadadmin"],
        env={**os.environ, "PGPASSWORD": "not-a-real-password"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=HANG_GUARD)
    return process.returncode, stdout, stderr


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_command_with_one_line(silent_server: socket.socket, signum: int, status: int) -> None:
    process = role_list(silent_server)
    connection, _ = silent_server.accept()  # the command is running: it is waiting for the server
    with connection:
        process.send_signal(signum)
        returncode, stdout, stderr = finish(process)

    assert returncode == status
    assert stdout == ""
    assert stderr == f"error: interrupted ({signal.Signals(signum).name})\n"


def test_a_signal_with_json_output_is_one_json_object(silent_server: socket.socket) -> None:
    process = role_list(silent_server, "-o", "json")
    connection, _ = silent_server.accept()
    with connection:
        process.send_signal(signal.SIGTERM)
        returncode, stdout, stderr = finish(process)

    assert returncode == 143 and stderr == ""
    assert json.loads(stdout) == {
        "changed": False,
        "error": {"code": "Interrupted", "message": "interrupted (SIGTERM)", "hint": None},
        "exitStatus": 143,
    }


def test_timeout_ends_a_command_waiting_on_a_silent_database(silent_server: socket.socket) -> None:
    returncode, stdout, stderr = finish(role_list(silent_server, "--timeout", "2"))

    assert returncode == 1 and stdout == ""
    # The steps' own deadline checks may say more precisely what they were doing; the backstop names the command.
    assert stderr.startswith("error: --timeout 2 s ran out while ") and "Traceback" not in stderr


def test_timeout_ends_a_command_waiting_on_a_silent_resource_manager(
    emulator: Any, silent_server: socket.socket
) -> None:
    result = emulator.run(
        "-o", "json", "--timeout", "2", "identity", "show", "-g", "myResourceGroup", "-n", "existingIdentity",
        env={"PROVISION_ARM_ENDPOINT": f"https://127.0.0.1:{port(silent_server)}"},
        timeout=HANG_GUARD,
    )  # fmt: skip

    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "TimedOut"
    assert error["message"].startswith("--timeout 2 s ran out while ")


def test_a_signal_while_a_concurrent_read_hangs_ends_the_command_at_once(fresh_emulator: Any) -> None:
    """identity create reads the VM and the identity at once; Ctrl-C while the identity's read gets no answer
    ends the command without waiting for that read (which would outlast HANG_GUARD)."""
    fresh_emulator.fault("latency", "*/userAssignedIdentities/*", "GET", seconds=2 * HANG_GUARD)
    mark = fresh_emulator.mark()
    process = subprocess.Popen(
        [sys.executable, "-m", "provision", "identity", "create", "-g", "myResourceGroup", "-n", "hangs"]
        + ["--vm", "myVM"],
        env={**os.environ, **fresh_emulator.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not any(r["path"].endswith("/virtualMachines/myVM") for r in fresh_emulator.requests(since=mark)):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    status, _, stderr = finish(process)
    assert status == 130, stderr
    assert writes(fresh_emulator, mark) == []
