"""Starts and stops the local Azure stack: Resource Manager, the Instance Metadata Service and, when
the database part is present, the emulated Azure Database for PostgreSQL servers.

Ports: with port_base 0 every service takes a free port; otherwise Resource Manager = N, IMDS = N+1,
Single Server = N+2, Flexible Server = N+3, Entra's sign-in endpoints = N+4. Everything listens on loopback only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.emulator import http, imds, login, seed
from provision.emulator.arm import service as arm
from provision.emulator.arm.postgresql import FlexibleServers
from provision.emulator.arm.world import World
from provision.emulator.entra import Entra
from provision.emulator.errors import EmulatorError, InvalidSetting
from provision.emulator.keys import Authority
from provision.emulator.postgres import cluster, databases

DEFAULT_TOKEN_LIFETIME = 86399  # what real IMDS answers in expires_in
LOCK_FILE = "emulator.lock"  # in DIR, held while a stack runs there; it holds that stack's pid


@dataclass
class Stack:
    directory: Path
    exports: dict[str, str]
    world: World
    closers: list[Callable[[], Any]] = field(default_factory=list)
    # Exports that carry a secret: written to env.sh (readable by its owner only), never printed.
    secret_exports: dict[str, str] = field(default_factory=dict)

    def export_lines(self) -> list[str]:
        return _export_lines(self.exports)

    def write_env_sh(self) -> None:
        descriptor = os.open(self.directory / "env.sh", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # also when an earlier stack left a readable one
        with os.fdopen(descriptor, "w") as env_sh:
            env_sh.write("".join(line + "\n" for line in self.export_lines() + _export_lines(self.secret_exports)))

    def close(self) -> None:
        """Stop every service, newest first; each one is stopped even if another fails."""
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception as error:  # the others must still stop
                print(f"error while stopping: {error}", file=sys.stderr)


def start(
    directory: Path | None,
    port_base: int,
    operation_seconds: float,
    host: str = "127.0.0.1",
    postgres_version: int | None = None,
    names: databases.ServerNames = databases.DEFAULT_NAMES,
    vms: int = 0,
    flexible_entra: bool = True,
) -> Stack:
    """Start every service and write DIR/env.sh. Without `directory`, a new temporary one is made and
    removed again by `close()`. VM and scale set updates stay InProgress for `operation_seconds`.
    The database servers run PostgreSQL `postgres_version` (None: the newest installed); `vms` more VMs,
    vm-1..vm-N, join the seed world. Without `flexible_entra` the Flexible server starts as Azure creates
    one by default: password authentication only, no Entra admin."""
    seed.loopback(host)
    if port_base and not 1 <= port_base <= 65531:
        raise InvalidSetting(f"--port-base {port_base}: expected 0 (free ports) or 1-65531")
    seed.server_name("--single-name", names.single)
    seed.server_name("--flexible-name", names.flexible)
    if names.single == names.flexible:
        raise InvalidSetting(f"--single-name and --flexible-name are both {names.single!r}: each server needs its own")
    installation = cluster.find_installation(postgres_version)
    stack = Stack(Path(), {}, World(operation_seconds, DEFAULT_TOKEN_LIFETIME, vms))
    if directory is None:
        created = Path(tempfile.mkdtemp(prefix="provision-emulator-"))
        stack.closers.append(lambda: shutil.rmtree(created, ignore_errors=True))
        # The database servers run as the `postgres` user, which must be able to enter it.
        created.chmod(0o755)
        directory = created
    stack.directory = directory = directory.resolve()
    try:
        stack.closers.append(_lock(directory))
        _start_services(stack, port_base, host, installation, names, flexible_entra)
    except BaseException as error:
        stack.close()
        if isinstance(error, OSError):
            raise EmulatorError(f"the local Azure stack could not start: {error}") from error
        raise
    stack.write_env_sh()
    return stack


def _export_lines(exports: dict[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


AZ_CLOUD_NAME = "ProvisionEmulator"


def _az_exports(directory: Path) -> dict[str, str]:
    """What the real Azure CLI needs to use this stack and nothing else: its own configuration directory (so a
    user's az login is neither used nor changed), no telemetry, no survey prompts, errors only. azure-cli reads any
    `core` setting from AZURE_CORE_<NAME> (learn.microsoft.com/cli/azure/azure-cli-configuration). Then
    `az cloud register -n ProvisionEmulator --endpoint-resource-manager "$PROVISION_ARM_ENDPOINT"`,
    `az cloud set -n ProvisionEmulator` and `az login --identity` sign it in (README). `az login --service-principal`
    against the emulated Entra needs MSAL's instance discovery off, as on Azure Stack Hub (azure-cli's
    core.instance_discovery, _profile.py)."""
    return {
        "AZURE_CONFIG_DIR": str(directory / "az"),
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "AZURE_CORE_SURVEY_MESSAGE": "false",
        "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
        "AZURE_CORE_INSTANCE_DISCOVERY": "false",
    }


def _lock(directory: Path) -> Callable[[], None]:
    """Take DIR's lock before anything in DIR is written, or refuse: a second stack on the same directory
    would replace the first one's database files and rewire its gateway. Returns the release."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip()
        os.close(descriptor)
        running = f" (pid {holder})" if holder.isdigit() else ""
        raise EmulatorError(
            f"{directory} is in use by a running local Azure stack{running}: stop it, or pick another --dir"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    return lambda: os.close(descriptor)


def _start_services(
    stack: Stack,
    port_base: int,
    host: str,
    installation: cluster.Installation,
    names: databases.ServerNames,
    flexible_entra: bool,
) -> None:
    directory, world = stack.directory, stack.world
    authority = Authority.load_or_create(directory)
    log = http.RequestLog(directory / "requests.jsonl")
    stack.closers.append(log.close)
    faults = http.Faults()
    url_host = f"[{host}]" if ":" in host else host
    flexible = FlexibleServers(world, names.flexible, str(installation.major), flexible_entra)
    entra = Entra(world)
    world.on_reset(entra.reset)
    arm_server = arm.serve(host, _port(port_base, 0), authority, world, faults, log, flexible, entra)
    stack.closers.append(arm_server.stop)
    imds_server = imds.serve(host, _port(port_base, 1), authority, world, faults, log)
    stack.closers.append(imds_server.stop)
    sign_in = login.LoginService(authority, world)
    login_server = login.serve(host, _port(port_base, 4), authority, sign_in, faults, log)
    stack.closers.append(login_server.stop)
    stack.exports.update(
        PROVISION_ARM_ENDPOINT=f"https://{url_host}:{arm_server.port}",
        AZURE_SUBSCRIPTION_ID=seed.SUBSCRIPTION_ID,
        REQUESTS_CA_BUNDLE=str(authority.ca_path),
        AZURE_POD_IDENTITY_AUTHORITY_HOST=f"http://{url_host}:{imds_server.port}",
        PGSSLROOTCERT=str(authority.ca_path),
        PROVISION_EMULATOR_DIR=str(directory),
        # The CI pipeline's service principal: a pipeline sets AZURE_CLIENT_ID, AZURE_TENANT_ID and
        # AZURE_AUTHORITY_HOST from these, and AZURE_CLIENT_SECRET from PROVISION_CI_CLIENT_SECRET (env.sh only).
        PROVISION_CI_CLIENT_ID=seed.CI_CLIENT_ID,
        PROVISION_TENANT_ID=seed.TENANT_ID,
        PROVISION_AUTHORITY_HOST=f"https://{url_host}:{login_server.port}",
        **_az_exports(directory),
    )
    stack.secret_exports["PROVISION_CI_CLIENT_SECRET"] = sign_in.ci_secret
    servers = databases.start(
        directory,
        authority,
        entra,
        host=host,
        single_port=_port(port_base, 2),
        flexible_port=_port(port_base, 3),
        installation=installation,
        names=names,
        capture=log.capture,
        flexible=flexible,
    )
    stack.closers.append(servers.close)
    world.on_reset(servers.reset)
    stack.exports.update(servers.exports())


def _port(port_base: int, offset: int) -> int:
    return port_base + offset if port_base else 0


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT (Ctrl-C) sets while the block runs, instead of ending the process,
    so that the services (and the database servers) are always stopped in order."""
    stopped = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopped.set()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
