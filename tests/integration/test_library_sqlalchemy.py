"""provision.sqlalchemy against the local Azure stack: sync and async engines, an existing engine made
to log in with tokens, a token for each new physical connection."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy
from library_world import USER_ROLE, LibraryWorld, prepare
from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_async_engine

import provision
from provision import sqlalchemy as provision_sqlalchemy
from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration
WHO = sqlalchemy.text("SELECT current_user")


@pytest.fixture
def world(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> LibraryWorld:
    return prepare(fresh_emulator, monkeypatch)


def test_engine_logs_in_with_a_token_under_concurrency(world: LibraryWorld) -> None:
    mark = world.emulator.mark()
    engine = provision_sqlalchemy.create_engine(**world.flex(client_id=EXISTING_CLIENT_ID), pool_size=3)

    def query(_: int) -> str:
        with engine.connect() as connection:
            return str(connection.execute(WHO).scalar_one())

    with ThreadPoolExecutor(max_workers=6) as workers:
        users = set(workers.map(query, range(30)))
    engine.dispose()

    assert users == {USER_ROLE}
    assert world.emulator.token_requests(mark) == 1
    assert engine.pool._recycle == provision_sqlalchemy.POOL_RECYCLE
    assert engine.url.password is None


def test_each_new_physical_connection_gets_a_current_token(world: LibraryWorld) -> None:
    world.emulator.set_token_lifetime(1)  # below the 5-minute margin: every connection fetches one
    engine = provision_sqlalchemy.create_engine(**world.flex(client_id=EXISTING_CLIENT_ID))
    mark = world.emulator.mark()
    for _ in range(3):
        with engine.connect() as connection:
            connection.execute(WHO)
        engine.dispose()

    assert world.emulator.token_requests(mark) == 3


def test_single_server_through_the_engine(world: LibraryWorld) -> None:
    engine = provision_sqlalchemy.create_engine(**world.single(client_id=EXISTING_CLIENT_ID))
    with engine.connect() as connection:
        assert connection.execute(WHO).scalar_one() == USER_ROLE
    engine.dispose()


def test_async_engine(world: LibraryWorld) -> None:
    mark = world.emulator.mark()

    async def main() -> set[str]:
        engine = provision_sqlalchemy.create_async_engine(**world.flex(client_id=EXISTING_CLIENT_ID), pool_size=5)

        async def one() -> str:
            async with engine.connect() as connection:
                return str((await connection.execute(WHO)).scalar_one())

        users = set(await asyncio.gather(*(one() for _ in range(20))))
        await engine.dispose()
        return users

    assert asyncio.run(main()) == {USER_ROLE}
    assert world.emulator.token_requests(mark) == 1


def test_an_existing_engine_gets_token_login(world: LibraryWorld) -> None:
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://{USER_ROLE}@{world.host}:{world.flex_port}/postgres", pool_recycle=1800
    )
    provision_sqlalchemy.enable_token_login(engine, EXISTING_CLIENT_ID)
    with engine.connect() as connection:
        assert connection.execute(WHO).scalar_one() == USER_ROLE
    engine.dispose()


def test_an_existing_async_engine_gets_token_login(world: LibraryWorld) -> None:
    async def main() -> str:
        engine = sqlalchemy_async_engine(f"postgresql+psycopg_async://{world.host}:{world.flex_port}/postgres")
        provision_sqlalchemy.enable_token_login(engine, EXISTING_CLIENT_ID)
        async with engine.connect() as connection:
            user = str((await connection.execute(WHO)).scalar_one())
        await engine.dispose()
        return user

    assert asyncio.run(main()) == USER_ROLE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "expected a postgresql+psycopg or postgresql+psycopg_async engine"),
        ("postgresql+psycopg://u:secret@h.example/db", "the engine's URL has a password"),
        ("postgresql+psycopg:///db", "the engine's URL has no host"),
        ("postgresql+psycopg://u@h.example/db?sslmode=disable", "sslmode disable: refused"),
    ],
)
def test_enable_token_login_refuses_engines_it_cannot_serve(world: LibraryWorld, url: str, message: str) -> None:
    engine = sqlalchemy.create_engine(url)
    mark = world.emulator.mark()

    with pytest.raises(provision.InvalidInput, match=re.escape(message)):
        provision_sqlalchemy.enable_token_login(engine, EXISTING_CLIENT_ID)

    assert len(engine.dialect.dispatch.do_connect) == 0
    assert world.emulator.token_requests(mark) == 0
