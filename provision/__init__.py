"""Connect with a managed identity (or any Entra credential) to Azure Database for PostgreSQL.

On an Azure VM, application code logs in with the VM's managed identity instead of a password:

    import provision

    with provision.connect("myserver.postgres.database.azure.com", "myuser", client_id="...") as conn:
        conn.execute("SELECT 1")

`connect_async` and `async_pool` do the same for asyncio, `access_token` gives the token to any other
driver, and `provision.sqlalchemy` and `provision.django` plug it into those frameworks. Everything
loads psycopg and azure-identity on first use, so importing this package (and the command line,
`provision.cli`) stays fast. Errors are ProvisionError subclasses: InvalidInput (a bad argument,
nothing was requested), CredentialError (no token; TokenUnavailable from the metadata service) and
DatabaseError (the server refused, with the likely cause).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provision.errors import CredentialError, DatabaseError, InvalidInput, ProvisionError, TimedOut

if TYPE_CHECKING:
    from provision.azure.imds import TokenUnavailable
    from provision.db.connect import async_pool, connect, connect_async, pool
    from provision.tokens import access_token, access_token_async

    __version__: str

__all__ = [
    "CredentialError",
    "DatabaseError",
    "InvalidInput",
    "ProvisionError",
    "TimedOut",
    "TokenUnavailable",
    "__version__",
    "access_token",
    "access_token_async",
    "async_pool",
    "connect",
    "connect_async",
    "pool",
]

_LAZY = {
    "connect": "provision.db.connect",
    "connect_async": "provision.db.connect",
    "pool": "provision.db.connect",
    "async_pool": "provision.db.connect",
    "access_token": "provision.tokens",
    "access_token_async": "provision.tokens",
    "TokenUnavailable": "provision.azure.imds",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    if name == "__version__":
        from importlib.metadata import version

        return version("provision")
    raise AttributeError(f"module 'provision' has no attribute {name!r}")
