"""The library with psycopg, sync and asyncio, against the local Azure stack: connect, pools under
concurrency, one metadata request for many connections, tokens replaced as they near expiry, the
system-assigned identity, Single Server names and a sovereign cloud's audience."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from library_world import USER_ROLE, LibraryWorld, prepare
from psycopg.rows import dict_row

import provision
from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration


@pytest.fixture
def world(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> LibraryWorld:
    return prepare(fresh_emulator, monkeypatch)


def current_user(connection: Any) -> str:
    return str(connection.execute("SELECT current_user").fetchone()[0])


def test_connect_takes_the_user_from_the_token(world: LibraryWorld) -> None:
    with provision.connect(**world.flex(client_id=EXISTING_CLIENT_ID), row_factory=dict_row) as connection:
        row = connection.execute("SELECT current_user AS who").fetchone()

    assert row == {"who": USER_ROLE}


def test_one_metadata_request_for_many_connections(world: LibraryWorld) -> None:
    mark = world.emulator.mark()
    for _ in range(5):
        provision.connect(**world.flex(client_id=EXISTING_CLIENT_ID)).close()

    assert world.emulator.token_requests(mark) == 1


def test_the_system_assigned_identity_logs_in_as_a_role_it_is_given(world: LibraryWorld) -> None:
    # azure-postgresql-auth 1.1.0 fails here even with user= (UsernameExtractionError): the token's
    # xms_mirid is the VM's id. myVM's system identity is the servers' Entra admin.
    with provision.connect(**world.flex(user=seed.DATABASE_ADMIN)) as connection:
        assert current_user(connection) == seed.DATABASE_ADMIN


def test_the_system_assigned_identity_is_named_after_its_vm(world: LibraryWorld) -> None:
    with pytest.raises(provision.DatabaseError, match=f"could not connect to {seed.VM_NAME}@"):
        provision.connect(**world.flex())


def test_single_server_user_names_get_the_server(world: LibraryWorld) -> None:
    with provision.connect(**world.single(client_id=EXISTING_CLIENT_ID)) as connection:
        assert current_user(connection) == USER_ROLE
    with provision.connect(**world.single(user=f"{USER_ROLE}@{seed.SINGLE_SERVER}", client_id=EXISTING_CLIENT_ID)):
        pass


def test_single_server_refuses_a_user_without_the_server(world: LibraryWorld) -> None:
    arguments = world.single(client_id=EXISTING_CLIENT_ID)
    del arguments["single_server"]

    with pytest.raises(provision.DatabaseError, match="role@server|user@servername|@"):
        provision.connect(**arguments)


def test_a_sovereign_cloud_gets_its_own_audience(world: LibraryWorld) -> None:
    token = provision.access_token(EXISTING_CLIENT_ID, cloud="AzureChinaCloud")

    assert jwt.decode(token, options={"verify_signature": False})["aud"] == (
        "https://ossrdbms-aad.database.chinacloudapi.cn"
    )
    # The emulated servers are in the public cloud: they refuse the China cloud's token.
    with pytest.raises(provision.DatabaseError, match="audience"):
        provision.connect(**world.flex(client_id=EXISTING_CLIENT_ID, cloud="AzureChinaCloud"))


def test_access_token_shares_the_cache(world: LibraryWorld) -> None:
    mark = world.emulator.mark()
    token = provision.access_token(EXISTING_CLIENT_ID)
    provision.connect(**world.flex(client_id=EXISTING_CLIENT_ID)).close()

    assert provision.access_token(EXISTING_CLIENT_ID) == token
    assert world.emulator.token_requests(mark) == 1


def test_pool_under_concurrency(world: LibraryWorld) -> None:
    mark = world.emulator.mark()
    with provision.pool(**world.flex(client_id=EXISTING_CLIENT_ID), min_size=2, max_size=5) as pool:

        def query(_: int) -> str:
            with pool.connection() as connection:
                return current_user(connection)

        with ThreadPoolExecutor(max_workers=10) as workers:
            users = list(workers.map(query, range(50)))

    assert set(users) == {USER_ROLE}
    assert world.emulator.token_requests(mark) == 1


@pytest.mark.slow
def test_a_token_near_expiry_is_replaced_without_a_failed_query(world: LibraryWorld) -> None:
    # Tokens of 2 s: the pool recycles connections after 1 s, and each new one needs a token that
    # outlives it, so queries over 3 s span several tokens.
    world.emulator.set_token_lifetime(2)
    mark = world.emulator.mark()
    failures = []
    with provision.pool(**world.flex(client_id=EXISTING_CLIENT_ID), min_size=1, max_size=2) as pool:
        until = time.monotonic() + 3
        while time.monotonic() < until:
            try:
                with pool.connection() as connection:
                    connection.execute("SELECT 1")
            except Exception as error:  # any failed query fails the test below
                failures.append(error)
            time.sleep(0.05)

    assert failures == []
    assert world.emulator.token_requests(mark) >= 2


def test_connect_async_100_tasks_make_one_metadata_request(world: LibraryWorld) -> None:
    mark = world.emulator.mark()

    async def main() -> list[str]:
        async def one() -> str:
            async with await provision.connect_async(**world.flex(client_id=EXISTING_CLIENT_ID)) as connection:
                row = await (await connection.execute("SELECT current_user")).fetchone()
                assert row is not None
                return str(row[0])

        return await asyncio.gather(*(one() for _ in range(100)))

    assert set(asyncio.run(main())) == {USER_ROLE}
    assert world.emulator.token_requests(mark) == 1


def test_async_pool_under_concurrency_shares_the_sync_cache(world: LibraryWorld) -> None:
    provision.access_token(EXISTING_CLIENT_ID)
    mark = world.emulator.mark()

    async def main() -> set[str]:
        pool = await provision.async_pool(**world.flex(client_id=EXISTING_CLIENT_ID), min_size=2, max_size=4)
        async with pool:

            async def one() -> str:
                async with pool.connection() as connection:
                    row = await (await connection.execute("SELECT current_user")).fetchone()
                    assert row is not None
                    return str(row[0])

            return set(await asyncio.gather(*(one() for _ in range(40))))

    assert asyncio.run(main()) == {USER_ROLE}
    assert world.emulator.token_requests(mark) == 0


def test_a_token_is_fetched_off_the_event_loop(world: LibraryWorld) -> None:
    # While the metadata service takes 1 s to answer, the loop keeps running other tasks.
    world.emulator.fault("latency", service="imds", seconds=1)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        running = asyncio.create_task(ticker())
        await provision.access_token_async(EXISTING_CLIENT_ID)
        running.cancel()
        return ticks

    assert asyncio.run(main()) >= 5
