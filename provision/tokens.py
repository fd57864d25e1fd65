"""An access token for Azure Database for PostgreSQL, for any driver or tool: psycopg2, asyncpg, a
pgbouncer auth command, a shell script. `provision.connect` and the other stacks are built on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from provision.azure import imds
from provision.cloud import get_cloud
from provision.db.login import token_source

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential


def access_token(
    client_id: str | None = None, cloud: str = "AzureCloud", *, credential: TokenCredential | None = None
) -> str:
    """A current token for the cloud's database resource: the password to log in with.

    From `credential` (any azure-identity TokenCredential) or else the VM's managed identity `client_id`
    (None: its system-assigned identity). Cached in the process and shared with `provision.connect`:
    the token returned has at least 5 minutes to live, and a new one is fetched only when the cached
    one is older. Raises InvalidInput or CredentialError."""
    client_id = token_source(client_id, credential)
    return imds.access_token(get_cloud(cloud).database_resource, client_id, credential=credential).token


async def access_token_async(
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    credential: TokenCredential | AsyncTokenCredential | None = None,
) -> str:
    """`access_token` for coroutines, from the same cache: `credential` may also be an AsyncTokenCredential
    (azure.identity.aio), awaited on the loop, and the event loop never waits on the network."""
    client_id = token_source(client_id, credential, asynchronous=True)
    token = await imds.access_token_async(get_cloud(cloud).database_resource, client_id, credential=credential)
    return token.token
