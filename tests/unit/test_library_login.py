"""A login's connection settings: fixed ones built once, what stays per connection (the token, the user it
names, connect_timeout within the budget)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from provision import deadline
from provision.azure import imds
from provision.db.login import TokenLogin

MIRID = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}"


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
    given.update(arguments)
    return TokenLogin(*given.values(), False)


def jwt_token(identity: str, expires_in: float = 3600.0) -> imds.ManagedIdentityToken:
    import jwt

    now = time.time()
    text = jwt.encode({"xms_mirid": MIRID.format(identity)}, "k" * 32, algorithm="HS256")
    return imds.ManagedIdentityToken(text, int(now + expires_in), now, "https://r", None)


def test_each_role_a_token_names_gets_its_target_and_keeps_it() -> None:
    derived = login(user=None)

    assert derived.target(jwt_token("first")) is derived.target(jwt_token("first"))
    assert derived.target(jwt_token("second")).user == "second"
    assert derived.target(jwt_token("first")).user == "first"


def test_a_login_gets_each_connections_token_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    kept = login()
    first, later = jwt_token("app"), jwt_token("app", expires_in=7200)

    assert kept.connect_kwargs(first)["password"] == first.token
    monkeypatch.setattr(deadline, "_current", deadline.Deadline(4.0, clock=lambda: 0.0))
    kwargs = kept.connect_kwargs(later)

    assert kwargs["password"] == later.token
    assert kwargs["connect_timeout"] == 4
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["keepalives_idle"] == 30
