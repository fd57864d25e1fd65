"""Connect with a managed identity to Azure Database for PostgreSQL.

On an Azure VM, application code logs in with the VM's managed identity instead of a password:

    import provision

    with provision.connect("myserver.postgres.database.azure.com", "myuser", client_id="...") as conn:
        conn.execute("SELECT 1")

`connect` and `pool` load psycopg and azure-identity on first use, so importing this package (and
the command line, `provision.cli`) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provision.db.connect import connect, pool

    __version__: str

__all__ = ["__version__", "connect", "pool"]


def __getattr__(name: str) -> Any:
    if name in ("connect", "pool"):
        from provision.db import connect as module

        return getattr(module, name)
    if name == "__version__":
        from importlib.metadata import version

        return version("provision")
    raise AttributeError(f"module 'provision' has no attribute {name!r}")
