"""A server posing as Azure Database for PostgreSQL receives no secret from any command or the library
with default settings: the impostor on loopback speaks TLS with a certificate that nothing trusts,
accepts the PostgreSQL SSLRequest, asks for a cleartext password and records every byte a client
sends. With --sslmode require (or verify-ca and a host name that is not the certificate's) it does
receive the token: the control that shows the impostor would catch a leak."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import provision
from provision.emulator.arm.world import EXISTING_CLIENT_ID
from provision.emulator.keys import Authority
from provision.errors import DatabaseError

pytestmark = pytest.mark.integration

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
ADMIN_PASSWORD = "impostor-bait-password-4b1d"
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104
_AUTHENTICATION_CLEARTEXT_PASSWORD = b"R" + struct.pack("!ii", 8, 3)


class Impostor:
    """A TLS server on `host`, with a certificate from a CA of its own (`ca_path`) for localhost,
    127.0.0.1 and ::1. `received` holds every byte clients sent, before and inside TLS;
    `handshakes` counts the TLS sessions that a client accepted."""

    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        authority = Authority.load_or_create(directory)
        self.ca_path = str(authority.ca_path)
        self._context = authority.server_context("impostor")
        self._listener = socket.create_server((host, 0))
        self.host, self.port = host, str(self._listener.getsockname()[1])
        self.received = bytearray()
        self.connections = self.handshakes = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def options(self) -> list[str]:
        return ["--host", self.host, "--port", self.port]

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with client:
                self.connections += 1
                client.settimeout(5)
                with contextlib.suppress(OSError, ValueError):  # the client gave up: what it sent is recorded
                    self._pose(client)

    def _pose(self, client: socket.socket) -> None:
        code = self._request(client)
        if code == _GSSENC_REQUEST:  # libpq asks for GSSAPI first when it has Kerberos credentials
            client.sendall(b"N")
            code = self._request(client)
        if code != _SSL_REQUEST:
            return
        client.sendall(b"S")
        with self._context.wrap_socket(client, server_side=True) as session:
            self.handshakes += 1
            self._record(session.recv(65536))  # the startup message: user and database
            session.sendall(_AUTHENTICATION_CLEARTEXT_PASSWORD)
            self._record(session.recv(65536))  # the password message, if the client trusts us

    def _request(self, client: socket.socket) -> int:
        head = client.recv(8)
        self._record(head)
        return struct.unpack("!ii", head)[1] if len(head) == 8 else 0

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.received += data


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Impostor]:
    server = Impostor(tmp_path / "impostor-ca")
    yield server
    server.close()


@pytest.fixture
def default_trust(emulator_environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, None]:
    """The emulator's IMDS for tokens, and no CA of the emulator's nor its loopback PGHOSTADDR: what a user
    without TLS options has."""
    monkeypatch.delenv("PGSSLROOTCERT")
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    return {"PGSSLROOTCERT": None, "PGSSLMODE": None, "PGPASSWORD": None, "PGHOSTADDR": None}


def leaked(impostor: Impostor) -> bool:
    return bool(JWT.search(impostor.received)) or ADMIN_PASSWORD.encode() in impostor.received


def assert_refused_before_sending_a_secret(impostor: Impostor, result: Any) -> None:
    assert impostor.connections >= 1, "the client never reached the impostor"
    assert impostor.handshakes == 0 and not leaked(impostor), bytes(impostor.received)
    assert result.returncode != 0
    assert "certificate verify failed" in result.stderr, result.stderr


# name: (the command's words, its other options, its environment)
COMMANDS: dict[str, tuple[list[str], list[str], dict[str, str]]] = {
    "role list (Entra admin token)": (["role", "list"], ["--admin-user", "aadadmin"], {}),
    "role create (PGPASSWORD)": (
        ["role", "create"],
        ["--admin-user", "aadadmin", "--name", "app", "--client-id", EXISTING_CLIENT_ID],
        {"PGPASSWORD": ADMIN_PASSWORD},
    ),
    "check": (["check"], ["--user", "myuser", "--client-id", EXISTING_CLIENT_ID], {}),
    "psql": (["psql"], ["--user", "myuser", "--client-id", EXISTING_CLIENT_ID, "--", "-c", "select 1"], {}),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_send_no_secret_to_an_impostor_by_default(
    emulator: Any, default_trust: dict[str, None], impostor: Impostor, command: str
) -> None:
    words, options, env = COMMANDS[command]

    result = emulator.run(*words, *impostor.options(), *options, env={**default_trust, **env})

    assert_refused_before_sending_a_secret(impostor, result)
    assert "warning" not in result.stderr.lower()


@pytest.mark.parametrize("command", ["role list (Entra admin token)", "check"])
def test_sslmode_require_warns_and_the_impostor_gets_the_token(
    emulator: Any, default_trust: dict[str, None], impostor: Impostor, command: str
) -> None:
    words, options, env = COMMANDS[command]

    result = emulator.run(*words, *impostor.options(), "--sslmode", "require", *options, env=default_trust)

    assert "--sslmode require: the server's certificate is not verified" in result.stderr
    assert "bearer credential" in result.stderr
    assert impostor.handshakes >= 1 and JWT.search(impostor.received)


def test_the_default_checks_the_host_name(emulator: Any, default_trust: dict[str, None], tmp_path: Path) -> None:
    # A certificate from a CA the client trusts, but for other names than the host it was asked for.
    impostor = Impostor(tmp_path / "impostor-ca", host="127.0.0.2")
    try:
        args = ["check", *impostor.options(), "--user", "myuser", "--client-id", EXISTING_CLIENT_ID]
        verified = emulator.run(*args, "--sslrootcert", impostor.ca_path, env=default_trust)
        # libpq compares the names once the handshake is done, and then sends nothing.
        assert impostor.handshakes >= 1 and not leaked(impostor)
        assert verified.returncode == 1 and 'does not match host name "127.0.0.2"' in verified.stderr

        chain_only = emulator.run(*args, "--sslrootcert", impostor.ca_path, "--sslmode", "verify-ca", env=default_trust)
        assert "--sslmode verify-ca: the server's host name is not checked" in chain_only.stderr
        assert JWT.search(impostor.received)
    finally:
        impostor.close()


def test_the_library_sends_no_token_to_an_impostor_by_default(
    default_trust: dict[str, None], impostor: Impostor
) -> None:
    import psycopg_pool

    with pytest.raises(DatabaseError, match="the TLS connection to the server failed"):
        provision.connect(impostor.host, "myuser", client_id=EXISTING_CLIENT_ID, port=int(impostor.port))
    with (
        provision.pool(
            impostor.host, "myuser", client_id=EXISTING_CLIENT_ID, port=int(impostor.port), open=False
        ) as pool,
        pytest.raises(psycopg_pool.PoolTimeout),
    ):
        pool.open(wait=True, timeout=3)

    assert impostor.connections >= 2
    assert impostor.handshakes == 0 and not leaked(impostor)


def test_the_library_warns_under_sslmode_require(
    default_trust: dict[str, None], impostor: Impostor, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DatabaseError):
        provision.connect(
            impostor.host, "myuser", client_id=EXISTING_CLIENT_ID, port=int(impostor.port), sslmode="require"
        )

    assert "sslmode=require: the server's certificate is not verified" in caplog.text
    assert JWT.search(impostor.received)
