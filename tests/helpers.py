"""Helpers for the integration tests that drive the local Azure stack: where its servers are, what the
admin sees in their catalogs, what the VM carries, and which writes reached Resource Manager.

The functions that read tokens or call Resource Manager from the test process need the emulator's
variables in os.environ (the `emulator_environ` fixture)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from provision.emulator import seed

if TYPE_CHECKING:
    import psycopg

FLAVORS = ("single", "flexible")
# The pinned third-party tools the Makefile installs into the cache, run unchanged against the emulator.
_CACHE = Path(__file__).resolve().parents[1] / ".cache"
AZ = _CACHE / "venv-az" / "bin" / "az"
AZPGAUTH_PYTHON = _CACHE / "venv-azpgauth" / "bin" / "python"
WRITE_METHODS = ("PUT", "PATCH", "DELETE")
_PREFIX = {"single": "PROVISION_SINGLE", "flexible": "PROVISION_FLEX"}


def require_installed(program: Path, what: str, make_target: str) -> Path:
    """Skip when a pinned tool is not installed, except in CI (the CI variable is set), where it must be."""
    if not program.exists():
        where = program.parent.parent
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing from {where}: CI must install it (`make {make_target}`)")
        pytest.skip(f"{what} is not installed in {where} (`make {make_target}`, which `make test` runs)")
    return program


def server_options(emulator: Any, flavor: str) -> list[str]:
    prefix = _PREFIX[flavor]
    return ["--host", emulator.env[f"{prefix}_HOST"], "--port", emulator.env[f"{prefix}_PORT"]]


def admin_options(emulator: Any, flavor: str) -> list[str]:
    """--host, --port and --admin-user of one emulated server, as its Entra admin."""
    return [*server_options(emulator, flavor), "--admin-user", emulator.env[f"{_PREFIX[flavor]}_ADMIN"]]


def login_user(flavor: str, role: str) -> str:
    """What a role logs in as: Single Server wants ROLE@SERVERNAME."""
    return f"{role}@{seed.SINGLE_SERVER}" if flavor == "single" else role


def writes(emulator: Any, since: int) -> list[str]:
    """The Resource Manager writes recorded since a mark, as "METHOD path"."""
    return [
        f"{r['method']} {r['path']}"
        for r in emulator.requests(since=since, service="arm")
        if r["method"] in WRITE_METHODS
    ]


MACHINE_KINDS = {"vm": "virtualMachines", "vmss": "virtualMachineScaleSets"}


def machine(emulator: Any, kind: str = "vm", name: str = seed.VM_NAME) -> dict[str, Any]:
    """A VM or scale set as the emulated world holds it (read through /_emulator/, not the tool's clients)."""
    return dict(emulator.admin("GET", f"machine?kind={MACHINE_KINDS[kind]}&group={seed.RESOURCE_GROUP}&name={name}"))


def database_token(client_id: str | None = None) -> str:
    """A database token from the emulated IMDS: a user-assigned identity's, or (None) the VM's own,
    which is the servers' Entra admin."""
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return credential.get_token(seed.DATABASE_AUDIENCE + "/.default").token


def admin_connection(emulator: Any, flavor: str, **kwargs: Any) -> psycopg.Connection:
    """A connection to one emulated server as its Entra admin, through the gateway, with the admin's token."""
    import psycopg

    prefix = _PREFIX[flavor]
    return psycopg.connect(
        host=emulator.env[f"{prefix}_HOST"],
        port=emulator.env[f"{prefix}_PORT"],
        dbname="postgres",
        user=login_user(flavor, seed.DATABASE_ADMIN),
        password=database_token(),
        sslmode="verify-ca",
        sslrootcert=emulator.env["PGSSLROOTCERT"],
        connect_timeout=10,
        **kwargs,
    )


def roles(emulator: Any) -> dict[str, Any]:
    """Every role on both servers, and Flexible Server's Entra principals, as the admin sees them."""
    seen: dict[str, Any] = {}
    for flavor in FLAVORS:
        with admin_connection(emulator, flavor) as conn:
            seen[flavor] = conn.execute("SELECT rolname FROM pg_roles ORDER BY 1").fetchall()
            if flavor == "flexible":
                seen["principals"] = conn.execute("SELECT * FROM pgaadauth_list_principals(false)").fetchall()
    return seen


def machine_identities(emulator: Any, name: str = seed.VM_NAME) -> tuple[str | None, list[str]]:
    """The VM's identity type and the names of its user-assigned identities, read with the real compute client."""
    from provision.azure.arm import Arm

    compute = Arm.from_options(seed.SUBSCRIPTION_ID, "AzureCloud", emulator.env["PROVISION_ARM_ENDPOINT"])
    identity = compute.compute_client().virtual_machines.get(seed.RESOURCE_GROUP, name).as_dict().get("identity") or {}
    names = sorted(key.rsplit("/", 1)[-1] for key in identity.get("userAssignedIdentities") or {})
    return identity.get("type"), names


def wait_for_request(emulator: Any, since: int, method: str, path_end: str, timeout: float = 30) -> dict[str, Any]:
    """The first request since a mark with this method and path ending, once the emulator has answered it."""
    deadline = time.monotonic() + timeout
    while True:
        for request in emulator.requests(since=since, service="arm"):
            if request["method"] == method and request["path"].lower().endswith(path_end.lower()):
                return dict(request)
        if time.monotonic() > deadline:
            raise AssertionError(f"no {method} *{path_end} reached the emulator within {timeout:.0f} s")
        time.sleep(0.05)


def invoke(*args: str) -> tuple[int, str, str]:
    """The CLI in this process, where a test can patch the library: exit status, stdout, stderr.

    An exception that escaped the CLI is added to stderr as a traceback line; the logging set-up the
    CLI makes is undone afterwards."""
    from click.testing import CliRunner

    from provision.cli import cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli, list(args))
    finally:
        root.handlers[:], root.level = handlers, level
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += f"\nTraceback: {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stdout, stderr
