"""SQLAlchemy engines that log in with an Entra access token (`pip install provision[sqlalchemy]`).

    from provision.sqlalchemy import create_engine
    engine = create_engine("myflex.postgres.database.azure.com", "myuser", "appdb", client_id="...")

Every new physical connection gets a current token as its password (SQLAlchemy's `do_connect`
event), and the pool recycles connections well before tokens expire. The async engine fetches a
token that is not cached without blocking the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provision.db.login import TokenLogin
from provision.errors import InvalidInput

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

# Managed identity tokens live 24 hours, a person's about an hour: connections older than 30 minutes
# are replaced by ones that log in with a current token.
POOL_RECYCLE = 1800


def create_engine(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | None = None,
    single_server: bool | str = False,
    pool_recycle: int = POOL_RECYCLE,
    **engine_kw: Any,
) -> Engine:
    """A `postgresql+psycopg` engine for the server, logging in as `provision.connect` does. `engine_kw`
    goes to sqlalchemy.create_engine (pool_size, echo, ...)."""
    import sqlalchemy

    login = TokenLogin(host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server)
    engine = sqlalchemy.create_engine(_url(login, "postgresql+psycopg"), pool_recycle=pool_recycle, **engine_kw)
    _listen(engine, login, asynchronous=False)
    return engine


def create_async_engine(
    host: str,
    user: str | None = None,
    database: str = "postgres",
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    port: int = 5432,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
    pool_recycle: int = POOL_RECYCLE,
    **engine_kw: Any,
) -> AsyncEngine:
    """`create_engine` for asyncio: a `postgresql+psycopg_async` AsyncEngine; `credential` may also be an
    AsyncTokenCredential (azure.identity.aio)."""
    from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_async_engine

    login = TokenLogin(
        host, user, database, client_id, cloud, port, sslmode, sslrootcert, credential, single_server, asynchronous=True
    )
    engine = sqlalchemy_async_engine(_url(login, "postgresql+psycopg_async"), pool_recycle=pool_recycle, **engine_kw)
    _listen(engine.sync_engine, login, asynchronous=True)
    return engine


def enable_token_login(
    engine: Engine | AsyncEngine,
    client_id: str | None = None,
    cloud: str = "AzureCloud",
    *,
    credential: TokenCredential | AsyncTokenCredential | None = None,
    single_server: bool | str = False,
) -> None:
    """Make an existing engine (psycopg, sync or async) log in with tokens: host, port, database,
    user and TLS settings stay the engine URL's (no user: taken from the token; sslmode defaults to
    verify-full). Set the engine's pool_recycle below the tokens' lifetime yourself (e.g. 1800). An async
    engine also takes an AsyncTokenCredential (azure.identity.aio)."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    url = sync_engine.url
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg", "psycopg_async"):
        raise InvalidInput(f"engine {url.drivername}: expected a postgresql+psycopg or postgresql+psycopg_async engine")
    if url.password is not None:
        raise InvalidInput("the engine's URL has a password: leave it out, the access token is the password")
    if not url.host:
        raise InvalidInput("the engine's URL has no host: expected postgresql+psycopg://USER@HOST/DATABASE")
    query = dict(url.query)
    login = TokenLogin(
        url.host,
        url.username,
        url.database or "postgres",
        client_id,
        cloud,
        url.port or 5432,
        str(query.get("sslmode", "verify-full")),
        str(query["sslrootcert"]) if "sslrootcert" in query else None,
        credential,
        single_server,
        asynchronous=isinstance(engine, AsyncEngine),
    )
    _listen(sync_engine, login, asynchronous=login.asynchronous)


def _url(login: TokenLogin, driver: str) -> Any:
    from sqlalchemy.engine import URL

    # No password in the URL: it would show in the engine's repr and logs.
    return URL.create(driver, username=login.user, host=login.host, port=login.port, database=login.database)


def _listen(engine: Engine, login: TokenLogin, *, asynchronous: bool) -> None:
    from sqlalchemy import event

    def do_connect(dialect: Any, connection_record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if asynchronous:
            # Runs in SQLAlchemy's greenlet on the event loop: await the token rather than block on it.
            from sqlalchemy.util import await_only

            token = await_only(login.token_async())
        else:
            token = login.token()
        cparams.update(login.connect_kwargs(token))

    event.listen(engine, "do_connect", do_connect)
