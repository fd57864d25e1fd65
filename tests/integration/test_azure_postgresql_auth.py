"""Microsoft's azure-postgresql-auth (the pinned release `make azpgauth` installs in .cache/venv-azpgauth, which
`make test` runs), unchanged, logging in to the emulated Flexible server: its EntraConnection and
AsyncEntraConnection (psycopg 3) with a token from the emulated IMDS, verify-full against the emulator's CA.

Each login runs in its own process with that environment's python: the library is never imported here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import AZPGAUTH_PYTHON, require_installed

from provision.emulator import seed

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP

# argv: host, port, CA file, mode (sync: EntraConnection, async: AsyncEntraConnection), client id ("" for the
# system-assigned identity), user ("" to let the library pick). Prints {"user": current_user} or
# {"error": [the exception's type, its cause's type]}.
LOGIN = """
import asyncio, json, sys
host, port, ca, mode, client_id, user = sys.argv[1:]
params = dict(host=host, port=int(port), dbname="postgres", sslmode="verify-full", sslrootcert=ca)
if user:
    params["user"] = user

def sync():
    from azure.identity import ManagedIdentityCredential
    from azure_postgresql_auth.psycopg3 import EntraConnection
    credential = ManagedIdentityCredential(client_id=client_id or None)
    with EntraConnection.connect(credential=credential, **params) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]

async def asynchronous():
    from azure.identity.aio import ManagedIdentityCredential
    from azure_postgresql_auth.psycopg3 import AsyncEntraConnection
    async with ManagedIdentityCredential(client_id=client_id or None) as credential:
        async with await AsyncEntraConnection.connect(credential=credential, **params) as conn:
            return (await (await conn.execute("SELECT current_user")).fetchone())[0]

try:
    print(json.dumps({"user": sync() if mode == "sync" else asyncio.run(asynchronous())}))
except Exception as error:
    print(json.dumps({"error": [type(error).__name__, type(error.__cause__).__name__]}))
"""

# The same login with provision's library, user left out (README: a system-assigned identity logs in as its VM).
PROVISION_LOGIN = """
import sys, provision
host, port, ca = sys.argv[1:]
with provision.connect(host, port=int(port), sslrootcert=ca) as conn:
    print(conn.execute("SELECT current_user").fetchone()[0])
"""


@pytest.fixture
def azpgauth_python() -> Path:
    return require_installed(AZPGAUTH_PYTHON, "azure-postgresql-auth", "azpgauth")


def run_python(emulator: Any, python: Path | str, code: str, *args: str) -> str:
    """`python -c CODE HOST PORT CA ARGS...` against the Flexible server by its Azure host name (the emulator's
    PGHOSTADDR sends libpq to loopback; verify-full checks the name): its stdout."""
    host, port, ca = (
        seed.host_name(seed.FLEXIBLE_SERVER),
        emulator.env["PROVISION_FLEX_PORT"],
        emulator.env["PGSSLROOTCERT"],
    )
    done = subprocess.run(
        [str(python), "-c", code, host, port, ca, *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **emulator.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def login(emulator: Any, python: Path, mode: str, client_id: str = "", user: str = "") -> dict[str, Any]:
    """One login with azure-postgresql-auth: "sync" with EntraConnection, "async" with AsyncEntraConnection."""
    return dict(json.loads(run_python(emulator, python, LOGIN, mode, client_id, user)))


def create_role(emulator: Any, name: str, object_id: str) -> None:
    flexible = ("--host", emulator.env["PROVISION_FLEX_HOST"], "--port", emulator.env["PROVISION_FLEX_PORT"])
    done = emulator.run(
        "role", "create", *flexible, "--admin-user", seed.DATABASE_ADMIN, "--name", name, "--object-id", object_id
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_entra_connection_logs_in_as_the_role_provision_made(
    fresh_emulator: Any, azpgauth_python: Path, mode: str
) -> None:
    created = fresh_emulator.run(
        "-o", "json", "identity", "create", "-g", RG, "-n", "appIdentity", "--vm", seed.VM_NAME
    )
    assert created.returncode == 0, created.stderr
    identity = json.loads(created.stdout)
    # The library names the user after the identity (its token's xms_mirid): the role has the identity's name.
    create_role(fresh_emulator, "appIdentity", identity["principalId"])
    assert login(fresh_emulator, azpgauth_python, mode, client_id=identity["clientId"]) == {"user": "appIdentity"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_system_assigned_identity_is_refused_by_the_library_and_not_by_provision(
    fresh_emulator: Any, azpgauth_python: Path, mode: str
) -> None:
    # The VM's system-assigned identity's service principal is named after the VM: its role is myVM.
    create_role(fresh_emulator, seed.VM_NAME, seed.OPERATOR_PRINCIPAL_ID)
    # Its token's xms_mirid names the VM, not a user-assigned identity: azure-postgresql-auth 1.1.0 finds no user
    # name in it, and asks for one even when the user is given (it only skips the token when both are).
    refused = {"error": ["EntraConnectionValueError", "UsernameExtractionError"]}
    assert login(fresh_emulator, azpgauth_python, mode) == refused
    assert login(fresh_emulator, azpgauth_python, mode, user=seed.VM_NAME) == refused
    # provision's library takes the VM's name from the same token and logs in as myVM.
    assert run_python(fresh_emulator, sys.executable, PROVISION_LOGIN).strip() == seed.VM_NAME
