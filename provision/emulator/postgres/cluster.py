"""Throwaway PostgreSQL clusters, one per emulated database server, from an installed PostgreSQL.

They listen on a Unix socket only (no TCP), with `trust` for local connections: the socket
directory is open to nobody but the server's own user (and root), and the gateway in front of
them is the only way in from the network. PostgreSQL refuses to run as root, so as root every
server program runs as the `postgres` user, in a directory that user can enter. The clusters are
removed on close.

Installations are found in directories that hold one subdirectory per major version
(`<dir>/<major>/bin/postgres`), searched in this order, the first holding a major winning:
the directories in PROVISION_POSTGRES_DIRS (separated by `:`), the project's cache
`.cache/postgres` (filled by `make postgres` from the npm registry's relocatable builds, whose
shared libraries are in `<major>/lib`), then the machine's `/usr/lib/postgresql` (Debian's packages).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.emulator.errors import EmulatorError

SEARCH_PATH_VARIABLE = "PROVISION_POSTGRES_DIRS"
PROJECT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "postgres"
DEBIAN_VERSIONS = Path("/usr/lib/postgresql")
# The majors Azure Database for PostgreSQL Flexible Server offers that the emulator is tested on.
SUPPORTED_MAJORS = (15, 16, 17, 18)
SERVER_USER = "postgres"
SUPERUSER = "postgres"
SOCKET_NAME = ".s.PGSQL.5432"
# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107
_READY_TIMEOUT = 30.0
_INSTALL_HINT = "`make postgres` installs 16, 17 and 18, `apt-get install postgresql` the machine's own"

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


@dataclass(frozen=True)
class Installation:
    """One major version's server programs: `root`/bin, and `root`/lib for relocatable builds."""

    major: int
    root: Path

    @property
    def bindir(self) -> Path:
        return self.root / "bin"

    def environment(self) -> dict[str, str]:
        """The server programs' environment: relocatable builds find their shared libraries in lib/."""
        return {**os.environ, "LD_LIBRARY_PATH": str(self.root / "lib")}


def search_roots() -> list[Path]:
    listed = [Path(entry) for entry in os.environ.get(SEARCH_PATH_VARIABLE, "").split(os.pathsep) if entry]
    return [*listed, PROJECT_CACHE, DEBIAN_VERSIONS]


def installations() -> dict[int, Installation]:
    """The supported majors found along the search order, the first directory holding one winning."""
    found: dict[int, Installation] = {}
    for root in search_roots():
        for major in SUPPORTED_MAJORS:
            bindir = root / str(major) / "bin"
            if major not in found and (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
                found[major] = Installation(major, root / str(major))
    return dict(sorted(found.items()))


def find_installation(major: int | None = None) -> Installation:
    """PostgreSQL `major`, or the newest installed; EmulatorError saying how to install it."""
    found = installations()
    if major is None and found:
        return found[max(found)]
    if major is not None and major in found:
        return found[major]
    if major is None:
        raise EmulatorError(
            f"no PostgreSQL server programs were found for the local database servers: {_INSTALL_HINT}."
        )
    have = f"installed: {', '.join(map(str, found))}" if found else "none is installed"
    raise EmulatorError(
        f"PostgreSQL {major} is not installed for the local database servers ({have}): {_INSTALL_HINT}."
    )


class Clusters:
    """New clusters named `names`, under `base` when the server user can use it, else a temporary directory.

    `start()` runs them; `close()` stops them and removes their files."""

    def __init__(self, names: Sequence[str], base: Path, installation: Installation | None = None) -> None:
        self.installation = installation or find_installation()
        self._owner = _server_owner()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.names = tuple(names)
        self.directory = self._make_directory(base, max(names, key=len))
        try:
            usable = self._usable_installation()
            self._bindir, self._environment = usable.bindir, usable.environment()
            for name in names:
                self._make_owned(self.directory / name)
            # Side by side: as fast as one initdb and a copy on two cores, faster under load (the
            # copy of freshly written files is slow while the kernel writes them back).
            initdb = [*self._as_server_user(), str(self._bindir / "initdb"), *_INITDB_OPTIONS]
            runs = [
                subprocess.Popen(
                    [*initdb, "-D", str(self.data(name))],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self._environment,
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
                    env=self._environment,
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

    def _usable_installation(self) -> Installation:
        """The installation, or a copy of it in the clusters' directory when the server user cannot run
        its programs where they are (a project cache in a home directory that only root may enter)."""
        if self._can_enter(self.installation.bindir / "postgres"):
            return self.installation
        copy = Installation(self.installation.major, self.directory / "programs")
        shutil.copytree(self.installation.root, copy.root, symlinks=True)
        return copy

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
            f"running as root, but there is no {SERVER_USER!r} user to run PostgreSQL as.", hint=_INSTALL_HINT + "."
        ) from None
    return entry.pw_uid, entry.pw_gid
