"""`provision emulator start` as a user runs it: exports, env.sh, fixed ports, loopback only, clean stop."""

from __future__ import annotations

import random
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

START = [sys.executable, "-m", "provision", "emulator", "start"]


def free_port_base() -> int:
    """A port N with N..N+4 free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        probes = [socket.socket() for _ in range(5)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError("no five free ports in a row")


def test_start_prints_exports_writes_env_sh_and_stops_on_sigterm():
    base = free_port_base()
    process = subprocess.Popen(
        [*START, "--port-base", str(base), "--operation-seconds", "0"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            if line.strip() == "# ready":
                break
            lines.append(line.rstrip("\n"))
        exports = dict(shlex.split(line[len("export ") :])[0].split("=", 1) for line in lines)
        directory = Path(exports["PROVISION_EMULATOR_DIR"])
        # env.sh holds what was printed, then the exports that carry a secret (never printed).
        env_sh = (directory / "env.sh").read_text().splitlines()
        assert env_sh[: len(lines)] == lines
        assert [line.partition("=")[0] for line in env_sh[len(lines) :]] == ["export PROVISION_CI_CLIENT_SECRET"]
        assert exports["PROVISION_ARM_ENDPOINT"] == f"https://127.0.0.1:{base}"
        assert exports["AZURE_POD_IDENTITY_AUTHORITY_HOST"] == f"http://127.0.0.1:{base + 1}"
        assert exports["REQUESTS_CA_BUNDLE"] == exports["PGSSLROOTCERT"] == str(directory / "ca.pem")
        assert (exports["PROVISION_SINGLE_PORT"], exports["PROVISION_FLEX_PORT"]) == (str(base + 2), str(base + 3))
        assert exports["PROVISION_AUTHORITY_HOST"] == f"https://127.0.0.1:{base + 4}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        # A temporary state directory goes away with the stack.
        assert not directory.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_other_addresses_than_loopback_are_refused():
    result = subprocess.run([*START, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "loopback only" in result.stderr
    assert result.stdout == ""


def test_a_port_in_use_is_a_clean_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*START, "--dir", str(tmp_path), "--port-base", str(port)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert result.stderr.startswith("error: the local Azure stack could not start")
    assert "Traceback" not in result.stderr


def test_run_merges_the_emulator_environment_with_extra_variables(emulator):
    # The emulator's AZURE_SUBSCRIPTION_ID passes the root's validation; an override replaces it.
    passes = emulator.run("emulator", "start", "--host", "0.0.0.0")
    assert (passes.returncode, "loopback only" in passes.stderr) == (2, True)
    overridden = emulator.run("emulator", "start", "--host", "0.0.0.0", env={"AZURE_SUBSCRIPTION_ID": "not-a-guid"})
    assert (overridden.returncode, "--subscription" in overridden.stderr) == (2, True)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--single-name", "My_Server"], "--single-name 'My_Server': a server name is 3-63 lowercase letters"),
        (["--flexible-name", "-flex"], "--flexible-name '-flex': a server name is 3-63 lowercase letters"),
        (["--single-name", "ab"], "--single-name 'ab': a server name is 3-63"),
        (["--single-name", "same", "--flexible-name", "same"], "are both 'same': each server needs its own"),
        (["--postgres-version", "14"], "Invalid value for '--postgres-version': '14' is not one of '15', '16'"),
    ],
)
def test_bad_server_names_and_versions_are_refused_before_anything_starts(tmp_path, args, said):
    state = tmp_path / "state"
    result = subprocess.run([*START, "--dir", str(state), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert result.stdout == ""
    assert not state.exists()  # no CA, no keys, no cluster


@pytest.mark.slow
def test_servers_named_at_start_carry_their_names_in_logins_and_certificates(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # the postgres user enters it
    argv = [*START, "--dir", str(state), "--single-name", "contoso-pg", "--flexible-name", "contoso-flex"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        exports = {}
        for line in process.stdout:
            if line.strip() == "# ready":
                break
            name, _, value = line[len("export ") :].rstrip("\n").partition("=")
            exports[name] = shlex.split(value)[0]
        assert exports["PROVISION_SINGLE_NAME"] == "contoso-pg.postgres.database.azure.com"
        assert exports["PROVISION_FLEX_NAME"] == "contoso-flex.postgres.database.azure.com"
        assert exports["PROVISION_SINGLE_ADMIN"] == "aadadmin@contoso-pg"
        env = {**exports, "PATH": "/usr/bin:/bin", "PGSSLMODE": "verify-full", "PGCONNECT_TIMEOUT": "10"}
        token = subprocess.run(
            [sys.executable, "-m", "provision", "token"], env=env, capture_output=True, text=True, timeout=60
        )
        assert token.returncode == 0, token.stderr
        env["PGPASSWORD"] = token.stdout.strip()
        for user in ("aadadmin@contoso-pg", "aadadmin@mydemoserver"):
            done = subprocess.run(
                ["psql", "-X", "-At", "-h", exports["PROVISION_SINGLE_NAME"], "-U", user, "postgres", "-c", "SELECT 1"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if user == "aadadmin@contoso-pg":
                assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
            else:
                assert "The Username should be in <username@hostname> format" in done.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
