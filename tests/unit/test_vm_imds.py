"""Managed identity tokens on the VM, against a small fake metadata service on loopback: what is
asked, how often (the cache), and how each failure is reported. Speed shows up as attempt counts,
never as timings."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

import provision
from provision import deadline
from provision.azure import imds
from provision.db.target import KEEPALIVES, system_trust_store
from provision.errors import CredentialError, DatabaseError, InvalidInput

RESOURCE = "https://ossrdbms-aad.database.windows.net"
CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"
OTHER_CLIENT_ID = "2f6e0a51-93c4-4b7e-8d21-5a0c7e3f9b42"
PRINCIPAL_ID = "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b"


class FakeImds:
    """Answers token requests the way IMDS does; `reply` picks the answer, `requests` records the queries."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.reply: tuple[int, dict[str, Any]] | None = None  # None: a token
        self.first_replies: list[tuple[int, dict[str, Any], dict[str, str]]] = []  # before `reply`, in order
        self.expires_in = 86399
        self.silent = threading.Event()  # set: accept, read, never answer
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                fake.requests.append({"path": urllib.parse.urlsplit(self.path).path, **query})
                if fake.silent.is_set():
                    fake.released.wait(10)
                    return
                headers: dict[str, str] = {}
                if fake.first_replies:
                    status, body, headers = fake.first_replies.pop(0)
                else:
                    status, body = fake.reply or (200, fake.token_response(query))
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def token_response(self, query: dict[str, str]) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "aud": query["resource"],
            "appid": query.get("client_id", "system"),
            "oid": PRINCIPAL_ID,
            "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "exp": now + self.expires_in,
            "n": len(self.requests),  # every token differs
        }
        token = jwt.encode(claims, "k" * 32, algorithm="HS256")
        return {
            "access_token": token,
            "expires_in": str(self.expires_in),
            "expires_on": str(now + self.expires_in),
            "resource": query["resource"],
            "token_type": "Bearer",
        }

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep, taken at once on a clock that jumps ahead by it: retry schedules without waiting."""
    taken: list[float] = []
    real_monotonic = time.monotonic

    def sleep(seconds: float) -> None:
        taken.append(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + sum(taken))
    return taken


@pytest.fixture
def fake_imds(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> Iterator[FakeImds]:
    fake = FakeImds()
    monkeypatch.setenv(imds.ENDPOINT_VARIABLE, fake.url)
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(None))
    yield fake
    fake.close()


IDENTITY_NOT_FOUND = (400, {"error": "invalid_request", "error_description": "Identity not found"})
SERVER_ERROR = (500, {"error": "unknown", "error_description": "Failed to retrieve token from the Active directory."})


@pytest.fixture
def connection_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection urllib3 tries to open (one per HTTP attempt, including refused ones)."""
    import urllib3.util.connection

    attempts: list[tuple[str, int]] = []
    original = urllib3.util.connection.create_connection

    def counting(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        return original(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    return attempts


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- what is asked ---------------------------------------------------------------------------------


def test_token_for_a_user_assigned_identity(fake_imds: FakeImds) -> None:
    token = imds.access_token(RESOURCE, CLIENT_ID)

    assert fake_imds.requests == [
        {
            "path": "/metadata/identity/oauth2/token",
            "api-version": "2018-02-01",
            "resource": RESOURCE,
            "client_id": CLIENT_ID,
        }
    ]
    assert token.client_id == CLIENT_ID and token.resource == RESOURCE
    assert 86300 < token.remaining() <= 86399
    assert imds.decode_claims(token.token) is not None


def test_system_assigned_identity_sends_no_client_id(fake_imds: FakeImds) -> None:
    imds.access_token(RESOURCE)

    assert "client_id" not in fake_imds.requests[0]


def test_token_repr_hides_the_secret(fake_imds: FakeImds) -> None:
    token = imds.access_token(RESOURCE, CLIENT_ID)

    assert token.token not in repr(token)
    assert token.token.split(".")[1] not in repr(token)


def test_claims_are_read_without_a_signature_check() -> None:
    token = jwt.encode(
        {"aud": RESOURCE, "appid": CLIENT_ID, "oid": PRINCIPAL_ID, "tid": "t", "exp": 1700000000, "iss": "x"},
        "any-key-at-all-32-bytes-long-xxxx",
        algorithm="HS256",
    )

    claims = imds.decode_claims(token)

    assert claims == imds.TokenClaims(RESOURCE, CLIENT_ID, PRINCIPAL_ID, "t", 1700000000, None)
    assert claims.as_dict() == {"aud": RESOURCE, "appid": CLIENT_ID, "oid": PRINCIPAL_ID, "tid": "t", "exp": 1700000000}


def test_a_token_that_is_not_a_jwt_has_no_claims() -> None:
    assert imds.decode_claims("opaque-token") is None


# -- the cache -------------------------------------------------------------------------------------


def test_one_request_for_a_hundred_tokens(fake_imds: FakeImds) -> None:
    tokens = {imds.access_token(RESOURCE, CLIENT_ID).token for _ in range(100)}

    assert len(fake_imds.requests) == 1
    assert len(tokens) == 1


def test_cache_is_per_identity_and_resource(fake_imds: FakeImds) -> None:
    imds.access_token(RESOURCE, CLIENT_ID)
    imds.access_token(RESOURCE, CLIENT_ID.upper())
    imds.access_token(RESOURCE, OTHER_CLIENT_ID)
    imds.access_token(RESOURCE)
    imds.access_token("https://management.azure.com/", CLIENT_ID)

    assert [(r.get("client_id"), r["resource"]) for r in fake_imds.requests] == [
        (CLIENT_ID, RESOURCE),
        (OTHER_CLIENT_ID, RESOURCE),
        (None, RESOURCE),
        (CLIENT_ID, "https://management.azure.com/"),
    ]


def test_a_token_within_five_minutes_of_expiry_is_replaced(fake_imds: FakeImds) -> None:
    fake_imds.expires_in = 299
    first = imds.access_token(RESOURCE, CLIENT_ID)
    second = imds.access_token(RESOURCE, CLIENT_ID)

    assert len(fake_imds.requests) == 2
    assert first.token != second.token


def test_a_caller_can_ask_for_a_longer_validity(fake_imds: FakeImds) -> None:
    fake_imds.expires_in = 3600
    imds.access_token(RESOURCE, CLIENT_ID)
    imds.access_token(RESOURCE, CLIENT_ID, min_validity=3000)
    imds.access_token(RESOURCE, CLIENT_ID, min_validity=3700)

    assert len(fake_imds.requests) == 2


def test_threads_asking_at_once_share_one_request(fake_imds: FakeImds) -> None:
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(imds.access_token(RESOURCE, CLIENT_ID).token)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(fake_imds.requests) == 1
    assert len(set(results)) == 1 and len(results) == 8


# -- failures --------------------------------------------------------------------------------------


def test_unknown_client_id_is_given_up_on_after_the_window(
    fake_imds: FakeImds, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    fake_imds.reply = IDENTITY_NOT_FOUND

    with pytest.raises(imds.TokenUnavailable) as raised:
        imds.access_token(RESOURCE, CLIENT_ID)

    assert raised.value.cause == "identity_not_found"
    assert f"no managed identity with client id {CLIENT_ID} is attached to this VM" in str(raised.value)
    assert "provision identity assign" in str(raised.value)
    assert "attached in the last minute, the metadata service may not serve it yet" in str(raised.value)
    assert raised.value.detail == "(invalid_request) Identity not found"
    assert caplog.records[-1].getMessage() == "the metadata service gave no token in 5 attempts over 10 s"
    # Asked at 0, 1, 3 and 7 s, and a last time when the window ends: a wrong client id costs 10 s.
    assert len(fake_imds.requests) == 5
    assert sleeps[:3] == [1.0, 2.0, 4.0] and sleeps[3] == pytest.approx(3.0, abs=0.5)
    assert sum(sleeps) == pytest.approx(imds.IDENTITY_NOT_FOUND_WINDOW, abs=0.5)
    assert isinstance(raised.value, CredentialError)


def test_a_freshly_attached_identity_is_waited_for(
    fake_imds: FakeImds, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    fake_imds.first_replies = [(*IDENTITY_NOT_FOUND, {})] * 2

    token = imds.access_token(RESOURCE, CLIENT_ID)

    assert token.client_id == CLIENT_ID
    assert len(fake_imds.requests) == 3 and sleeps == [1.0, 2.0]
    progress = [r.getMessage() for r in caplog.records if r.name == "provision.azure.imds" and r.levelname == "WARNING"]
    assert progress == [
        f"the metadata service does not serve the managed identity with client id {CLIENT_ID} (yet?);"
        f" asking again in {delay:.1f} s"
        for delay in (1.0, 2.0)
    ]


def test_no_system_assigned_identity(fake_imds: FakeImds) -> None:
    fake_imds.reply = IDENTITY_NOT_FOUND

    with pytest.raises(imds.TokenUnavailable, match="this VM has no system-assigned managed identity") as raised:
        imds.access_token(RESOURCE)

    assert raised.value.cause == "identity_not_found"
    assert "client_id=" in str(raised.value)


def test_several_user_assigned_identities_need_a_client_id(fake_imds: FakeImds) -> None:
    description = (
        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the"
        " token request"
    )
    fake_imds.reply = (400, {"error": "invalid_request", "error_description": description})

    with pytest.raises(imds.TokenUnavailable, match="several user-assigned identities") as raised:
        imds.access_token(RESOURCE)

    assert raised.value.cause == "identity_ambiguous"
    assert "client_id=" in str(raised.value)


def test_unknown_resource(fake_imds: FakeImds) -> None:
    description = "AADSTS500011: The resource principal named https://x.example was not found in the tenant."
    fake_imds.reply = (400, {"error": "invalid_resource", "error_description": description})

    with pytest.raises(imds.TokenUnavailable, match="issues no token for https://x.example") as raised:
        imds.access_token("https://x.example")

    assert raised.value.cause == "resource_unknown"
    assert "AADSTS500011" in raised.value.detail


def test_a_server_error_is_asked_again_after_a_second(fake_imds: FakeImds, sleeps: list[float]) -> None:
    # Our loop retries, with the backoff Microsoft asks for (azure-core's own status retries are off).
    fake_imds.first_replies = [(*SERVER_ERROR, {})]

    assert imds.access_token(RESOURCE, CLIENT_ID).client_id == CLIENT_ID
    assert len(fake_imds.requests) == 2 and sleeps == [1.0]


@pytest.mark.parametrize("status", [404, 410, 429, 503])
def test_what_microsoft_says_to_retry_is_retried(fake_imds: FakeImds, sleeps: list[float], status: int) -> None:
    fake_imds.first_replies = [(status, {"error": "e", "error_description": "not now"}, {})] * 3

    assert imds.access_token(RESOURCE, CLIENT_ID).client_id == CLIENT_ID
    assert len(fake_imds.requests) == 4 and sleeps == [1.0, 2.0, 4.0]


def test_other_refusals_are_not_retried(fake_imds: FakeImds, sleeps: list[float]) -> None:
    fake_imds.reply = (400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})

    with pytest.raises(imds.TokenUnavailable):
        imds.access_token(RESOURCE, CLIENT_ID)

    assert len(fake_imds.requests) == 1 and sleeps == []


def test_an_updating_metadata_service_is_waited_for_and_reported(
    fake_imds: FakeImds, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(deadline.DEFAULT_TIMEOUT))  # a command's budget
    fake_imds.first_replies = [(410, {"error": "e", "error_description": "updating"}, {})] * 6

    assert imds.access_token(RESOURCE, CLIENT_ID).client_id == CLIENT_ID
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]  # 47 s: within the 70 s Microsoft gives a 410

    fake_imds.reply = (410, {"error": "e", "error_description": "updating"})
    with pytest.raises(imds.TokenUnavailable, match=r"being updated \(410\)") as raised:
        imds.access_token(RESOURCE, OTHER_CLIENT_ID)
    assert raised.value.cause == "imds_updating" and raised.value.status == 410


def test_retry_after_is_honoured(fake_imds: FakeImds, sleeps: list[float]) -> None:
    fake_imds.first_replies = [(429, {"error": "e", "error_description": "slow down"}, {"Retry-After": "7"})]

    assert imds.access_token(RESOURCE, CLIENT_ID).client_id == CLIENT_ID
    assert sleeps == [7.0]


def test_a_library_caller_waits_at_most_the_library_limit(fake_imds: FakeImds, sleeps: list[float]) -> None:
    fake_imds.first_replies = [(*SERVER_ERROR, {})] * 6  # the 7th answer (at 31 s) would be a token

    with pytest.raises(imds.TokenUnavailable) as raised:
        imds.access_token(RESOURCE, CLIENT_ID)

    assert raised.value.cause == "imds_error"
    assert raised.value.detail == "(unknown) Failed to retrieve token from the Active directory."
    assert len(fake_imds.requests) == 5
    assert sleeps == [1.0, 2.0, 4.0, 8.0]  # the next wait, 16 s, would end past 30 s


def test_a_command_waits_at_most_its_timeout(
    fake_imds: FakeImds, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(5))
    fake_imds.first_replies = [(*SERVER_ERROR, {})] * 3

    with pytest.raises(imds.TokenUnavailable):
        imds.access_token(RESOURCE, CLIENT_ID)

    assert sleeps == [1.0, 2.0] and len(fake_imds.requests) == 3


def test_retry_schedule() -> None:
    def failure(
        status: int | None, cause: str = "imds_error", retry_after: float | None = None
    ) -> imds.TokenUnavailable:
        return imds.TokenUnavailable("m", cause=cause, detail="d", hint="h", status=status, retry_after=retry_after)

    assert [imds.retry_delay(failure(500), n, 0, 75) for n in range(1, 8)] == [1, 2, 4, 8, 16, 16, 16]
    assert imds.retry_delay(failure(429, retry_after=300), 1, 0, 75) == deadline.MAX_SINGLE_WAIT
    assert imds.retry_delay(failure(429, retry_after=0), 3, 0, 75) == 4  # never faster than the backoff
    assert imds.retry_delay(failure(500), 5, 60, 75) is None  # 60 + 16 > 75
    assert imds.retry_delay(failure(None, "imds_unreachable"), 1, 0, 75) is None
    assert imds.retry_delay(failure(400, "resource_unknown"), 1, 0, 75) is None
    assert imds.retry_delay(failure(400, "identity_not_found"), 4, 7.5, 75) == 2.5
    assert imds.retry_delay(failure(400, "identity_not_found"), 5, 10, 75) is None


def test_closed_port_is_unreachable_after_two_attempts(
    monkeypatch: pytest.MonkeyPatch, connection_attempts: list[tuple[str, int]]
) -> None:
    port = closed_port()
    monkeypatch.setenv(imds.ENDPOINT_VARIABLE, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())

    with pytest.raises(imds.TokenUnavailable) as raised:
        imds.access_token(RESOURCE, CLIENT_ID)

    assert raised.value.cause == "imds_unreachable"
    assert str(raised.value).startswith(
        f"the Azure Instance Metadata Service did not answer at http://127.0.0.1:{port}"
    )
    assert "not one, or a firewall or proxy blocks 169.254.169.254" in str(raised.value)
    assert "Connection refused" in raised.value.detail
    assert connection_attempts == [("127.0.0.1", port)] * 2


def test_an_endpoint_that_drops_connections_is_unreachable_after_two_attempts(
    monkeypatch: pytest.MonkeyPatch, connection_attempts: list[tuple[str, int]]
) -> None:
    # A listening socket with a full backlog drops further SYNs, like 169.254.169.254 off Azure.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued = [socket.socket() for _ in range(4)]
    for client in queued:
        client.setblocking(False)
        client.connect_ex(listener.getsockname())
    monkeypatch.setenv(imds.ENDPOINT_VARIABLE, f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    monkeypatch.setitem(imds.CREDENTIAL_SETTINGS, "connection_timeout", 0.2)
    try:
        with pytest.raises(imds.TokenUnavailable) as raised:
            imds.access_token(RESOURCE, CLIENT_ID)
    finally:
        for client in queued:
            client.close()
        listener.close()

    assert raised.value.cause == "imds_unreachable"
    assert raised.value.detail == "no connection within 0.2 s"
    assert len(connection_attempts) == 2


def test_a_silent_endpoint_is_asked_once(fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_imds.silent.set()
    monkeypatch.setitem(imds.CREDENTIAL_SETTINGS, "read_timeout", 0.2)

    with pytest.raises(imds.TokenUnavailable) as raised:
        imds.access_token(RESOURCE, CLIENT_ID)

    assert raised.value.cause == "imds_unreachable"
    assert raised.value.detail == "connected, but no answer within 0.2 s"
    assert len(fake_imds.requests) == 1


def test_timeouts_keep_an_off_azure_failure_under_three_seconds() -> None:
    # Worst case without a metadata service: every connection attempt waits the full connect timeout.
    settings = imds.CREDENTIAL_SETTINGS
    attempts = settings["retry_total"] + 1

    assert attempts * settings["connection_timeout"] < 3
    assert settings["retry_read"] == 0 and settings["read_timeout"] < 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ossrdbms-aad.database.windows.net", "expected a resource URL"),
        ("https://x.example/?a=b", "expected a resource URL"),
        ("https://ossrdbms-aad.database.windows.net/.default", "not a scope"),
    ],
)
def test_bad_resources_are_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        imds.resource_url(value)


# -- the library: provision.connect / provision.pool ------------------------------------------------


class RecordingConnect:
    """Stands in for psycopg.connect: records the keyword arguments, or fails with a libpq message."""

    def __init__(self, failure: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failure = failure

    def __call__(self, **kwargs: Any) -> object:
        import psycopg

        self.calls.append(kwargs)
        if self.failure:
            raise psycopg.OperationalError(self.failure)
        return object()


@pytest.fixture
def recording_connect(monkeypatch: pytest.MonkeyPatch) -> RecordingConnect:
    import psycopg

    recorder = RecordingConnect()
    monkeypatch.setattr(psycopg, "connect", recorder)
    return recorder


def test_a_hundred_connects_make_one_metadata_request(fake_imds: FakeImds, recording_connect: RecordingConnect) -> None:
    for _ in range(100):
        provision.connect("myserver.postgres.database.azure.com", "myuser", client_id=CLIENT_ID)

    assert len(fake_imds.requests) == 1
    passwords = {call["password"] for call in recording_connect.calls}
    assert len(recording_connect.calls) == 100 and len(passwords) == 1
    assert imds.decode_claims(passwords.pop()) is not None


def test_connect_passes_the_token_as_password(fake_imds: FakeImds, recording_connect: RecordingConnect) -> None:
    provision.connect("myserver.postgres.database.azure.com", "myuser", "appdb", CLIENT_ID, port=6432, autocommit=True)

    (call,) = recording_connect.calls
    password = call.pop("password")
    assert call == {
        "host": "myserver.postgres.database.azure.com",
        "port": 6432,
        "dbname": "appdb",
        "user": "myuser",
        "sslmode": "verify-full",
        "sslrootcert": system_trust_store(),
        "connect_timeout": 10,
        "application_name": "provision",
        "gssencmode": "disable",
        **KEEPALIVES,
        "autocommit": True,
    }
    assert imds.decode_claims(password) == imds.decode_claims(imds.access_token(RESOURCE, CLIENT_ID).token)


def test_connect_asks_for_the_clouds_database_resource(
    fake_imds: FakeImds, recording_connect: RecordingConnect
) -> None:
    provision.connect("x.postgres.database.chinacloudapi.cn", "u", cloud="AzureChinaCloud")

    assert fake_imds.requests[0]["resource"] == "https://ossrdbms-aad.database.chinacloudapi.cn"


def test_connect_refuses_a_password(fake_imds: FakeImds) -> None:
    with pytest.raises(InvalidInput, match="takes no password"):
        provision.connect("h.example", "u", password="hunter2")

    assert fake_imds.requests == []


def test_connect_validates_before_asking_for_a_token(fake_imds: FakeImds) -> None:
    # The library's messages name its arguments, not the command line's options.
    with pytest.raises(InvalidInput, match="^client_id 'nope': expected a GUID"):
        provision.connect("h.example", "u", client_id="nope")
    with pytest.raises(InvalidInput, match="^sslmode 'sometimes': expected one of"):
        provision.connect("h.example", "u", sslmode="sometimes")

    assert fake_imds.requests == []


def test_connect_failure_explains_the_cause(fake_imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    failure = (
        'connection to server at "10.0.0.4", port 5432 failed: FATAL:  password authentication failed for user "u"'
    )
    monkeypatch.setattr(psycopg, "connect", RecordingConnect(failure))

    with pytest.raises(DatabaseError) as raised:
        provision.connect("h.example", "u", client_id=CLIENT_ID)

    message = str(raised.value)
    assert message.startswith("could not connect to u@h.example:5432/postgres: the server rejected the token")
    assert "`provision role show` (host h.example, admin-user ADMIN, name u)" in message
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)


def test_pool_connections_end_before_their_tokens(fake_imds: FakeImds) -> None:
    fake_imds.expires_in = 100
    pool = provision.pool("h.example", "u", client_id=CLIENT_ID, open=False)

    # Connections live half as long as a token; a token that cannot outlive one is replaced.
    assert pool.max_lifetime == pytest.approx(50, abs=1)
    assert callable(pool.kwargs)
    first, second = pool.kwargs(), pool.kwargs()
    assert first["user"] == "u" and first["sslmode"] == "verify-full"
    assert first["password"] != second["password"]
    assert len(fake_imds.requests) == 3


def test_pool_reuses_tokens_that_outlive_its_connections(fake_imds: FakeImds) -> None:
    pool = provision.pool("h.example", "u", client_id=CLIENT_ID, max_lifetime=1800, open=False)

    assert pool.max_lifetime == 1800
    assert len({pool.kwargs()["password"] for _ in range(10)}) == 1
    assert len(fake_imds.requests) == 1


def test_pool_fails_early_without_an_identity(fake_imds: FakeImds) -> None:
    fake_imds.reply = IDENTITY_NOT_FOUND

    with pytest.raises(imds.TokenUnavailable, match="no managed identity with client id"):
        provision.pool("h.example", "u", client_id=CLIENT_ID, open=False)


@pytest.mark.parametrize(("option", "value"), [("kwargs", {}), ("conninfo", "host=x"), ("max_lifetime", 0)])
def test_pool_refuses_options_it_sets_itself(fake_imds: FakeImds, option: str, value: Any) -> None:
    with pytest.raises(InvalidInput):
        provision.pool("h.example", "u", open=False, **{option: value})

    assert fake_imds.requests == []
