"""`credential=` with azure-identity's async credentials against the local Azure stack: awaited on the
event loop by the coroutine entry points, one token request for many tasks, sync credentials still
served from coroutines (in a worker thread), and refused by the entry points that block."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from library_world import USER_ROLE, LibraryWorld, prepare

import provision
import provision.sqlalchemy
from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration


@pytest.fixture
def world(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> LibraryWorld:
    return prepare(fresh_emulator, monkeypatch)


class Recording:
    """A credential that hands get_token to azure-identity's and records the thread it was called on."""

    def __init__(self, credential: Any) -> None:
        self.credential, self.threads = credential, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.credential, name)


class RecordingAsync(Recording):
    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        return await self.credential.get_token(*scopes, **kwargs)


class RecordingSync(Recording):
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        return self.credential.get_token(*scopes, **kwargs)


def async_managed_identity() -> Any:
    """azure.identity.aio's ManagedIdentityCredential, sent to the emulated IMDS like the sync one (the
    emulator's AZURE_POD_IDENTITY_AUTHORITY_HOST); azure-core's requests-based async transport stands in
    for aiohttp, which provision does not install."""
    from azure.core.pipeline.transport import AsyncioRequestsTransport
    from azure.identity.aio import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID, transport=AsyncioRequestsTransport())


async def current_user(connection: Any) -> str:
    row = await (await connection.execute("SELECT current_user")).fetchone()
    assert row is not None
    return str(row[0])


def test_an_async_credential_is_awaited_on_the_event_loop(world: LibraryWorld) -> None:
    async def main() -> tuple[str, int, list[int]]:
        async with async_managed_identity() as identity:
            credential = RecordingAsync(identity)
            async with await provision.connect_async(**world.flex(credential=credential)) as connection:
                return await current_user(connection), threading.get_ident(), credential.threads

    user, loop_thread, token_threads = asyncio.run(main())

    assert user == USER_ROLE
    assert token_threads == [loop_thread]


def test_100_tasks_with_an_async_credential_make_one_token_request(world: LibraryWorld) -> None:
    mark = world.emulator.mark()

    async def main() -> tuple[set[str], str, str]:
        async with async_managed_identity() as credential:

            async def one() -> str:
                async with await provision.connect_async(**world.flex(credential=credential)) as connection:
                    return await current_user(connection)

            users = set(await asyncio.gather(*(one() for _ in range(100))))
            pool = await provision.async_pool(**world.flex(credential=credential), min_size=1, max_size=2)
            async with pool, pool.connection() as connection:
                pooled = await current_user(connection)
            return users, pooled, await provision.access_token_async(credential=credential)

    users, pooled, token = asyncio.run(main())

    assert users == {USER_ROLE}
    assert pooled == USER_ROLE
    assert token.count(".") == 2  # the JWT the connections logged in with, from the cache
    assert world.emulator.token_requests(mark) == 1


def test_the_async_engine_takes_an_async_credential(world: LibraryWorld) -> None:
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import text

    async def main() -> str:
        async with async_managed_identity() as credential:
            engine = provision.sqlalchemy.create_async_engine(**world.flex(credential=credential))
            try:
                async with engine.connect() as connection:
                    return str((await connection.execute(text("SELECT current_user"))).scalar_one())
            finally:
                await engine.dispose()

    assert asyncio.run(main()) == USER_ROLE


def test_a_sync_credential_is_called_off_the_event_loop(world: LibraryWorld) -> None:
    from azure.identity import ManagedIdentityCredential

    credential = RecordingSync(ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID))

    async def main() -> tuple[str, int]:
        async with await provision.connect_async(**world.flex(credential=credential)) as connection:
            return await current_user(connection), threading.get_ident()

    user, loop_thread = asyncio.run(main())

    assert user == USER_ROLE
    assert len(credential.threads) == 1
    assert credential.threads != [loop_thread]


def _engine(world: LibraryWorld, credential: Any) -> Any:
    return provision.sqlalchemy.create_engine(**world.flex(credential=credential))


def _existing_engine(world: LibraryWorld, credential: Any) -> Any:
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"postgresql+psycopg://{world.host}:{world.flex_port}/postgres")
    provision.sqlalchemy.enable_token_login(engine, credential=credential)
    return engine


@pytest.mark.parametrize(
    "entry_point",
    [
        lambda world, credential: provision.connect(**world.flex(credential=credential)),
        lambda world, credential: provision.pool(**world.flex(credential=credential), open=False),
        lambda world, credential: provision.access_token(credential=credential),
        _engine,
        _existing_engine,
    ],
    ids=["connect", "pool", "access_token", "create_engine", "enable_token_login"],
)
def test_the_entry_points_that_block_refuse_an_async_credential(
    world: LibraryWorld, entry_point: Callable[[LibraryWorld, Any], Any]
) -> None:
    if entry_point in (_engine, _existing_engine):
        pytest.importorskip("sqlalchemy")
    credential = RecordingAsync(None)
    mark = world.emulator.mark()

    with pytest.raises(provision.InvalidInput) as raised:
        entry_point(world, credential)

    assert raised.value.message.startswith(
        "credential RecordingAsync: an async credential (azure.identity.aio) cannot be awaited here;"
    )
    assert "--" not in str(raised.value)
    assert raised.value.exit_status == 2
    assert credential.threads == []
    assert world.emulator.token_requests(mark) == 0
