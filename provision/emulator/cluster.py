"""Throwaway PostgreSQL clusters from the machine's PostgreSQL, one per emulated database server.

They listen on a Unix socket only (no TCP), with `trust` for local connections: the socket
directory is open to nobody but the server's own user (and root), and the gateway in front of
them is the only way in from the network. PostgreSQL refuses to run as root, so as root every
server program runs as the `postgres` user, in a directory that user can enter. The clusters are
removed on close.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from provision.errors import EmulatorError

DEBIAN_VERSIONS = Path("/usr/lib/postgresql")  # one directory per installed major version
SERVER_USER = "postgres"
SUPERUSER = "postgres"
SOCKET_NAME = ".s.PGSQL.5432"
# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107
_READY_TIMEOUT = 30.0
_INSTALL_HINT = "Install the Debian package `postgresql` (apt-get install postgresql) for the local database servers."

_INITDB_OPTIONS = ("-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
_SERVER_SETTINGS = {
    "listen_addresses": "",
    "unix_socket_permissions": "0700",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "password_encryption": "scram-sha-256",
    "shared_buffers": "16MB",
    "max_connections": "200",
    # A failing CREATE ROLE ... PASSWORD would otherwise be copied into the server log.
    "log_min_error_statement": "panic",
}


def find_bindir() -> Path:
    """The directory of the newest installed PostgreSQL server programs (initdb, postgres)."""
    versions = sorted(
        DEBIAN_VERSIONS.glob("*/bin"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    candidates = list(reversed(versions))
    if shutil.which("pg_config"):
        reported = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if reported.returncode == 0:
            candidates.append(Path(reported.stdout.strip()))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise EmulatorError("no PostgreSQL server programs (initdb, postgres) were found.", hint=_INSTALL_HINT)


class Clusters:
    """New clusters named `names`, under `base` when the server user can use it, else a temporary directory.

    `start()` runs them; `close()` stops them and removes their files."""

    def __init__(self, names: Sequence[str], base: Path) -> None:
        self._bindir = find_bindir()
        self._owner = _server_owner()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.names = tuple(names)
        self.directory = self._make_directory(base, max(names, key=len))
        try:
            for name in names:
                self._make_owned(self.directory / name)
            # Side by side: as fast as one initdb and a copy on two cores, faster under load (the
            # copy of freshly written files is slow while the kernel writes them back).
            initdb = [*self._as_server_user(), str(self._bindir / "initdb"), *_INITDB_OPTIONS]
            runs = [
                subprocess.Popen(
                    [*initdb, "-D", str(self.data(name))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                for name in names
            ]
            outputs = [run.communicate()[0] for run in runs]
            for run, output in zip(runs, outputs, strict=True):
                if run.returncode != 0:
                    raise EmulatorError(f"initdb failed (exit {run.returncode}):\n{output.decode(errors='replace')}")
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def data(self, name: str) -> Path:
        return self.directory / name / "data"

    def socket_dir(self, name: str) -> Path:
        return self.directory / name

    def socket(self, name: str) -> Path:
        return self.socket_dir(name) / SOCKET_NAME

    def log(self, name: str) -> Path:
        return self.directory / name / "server.log"

    def start(self) -> None:
        """Start every server and wait until all accept connections.

        A server dies with the thread that calls this (parent-death signal), so a killed emulator
        leaves no server behind: call it from a thread that lives as long as the servers should."""
        for name in self.names:
            settings = {**_SERVER_SETTINGS, "unix_socket_directories": str(self.socket_dir(name))}
            argv = [str(self._bindir / "postgres"), "-D", str(self.data(name))]
            for key, value in settings.items():
                argv += ["-c", f"{key}={value}"]
            with self.log(name).open("ab") as log:
                self._processes[name] = subprocess.Popen(
                    [*self._as_server_user(), "--pdeathsig", "SIGQUIT", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in the emulator's terminal is for the emulator
                )
        deadline = time.monotonic() + _READY_TIMEOUT
        for name, process in self._processes.items():
            while not self._ready(name):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise EmulatorError(f"the PostgreSQL server {name!r} did not start:\n{self._log_tail(name)}")
                time.sleep(0.01)

    def share_with_server(self, path: Path) -> None:
        """Let the server user use a file the emulator created (a socket the servers call back on)."""
        if self._owner:
            os.chown(path, *self._owner)

    def close(self) -> None:
        """Stop the servers at once (immediate shutdown: nothing here needs to survive) and remove the files."""
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)
        for process in self._processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _ready(self, name: str) -> bool:
        # postmaster.pid's eighth line is the server's status: "ready" once it accepts connections.
        try:
            lines = (self.data(name) / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) > 7 and lines[7].strip() == "ready"

    def _log_tail(self, name: str) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-15:])
        except FileNotFoundError:
            return "(no server log)"

    def _make_directory(self, base: Path, longest_name: str) -> Path:
        """`base`/postgres if the server user can enter `base` and the socket path fits, else a temporary directory."""
        preferred = base / "postgres"
        if len(str(preferred / longest_name / SOCKET_NAME)) <= _MAX_SOCKET_PATH and self._can_enter(base):
            shutil.rmtree(preferred, ignore_errors=True)  # left over by an emulator that was killed
            preferred.mkdir(mode=0o700)
            directory = preferred
        else:
            directory = Path(tempfile.mkdtemp(prefix="provision-postgres-"))
        self.share_with_server(directory)
        return directory

    def _can_enter(self, path: Path) -> bool:
        if not self._owner:
            return True
        probe = subprocess.run([*self._as_server_user(), "test", "-x", str(path)], check=False)
        return probe.returncode == 0

    def _make_owned(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        self.share_with_server(path)

    def _as_server_user(self) -> list[str]:
        # setpriv also carries --pdeathsig for the server; as a normal user it changes nothing else.
        if not self._owner:
            return ["setpriv"]
        return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups"]


def _server_owner() -> tuple[int, int] | None:
    """The uid and gid the servers run as when we are root (PostgreSQL refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise EmulatorError(
            f"running as root, but there is no {SERVER_USER!r} user to run PostgreSQL as.", hint=_INSTALL_HINT
        ) from None
    return entry.pw_uid, entry.pw_gid
