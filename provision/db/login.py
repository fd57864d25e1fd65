"""Token login for the library: the parameters every stack shares (psycopg sync and async, pools,
SQLAlchemy, Django), validated once with the library's own argument names, and the connection
keywords each new physical connection gets: a current token as the password and the user name."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from provision import validate
from provision.azure import imds
from provision.cloud import get_cloud
from provision.db.target import Target, trust_store_for
from provision.errors import InvalidInput

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential

# A user-assigned identity's resource id: .../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME.
_USER_ASSIGNED = re.compile(r".*/providers/microsoft\.managedidentity/userassignedidentities/(?P<name>[^/]+)/?", re.I)
# Single Server host names: NAME.postgres.database.azure.com and the sovereign clouds' equivalents
# (learn.microsoft.com/azure/postgresql/single-server/how-to-connect-with-managed-identity).
_SINGLE_SERVER_HOST = re.compile(
    r"(?P<server>[a-z0-9][a-z0-9-]*)\.postgres\.database\.(azure\.com|chinacloudapi\.cn|usgovcloudapi\.net)\.?", re.I
)


def user_from_claims(claims: imds.TokenClaims | None) -> str:
    """The PostgreSQL role a token's identity logs in as, when no user is given.

    As azure-postgresql-auth 1.1.0 does (core.py, get_entra_conninfo): a user-assigned identity's name
    (the last part of `xms_mirid`), else a person's `upn`, `preferred_username` or `unique_name`. Where
    it gives up: a system-assigned identity's `xms_mirid` is its resource's id (.../virtualMachines/myVM),
    and its service principal is named after that resource (learn.microsoft.com/entra/identity/
    managed-identities-azure-resources/overview), so the role is the resource's name: `myVM`."""
    if claims is None:
        raise InvalidInput("the access token is not a JWT, so it names no user: pass user=")
    mirid = claims.xms_mirid or ""
    user_assigned = _USER_ASSIGNED.fullmatch(mirid)
    if user_assigned:
        return user_assigned["name"]
    for name in (claims.upn, claims.preferred_username, claims.unique_name):
        if name:
            return name
    resource_name = mirid.rstrip("/").rpartition("/")[2]
    if resource_name:
        return resource_name
    raise InvalidInput(
        "the access token names no identity (no xms_mirid, upn, preferred_username or unique_name"
        " claim, as for a service principal): pass user="
    )


def token_source(
    client_id: str | None, credential: TokenCredential | AsyncTokenCredential | None, *, asynchronous: bool = False
) -> str | None:
    """Check who gives the tokens: a credential, or a managed identity of this VM. Returns the client id.

    `asynchronous`: for coroutines, which also take an AsyncTokenCredential (azure.identity.aio); code
    that blocks cannot await one."""
    if credential is not None and client_id is not None:
        raise InvalidInput("client_id picks a managed identity of this VM: leave it out when passing credential=")
    if credential is not None and not callable(getattr(credential, "get_token", None)):
        raise InvalidInput(
            f"credential {type(credential).__name__}: expected an azure-identity TokenCredential"
            " (an object with get_token), e.g. DefaultAzureCredential()"
        )
    if not asynchronous and imds.is_async_credential(credential):
        raise InvalidInput(
            f"credential {type(credential).__name__}: an async credential (azure.identity.aio) cannot be awaited"
            " here; pass its sync twin from azure.identity, or use connect_async, async_pool,"
            " create_async_engine or access_token_async"
        )
    return validate.optional_guid(client_id, "client_id")


def single_server_name(host: str, single_server: bool | str) -> str | None:
    """The server part of Single Server user names (`role@server`), or None for Flexible Server.

    Single and Flexible servers share the host suffix .postgres.database.azure.com, so the host cannot
    tell them apart: `single_server=True` takes the host's first label, a string names the server
    (for an IP address, a private endpoint or a CNAME)."""
    if single_server is False:
        return None
    if single_server is True:
        match = _SINGLE_SERVER_HOST.fullmatch(host)
        if not match:
            raise InvalidInput(
                f"single_server=True: host {host!r} is not SERVER.postgres.database.azure.com;"
                " pass the server's name instead, single_server='SERVER'"
            )
        return match["server"].lower()
    if not isinstance(single_server, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", single_server):
        raise InvalidInput(f"single_server {single_server!r}: expected True, False or a server name such as 'myserver'")
    return single_server.lower()


def login_user(user: str, server: str | None) -> str:
    """Single Server wants `role@server`; a name that already ends in @server is left as it is."""
    if server is None or user.lower().endswith("@" + server):
        return user
    return f"{user}@{server}"


@dataclass(frozen=True)
class TokenLogin:
    """Where to log in and with which identity; validated when made, before any token is requested.

    `user` None: derived from each token (`user_from_claims`). `credential` None: the VM's managed
    identity `client_id` (None: its system-assigned identity) through IMDS. `asynchronous`: for
    coroutines (token_async), which also take an AsyncTokenCredential."""

    host: str
    user: str | None = None
    database: str = "postgres"
    client_id: str | None = None
    cloud: str = "AzureCloud"
    port: int = 5432
    sslmode: str = "verify-full"
    sslrootcert: str | None = None
    credential: TokenCredential | AsyncTokenCredential | None = field(default=None, repr=False)
    single_server: bool | str = False
    asynchronous: bool = False
    resource: str = field(init=False)
    server: str | None = field(init=False)
    # The Target of each role name this login has connected as: built (and checked) once, not per connection.
    _targets: dict[str, Target] = field(init=False, default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate.host(self.host, "host")
        object.__setattr__(self, "port", validate.port(self.port, "port"))
        validate.sslmode(self.sslmode, "sslmode")
        if self.user is not None and (not self.user or "\x00" in self.user):
            raise InvalidInput(f"user {self.user!r}: expected a role name, or None to take it from the token")
        if not self.database or "\x00" in self.database:
            raise InvalidInput(f"database {self.database!r}: expected a database name")
        if self.sslrootcert not in (None, "system") and not Path(str(self.sslrootcert)).is_file():
            raise InvalidInput(f"sslrootcert {self.sslrootcert!r}: no such file (expected the server's CA certificate)")
        trust_store_for(self.sslmode, self.sslrootcert)  # no CA bundle, or no PGSSLROOTCERT file: before any token
        object.__setattr__(
            self, "client_id", token_source(self.client_id, self.credential, asynchronous=self.asynchronous)
        )
        object.__setattr__(self, "resource", get_cloud(self.cloud).database_resource)
        object.__setattr__(self, "server", single_server_name(self.host, self.single_server))

    def token(self, min_validity: float = imds.MIN_VALIDITY) -> imds.ManagedIdentityToken:
        return imds.access_token(
            self.resource, self.client_id, min_validity, cast("TokenCredential | None", self.credential)
        )

    async def token_async(self, min_validity: float = imds.MIN_VALIDITY) -> imds.ManagedIdentityToken:
        return await imds.access_token_async(self.resource, self.client_id, min_validity, self.credential)

    def target(self, token: imds.ManagedIdentityToken) -> Target:
        """The connection target for a token: its user is the one given, or the token's identity."""
        user = self.user if self.user is not None else user_from_claims(imds.decode_claims(token.token))
        target = self._targets.get(user)
        if target is None:
            target = Target(
                self.host, login_user(user, self.server), self.port, self.database, self.sslmode, self.sslrootcert
            )
            self._targets.setdefault(user, target)
        return target

    def connect_kwargs(self, token: imds.ManagedIdentityToken) -> dict[str, Any]:
        """psycopg.connect keywords for one new connection with this token as the password."""
        return self.target(token).connect_kwargs(token.token)
