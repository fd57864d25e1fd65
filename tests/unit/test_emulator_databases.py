"""The emulated database servers' pieces that need no server: finding PostgreSQL, and the gateway's
protocol (startup packets, Single Server's setting, SCRAM verifiers)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from provision.db.verifiers import made_from
from provision.emulator.postgres import cluster
from provision.emulator.postgres.gateway import (
    PROTOCOL_3,
    error_response,
    parse_fields,
    parse_startup,
    rewrite_aad_setting,
    startup_message,
)

# What PostgreSQL 15 stored for CREATE ROLE x PASSWORD '5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17'.
CLIENT_ID = "5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17"
VERIFIER = (
    "SCRAM-SHA-256$4096:wywr1vq2uy0mNVOtk3poKg==$dgvv+IvVqY79WZibCZ1POJAGp4hkzqoU32/6eNu+I3Y="
    ":lgD2xIXuR+KCNMdXMui3JVnCuASI6ElRLi0I1E7GSj4="
)


def install(root: Path, *majors: str) -> None:
    for major in majors:
        (root / major / "bin").mkdir(parents=True)
        for program in ("initdb", "postgres"):
            (root / major / "bin" / program).touch()


@pytest.fixture
def roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """Empty stand-ins for PROVISION_POSTGRES_DIRS, the project cache and /usr/lib/postgresql."""
    found = {name: tmp_path / name for name in ("listed", "cache", "debian")}
    monkeypatch.setenv(cluster.SEARCH_PATH_VARIABLE, str(found["listed"]))
    monkeypatch.setattr(cluster, "PROJECT_CACHE", found["cache"])
    monkeypatch.setattr(cluster, "DEBIAN_VERSIONS", found["debian"])
    return found


def test_missing_postgresql_says_what_to_install(roots: dict[str, Path]) -> None:
    with pytest.raises(cluster.EmulatorError) as raised:
        cluster.find_installation()
    assert str(raised.value) == (
        "no PostgreSQL server programs were found for the local database servers:"
        " `make postgres` installs 16, 17 and 18, `apt-get install postgresql` the machine's own."
    )


def test_a_missing_version_names_the_installed_ones_and_how_to_install_it(roots: dict[str, Path]) -> None:
    install(roots["debian"], "15")
    with pytest.raises(cluster.EmulatorError) as raised:
        cluster.find_installation(17)
    assert str(raised.value) == (
        "PostgreSQL 17 is not installed for the local database servers (installed: 15):"
        " `make postgres` installs 16, 17 and 18, `apt-get install postgresql` the machine's own."
    )


def test_newest_supported_postgresql_is_the_default(roots: dict[str, Path]) -> None:
    install(roots["debian"], "9.6", "15", "17")
    install(roots["cache"], "18")
    assert cluster.find_installation() == cluster.Installation(18, roots["cache"] / "18")
    assert list(cluster.installations()) == [15, 17, 18]


def test_search_order_listed_directories_then_the_cache_then_debian(roots: dict[str, Path]) -> None:
    for root in roots.values():
        install(root, "16")
    install(roots["cache"], "17")
    install(roots["debian"], "17", "15")
    found = cluster.installations()
    assert found[16].root == roots["listed"] / "16"
    assert found[17].root == roots["cache"] / "17"
    assert found[15].root == roots["debian"] / "15"


def test_relocatable_builds_find_their_libraries() -> None:
    installation = cluster.Installation(17, Path("/opt/pg/17"))
    assert installation.environment()["LD_LIBRARY_PATH"] == "/opt/pg/17/lib"


def test_startup_message_round_trips() -> None:
    packet = startup_message(PROTOCOL_3, {"user": "myuser@mydemoserver", "database": "postgres", "options": "-c a=b"})
    (length,) = struct.unpack("!I", packet[:4])
    assert length == len(packet)
    assert parse_startup(packet[4:]) == (
        PROTOCOL_3,
        {"user": "myuser@mydemoserver", "database": "postgres", "options": "-c a=b"},
    )


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("!I", PROTOCOL_3) + b"user\0x\0",  # no final terminator
        struct.pack("!I", PROTOCOL_3) + b"user\0\0",  # a key without a value
    ],
)
def test_malformed_startup_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_startup(body)


def test_error_response_carries_severity_code_and_message() -> None:
    packet = error_response("28P01", 'password authentication failed for user "x"')
    assert packet[:1] == b"E"
    assert struct.unpack("!I", packet[1:5])[0] == len(packet) - 1
    assert parse_fields(packet[5:]) == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "28P01",
        "M": 'password authentication failed for user "x"',
    }


WALKTHROUGH = (
    b"SET aad_validate_oids_in_tenant = off;\n"
    b"CREATE ROLE myuser WITH LOGIN PASSWORD 'CLIENT_ID' IN ROLE azure_ad_user;\0"
)


def test_single_server_setting_is_renamed_in_a_simple_query() -> None:
    assert rewrite_aad_setting(b"Q", WALKTHROUGH) == (
        b"SET azure.aad_validate_oids_in_tenant = off;\n"
        b"CREATE ROLE myuser WITH LOGIN PASSWORD 'CLIENT_ID' IN ROLE azure_ad_user;\0"
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"set AAD_VALIDATE_OIDS_IN_TENANT to off", b"set azure.aad_validate_oids_in_tenant to off"),
        (b"SET SESSION aad_validate_oids_in_tenant=off", b"SET SESSION azure.aad_validate_oids_in_tenant=off"),
        (b"SET LOCAL aad_validate_oids_in_tenant = off", b"SET LOCAL azure.aad_validate_oids_in_tenant = off"),
        (b"RESET aad_validate_oids_in_tenant", b"RESET azure.aad_validate_oids_in_tenant"),
        (b"SELECT 1; SET aad_validate_oids_in_tenant = off", b"SELECT 1; SET azure.aad_validate_oids_in_tenant = off"),
        # Only the setting at the start of a statement: data and other names stay as they are.
        (b"SELECT 'aad_validate_oids_in_tenant'", b"SELECT 'aad_validate_oids_in_tenant'"),
        (b"SET aad_validate_oids_in_tenant_x = 1", b"SET aad_validate_oids_in_tenant_x = 1"),
        (b"SET search_path = aad_validate_oids_in_tenant", b"SET search_path = aad_validate_oids_in_tenant"),
    ],
)
def test_single_server_setting_is_renamed_only_where_it_is_set(sql: bytes, expected: bytes) -> None:
    assert rewrite_aad_setting(b"Q", sql + b"\0") == expected + b"\0"


def test_single_server_setting_is_renamed_in_a_parse_message() -> None:
    tail = struct.pack("!h", 0)
    body = b"stmt1\0SET aad_validate_oids_in_tenant = off\0" + tail
    assert rewrite_aad_setting(b"P", body) == b"stmt1\0SET azure.aad_validate_oids_in_tenant = off\0" + tail


def test_other_messages_pass_unchanged() -> None:
    body = b"\0\0\0\0SET aad_validate_oids_in_tenant = off"
    assert rewrite_aad_setting(b"d", body) == body


def test_scram_verifier_matches_the_password_it_was_made_from() -> None:
    assert made_from(VERIFIER, CLIENT_ID, "x")
    assert not made_from(VERIFIER, CLIENT_ID.upper(), "x")


@pytest.mark.parametrize(
    "verifier",
    [
        VERIFIER.replace("dgvv", "Dgvv"),  # another StoredKey
        "md5" + "0" * 32,  # an md5 verifier of another password
        "SCRAM-SHA-256$4096:not base64!$x:y",
        "",
        None,
    ],
)
def test_scram_verifier_refuses_anything_else(verifier: str | None) -> None:
    assert not made_from(verifier, CLIENT_ID, "x")
