"""Fixtures that run the local Azure stack: one `provision emulator start` process per test run.

    def test_something(fresh_emulator):          # the seed world, no faults
        mark = fresh_emulator.mark()
        result = fresh_emulator.run("identity", "show", "-g", "myResourceGroup", "-n", "existingIdentity")
        assert [r["method"] for r in fresh_emulator.requests(since=mark, service="arm")] == ["GET"]

Tests that change the world use `fresh_emulator` (or call `emulator.reset()` first).

Suites that must hold on every PostgreSQL major take `postgres_version` (or `versioned_emulator`):
they run once per version named by `--postgres-versions=15,16` (default: every installed one), each
version's emulator started once per session. `emulator` itself runs the oldest of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import queue
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from provision.emulator.postgres import cluster

# VM and scale set updates stay InProgress this long, so tests see real polling but stay quick.
OPERATION_SECONDS = 0.5
READY_TIMEOUT = 60.0
TOKEN_PATH = "/metadata/identity/oauth2/token"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class EmulatorProcess:
    """A running local Azure stack and the handles tests use to drive and observe it."""

    def __init__(self, directory: Path, postgres_version: int, *options: str) -> None:
        self.directory = directory
        self.postgres_version = postgres_version
        self._stderr = (directory / "emulator.stderr").open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "provision", "emulator", "start", "--dir", str(directory)]
            + ["--operation-seconds", str(OPERATION_SECONDS), "--postgres-version", str(postgres_version)]
            + list(options),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_stop_with_parent,
        )
        self.env: dict[str, str] = self._wait_until_ready()
        self._tls = ssl.create_default_context(cafile=self.env["REQUESTS_CA_BUNDLE"])

    def _wait_until_ready(self) -> dict[str, str]:
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, name="emulator-stdout", daemon=True).start()
        exports: dict[str, str] = {}
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"the emulator was not ready within {READY_TIMEOUT:.0f} s:\n{self.stderr()}")
            if line is None:
                self.stop()
                pytest.fail(f"the emulator exited before it was ready:\n{self.stderr()}")
            if line == "# ready":
                return exports
            if line.startswith("export "):
                name, _, value = line[len("export ") :].partition("=")
                exports[name] = _unquote(value)

    def stderr(self) -> str:
        return (self.directory / "emulator.stderr").read_text()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    # -- running the tool against it --------------------------------------------------------------

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """`python -m provision ARGS` with the emulator's variables; `env` adds to them (None removes one)."""
        merged: dict[str, str | None] = {**os.environ, **self.env, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "provision", *args],
            input=input,
            env={name: value for name, value in merged.items() if value is not None},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- the admin endpoints ----------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A call to /_emulator/PATH on the emulated Resource Manager: its JSON answer, or AssertionError."""
        request = urllib.request.Request(
            f"{self.env['PROVISION_ARM_ENDPOINT']}/_emulator/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{method} /_emulator/{path}: {error.code} {error.read().decode()}") from None

    def reset(self) -> None:
        """Back to the seed world and settings; clears faults; the databases drop the roles tests made."""
        self.admin("POST", "reset")

    def mark(self) -> int:
        """The number of the next recorded request: pass it to `requests(since=...)`."""
        return int(self.admin("GET", "requests?limit=0")["mark"])

    def requests(self, since: int = 0, service: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests (seq, time, service, method, path, query, headers, body, status, fault),
        tokens redacted; `service` is "arm" or "imds"."""
        entries = self.admin("GET", f"requests?since={since}")["requests"]
        return [e for e in entries if service is None or e["service"] == service]

    def token_requests(self, since: int = 0) -> int:
        """How many token requests reached the Instance Metadata Service."""
        return sum(1 for e in self.requests(since, service="imds") if e["path"] == TOKEN_PATH)

    def fault(
        self,
        kind: str,
        path: str = "*",
        method: str = "*",
        *,
        count: int | None = 1,
        service: str = "arm",
        **params: Any,
    ) -> dict[str, Any]:
        """Make the next `count` matching requests (None: all, until cleared) fail in the given way.

        kind: latency (seconds=), throttle (retry_after=), server_error, conflict (code=), operation_failed,
        drop, concurrent_change (identity= or system_assigned=), retry_after (retry_after=). `path` is a shell-style
        pattern on the URL path, case-insensitive, e.g. "*/virtualMachines/myVM"."""
        spec = {"kind": kind, "path": path, "method": method, "count": count, "service": service, **params}
        return dict(self.admin("POST", "faults", spec))

    def faults(self) -> list[dict[str, Any]]:
        """The faults still active, with the count each has left."""
        return list(self.admin("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def grant(self, principal: str, role: str, scope: str) -> None:
        """Give `principal` (an object id) a built-in role at `scope` (a subscription, group or resource id)."""
        self.admin("POST", "role-assignments", {"principal": principal, "role": role, "scope": scope})

    def revoke(self, principal: str, role: str, scope: str) -> None:
        """Take back a role assignment (AssertionError when there is no such assignment)."""
        self.admin("DELETE", "role-assignments", {"principal": principal, "role": role, "scope": scope})

    def role_assignments(self) -> list[dict[str, str]]:
        return list(self.admin("GET", "role-assignments")["assignments"])

    def set_token_lifetime(self, seconds: int) -> None:
        """Lifetime of the tokens IMDS issues from now on (until reset)."""
        self.admin("PATCH", "settings", {"token_lifetime": seconds})

    def set_operation_seconds(self, seconds: float) -> None:
        """How long VM and scale set updates stay InProgress from now on (until reset)."""
        self.admin("PATCH", "settings", {"operation_seconds": seconds})


def _stop_with_parent() -> None:
    """In the emulator's process: get SIGTERM when pytest dies, even killed, so no emulator is left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _unquote(value: str) -> str:
    parts = shlex.split(value)
    return parts[0] if parts else ""


def _state_directory() -> Path:
    """A directory the `postgres` user can enter (pytest's tmp_path is 0700 under root)."""
    directory = Path(tempfile.mkdtemp(prefix="provision-test-emulator-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            pass
        else:
            os.chown(directory, postgres.pw_uid, postgres.pw_gid)
    return directory


@contextlib.contextmanager
def separate_emulator(config: pytest.Config, *options: str) -> Iterator[EmulatorProcess]:
    """An emulator of its own, started with `options` (a world the shared one does not have) on the oldest
    selected PostgreSQL major; stopped, and its state removed, on exit."""
    directory = _state_directory()
    running = EmulatorProcess(directory, selected_versions(config)[0], *options)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(directory, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--postgres-versions",
        default="",
        help="comma-separated PostgreSQL majors the per-version suites run on (default: every installed one)",
    )


def selected_versions(config: pytest.Config) -> list[int]:
    """The majors named by --postgres-versions, or every installed one; a named one that is missing fails."""
    installed = cluster.installations()
    named = [int(part) for part in str(config.getoption("--postgres-versions")).split(",") if part.strip()]
    if not named:
        return sorted(installed)
    missing = [major for major in named if major not in installed]
    if missing:
        raise pytest.UsageError(f"--postgres-versions: PostgreSQL {missing} not installed (`make postgres`)")
    return sorted(named)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "postgres_version" in metafunc.fixturenames:
        versions = selected_versions(metafunc.config)
        metafunc.parametrize("postgres_version", versions, ids=[f"pg{v}" for v in versions], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-version suites run Flexible Server cases on every version and the rest on the oldest only:
    Azure's Single Server never offered PostgreSQL 12 or later."""
    versions = selected_versions(config) if any(_param(item, "postgres_version") for item in items) else []
    keep, deselected = [], []
    for item in items:
        version = _param(item, "postgres_version")
        if version is None or version == versions[0] or _param(item, "flavor") == "flexible":
            keep.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


def _param(item: pytest.Item, name: str) -> Any:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(name) if callspec else None


class Emulators:
    """One emulator per PostgreSQL major, started on first use and stopped at the end of the session."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[EmulatorProcess, Path]] = {}

    def get(self, postgres_version: int) -> EmulatorProcess:
        if postgres_version not in self._running:
            directory = _state_directory()
            self._running[postgres_version] = (EmulatorProcess(directory, postgres_version), directory)
        return self._running[postgres_version][0]

    def stop(self) -> None:
        for running, directory in self._running.values():
            running.stop()
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def emulators() -> Iterator[Emulators]:
    started = Emulators()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def emulator(emulators: Emulators, pytestconfig: pytest.Config) -> EmulatorProcess:
    return emulators.get(selected_versions(pytestconfig)[0])


@pytest.fixture
def fresh_emulator(emulator: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The test run's emulator, reset to the seed world; faults are cleared again afterwards."""
    emulator.reset()
    yield emulator
    emulator.clear_faults()


def _export(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    return emulator.env


@pytest.fixture
def emulator_environ(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The emulator's variables in os.environ, for SDK clients and library code run inside the test process."""
    return _export(emulator, monkeypatch)


@pytest.fixture
def versioned_emulator(
    emulators: Emulators, postgres_version: int, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmulatorProcess]:
    """The emulator running PostgreSQL `postgres_version`, reset to the seed world, its variables in
    os.environ; faults are cleared again afterwards."""
    running = emulators.get(postgres_version)
    running.reset()
    _export(running, monkeypatch)
    yield running
    running.clear_faults()
