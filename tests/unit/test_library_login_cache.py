"""The library checks a set of connection arguments once per process: the logins it keeps, what tells
them apart (every argument, its type, the credential object, the CA variables), and what stays per
connection (the token, the user it names, connect_timeout within the budget)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import provision
from provision import deadline
from provision.azure import imds
from provision.db import connect
from provision.db.login import TokenLogin

CLIENT_ID = "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"
MIRID = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}"


@pytest.fixture(autouse=True)
def no_logins_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "_logins", {})


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("")
    return str(path)


class Credential:
    """A TokenCredential that equals every other one: the login cache must still tell them apart."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no token is requested here")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credential)

    def __hash__(self) -> int:
        return 0


def login(**arguments: Any) -> TokenLogin:
    given: dict[str, Any] = {
        "host": "h.example",
        "user": "app",
        "database": "postgres",
        "client_id": None,
        "cloud": "AzureCloud",
        "port": 5432,
        "sslmode": "verify-full",
        "sslrootcert": None,
        "credential": None,
        "single_server": False,
    }
    asynchronous = arguments.pop("asynchronous", False)
    given.update(arguments)
    return connect._login(*given.values(), {}, asynchronous=asynchronous)


def jwt_token(identity: str, expires_in: float = 3600.0) -> imds.ManagedIdentityToken:
    import jwt

    now = time.time()
    text = jwt.encode({"xms_mirid": MIRID.format(identity)}, "k" * 32, algorithm="HS256")
    return imds.ManagedIdentityToken(text, int(now + expires_in), now, "https://r", None)


def test_the_same_arguments_are_checked_once() -> None:
    assert login() is login()
    assert login(credential=(credential := Credential())) is login(credential=credential)


@pytest.mark.parametrize(
    "changed",
    [
        {"host": "other.example"},
        {"user": "other"},
        {"user": None},
        {"database": "appdb"},
        {"client_id": CLIENT_ID},
        {"cloud": "AzureUSGovernment"},
        {"port": 6432},
        {"sslmode": "require"},
        {"single_server": "myserver"},
        {"asynchronous": True},
    ],
    ids=lambda changed: "-".join(f"{name}={value}" for name, value in changed.items()),
)
def test_a_changed_argument_gets_its_own_login(changed: dict[str, Any]) -> None:
    first = login()
    second = login(**changed)

    assert second is not first
    value = changed.popitem()[1]
    name = next(name for name in vars(second) if getattr(second, name) == value and getattr(first, name) != value)
    assert getattr(login(), name) != value  # and the first arguments still get theirs


def test_a_changed_ca_file_gets_its_own_login(ca_file: str, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text("")
    first = login(sslrootcert=ca_file).target(jwt_token("app"))

    assert login(sslrootcert=str(other)).target(jwt_token("app")).trust_store == str(other)
    assert first.trust_store == ca_file


@pytest.mark.parametrize("variable", ["PGSSLROOTCERT", "SSL_CERT_FILE"])
def test_a_changed_ca_variable_gets_its_own_login(variable: str, ca_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = login().target(jwt_token("app")).trust_store
    monkeypatch.setenv(variable, ca_file)

    assert login().target(jwt_token("app")).trust_store == ca_file != before


def test_a_credential_is_told_apart_by_identity_not_equality() -> None:
    first, second = Credential(), Credential()

    assert first == second
    assert login(credential=second).credential is second
    assert login(credential=first).credential is first


def test_single_server_1_is_refused_although_true_was_accepted() -> None:
    login(host="myserver.postgres.database.azure.com", single_server=True)

    with pytest.raises(provision.InvalidInput, match="^single_server 1: expected True, False or a server name"):
        login(host="myserver.postgres.database.azure.com", single_server=1)


def test_an_argument_that_is_no_dictionary_key_is_refused_as_bad_input() -> None:
    with pytest.raises(provision.InvalidInput, match=r"^single_server \['myserver'\]: expected True, False"):
        login(single_server=["myserver"])


def test_a_refused_login_is_not_kept(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    with pytest.raises(provision.InvalidInput, match="no such file"):
        login(sslrootcert=str(ca))
    ca.write_text("")

    assert login(sslrootcert=str(ca)).sslrootcert == str(ca)


def test_the_logins_kept_are_bounded() -> None:
    for port in range(1, connect._LOGINS_KEPT + 10):
        login(port=port)

    assert len(connect._logins) == connect._LOGINS_KEPT
    assert login(port=connect._LOGINS_KEPT + 9) is login(port=connect._LOGINS_KEPT + 9)


def test_each_role_a_token_names_gets_its_target_and_keeps_it() -> None:
    derived = login(user=None)

    assert derived.target(jwt_token("first")) is derived.target(jwt_token("first"))
    assert derived.target(jwt_token("second")).user == "second"
    assert derived.target(jwt_token("first")).user == "first"


def test_a_kept_login_still_gets_each_connections_token_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = login()
    first, later = jwt_token("app"), jwt_token("app", expires_in=7200)

    assert kept.connect_kwargs(first)["password"] == first.token
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(4.0, clock=lambda: 0.0))
    kwargs = login().connect_kwargs(later)

    assert kwargs["password"] == later.token
    assert kwargs["connect_timeout"] == 4
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["keepalives_idle"] == 30
