"""The provision.django backend against the local Azure stack, with a minimal settings.configure():
a token for each new connection, persistent connections (CONN_MAX_AGE) reopened with a new token."""

from __future__ import annotations

from typing import Any

import pytest
from library_world import USER_ROLE, LibraryWorld, prepare

import provision
from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID

pytestmark = pytest.mark.integration
django = pytest.importorskip("django")


class AsyncCredential:
    """An AsyncTokenCredential's shape (azure.identity.aio): Django's backend blocks, so it cannot await it."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("never awaited")


@pytest.fixture
def world(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> LibraryWorld:
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, DATABASES={})
        django.setup()
    return prepare(fresh_emulator, monkeypatch)


def database(world: LibraryWorld, **settings: Any) -> Any:
    """A Django connection for these settings, from a ConnectionHandler of its own."""
    from django.db.utils import ConnectionHandler

    options = settings.pop("OPTIONS", {"client_id": EXISTING_CLIENT_ID})
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "provision.django",
                "HOST": world.host,
                "PORT": str(world.flex_port),
                "NAME": "postgres",
                "OPTIONS": options,
                **settings,
            }
        }
    )
    return handler["default"]


def current_user(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        return str(cursor.fetchone()[0])


def test_the_backend_logs_in_with_the_identity(world: LibraryWorld) -> None:
    connection = database(world)
    try:
        assert current_user(connection) == USER_ROLE
    finally:
        connection.close()


def test_single_server_and_a_given_user(world: LibraryWorld) -> None:
    connection = database(
        world,
        PORT=str(world.single_port),
        USER=USER_ROLE,
        OPTIONS={"client_id": EXISTING_CLIENT_ID, "single_server": seed.SINGLE_SERVER},
    )
    try:
        assert current_user(connection) == USER_ROLE
    finally:
        connection.close()


def test_a_persistent_connection_reopened_after_its_token_expired_gets_a_new_one(world: LibraryWorld) -> None:
    world.emulator.set_token_lifetime(1)
    connection = database(world, CONN_MAX_AGE=600)
    mark = world.emulator.mark()
    try:
        assert current_user(connection) == USER_ROLE
        first = connection.connection
        connection.close_if_unusable_or_obsolete()
        assert connection.connection is first  # persistent: kept across requests
        connection.close()  # Django drops it (an error, a restart, CONN_MAX_AGE passed)
        assert current_user(connection) == USER_ROLE
    finally:
        connection.close()

    assert world.emulator.token_requests(mark) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"PASSWORD": "hunter2"}, "leave PASSWORD empty"),
        ({"OPTIONS": {"client_id": EXISTING_CLIENT_ID, "pool": True}}, r"OPTIONS\['pool'\] is not supported"),
        ({"OPTIONS": {"client_id": "nope"}}, "client_id 'nope': expected a GUID"),
        ({"OPTIONS": {"sslmode": "disable"}}, "sslmode disable: refused"),
        ({"HOST": ""}, "host '': expected a host name"),
        ({"OPTIONS": {"credential": AsyncCredential()}}, r"credential AsyncCredential: an async credential"),
    ],
)
def test_bad_settings_are_refused_before_any_token(world: LibraryWorld, settings: Any, message: str) -> None:
    connection = database(world, **settings)
    mark = world.emulator.mark()

    with pytest.raises(provision.InvalidInput, match=message):
        connection.ensure_connection()

    assert connection.connection is None
    assert world.emulator.token_requests(mark) == 0
