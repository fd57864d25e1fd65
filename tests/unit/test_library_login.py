"""Pure decisions of the library's token login: user names from token claims, Single Server's
@server, validation with the library's argument names, and the cache per credential object."""

from __future__ import annotations

from typing import Any

import pytest

import provision
from provision.azure import imds
from provision.db.login import TokenLogin, login_user, single_server_name, user_from_claims

MIRID = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/myIdentity"
VM_MIRID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/myVM"


def claims(**values: Any) -> imds.TokenClaims:
    return imds.TokenClaims(
        **{"aud": None, "appid": None, "oid": None, "tid": None, "exp": None, "xms_mirid": None, **values}
    )


def test_a_user_assigned_identity_logs_in_under_its_name() -> None:
    assert user_from_claims(claims(xms_mirid=MIRID, upn="someone@example.com")) == "myIdentity"


def test_a_person_logs_in_under_their_upn() -> None:
    assert user_from_claims(claims(upn="alice@contoso.com", unique_name="other")) == "alice@contoso.com"
    assert user_from_claims(claims(preferred_username="bob@contoso.com")) == "bob@contoso.com"


def test_a_system_assigned_identity_logs_in_under_its_resources_name() -> None:
    assert user_from_claims(claims(xms_mirid=VM_MIRID)) == "myVM"


def test_a_token_without_a_name_asks_for_user() -> None:
    with pytest.raises(provision.InvalidInput, match="pass user="):
        user_from_claims(claims(oid="x"))
    with pytest.raises(provision.InvalidInput, match="not a JWT"):
        user_from_claims(None)


def test_single_server_names() -> None:
    assert single_server_name("MyServer.postgres.database.azure.com", True) == "myserver"
    assert single_server_name("s1.postgres.database.chinacloudapi.cn", True) == "s1"
    assert single_server_name("10.0.0.4", "demo-single") == "demo-single"
    assert single_server_name("myserver.postgres.database.azure.com", False) is None
    assert login_user("app", "myserver") == "app@myserver"
    assert login_user("app@MyServer", "myserver") == "app@MyServer"
    assert login_user("alice@contoso.com", "myserver") == "alice@contoso.com@myserver"
    assert login_user("app", None) == "app"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"host": "10.0.0.4", "single_server": True}, "single_server=True: host '10.0.0.4' is not SERVER."),
        ({"single_server": "no way"}, "single_server 'no way': expected True, False or a server name"),
        ({"host": "bad host"}, "host 'bad host': expected a host name"),
        ({"port": 0}, "port '0': expected a port number"),
        ({"user": ""}, "user '': expected a role name, or None"),
        ({"database": ""}, "database '': expected a database name"),
        ({"sslmode": "prefer"}, "sslmode prefer: refused"),
        ({"sslrootcert": "/nonexistent/ca.pem"}, "sslrootcert '/nonexistent/ca.pem': no such file"),
        ({"client_id": "nope"}, "client_id 'nope': expected a GUID"),
        ({"cloud": "Mars"}, "unknown cloud 'Mars'"),
        ({"credential": object()}, "credential object: expected an azure-identity TokenCredential"),
        (
            {"credential": imds, "client_id": "8d0c3c37-4e1c-4d5e-9a52-6f1f2b0f4a11"},
            "client_id picks a managed identity of this VM",
        ),
    ],
)
def test_bad_arguments_are_refused_with_the_librarys_names(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(provision.InvalidInput, match="^" + message.replace("(", r"\(").replace(".", r"\.")) as raised:
        TokenLogin(**{"host": "h.example", **arguments})

    assert "--" not in raised.value.message


class CountingCredential:
    """A TokenCredential: azure-core's protocol is get_token(*scopes) -> AccessToken."""

    def __init__(self, name: str) -> None:
        self.name, self.scopes = name, []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(f"{self.name}-{len(self.scopes)}", 4_000_000_000)


def test_tokens_are_cached_per_credential_object_and_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    first, second = CountingCredential("first"), CountingCredential("second")

    assert provision.access_token(credential=first) == "first-1"
    assert provision.access_token(credential=first) == "first-1"
    assert provision.access_token(credential=second) == "second-1"
    assert provision.access_token(credential=first, cloud="AzureUSGovernment") == "first-2"
    assert first.scopes == [
        ("https://ossrdbms-aad.database.windows.net/.default",),
        ("https://ossrdbms-aad.database.usgovcloudapi.net/.default",),
    ]


def test_a_credential_that_fails_is_a_credential_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Failing:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError("AADSTS700016: no such application")

    monkeypatch.setattr(imds, "_cache", imds.TokenCache())
    with pytest.raises(provision.CredentialError, match="^Failing gave no token for https://ossrdbms-aad"):
        provision.access_token(credential=Failing())
