"""Federated identity credentials of a user-assigned identity, driven by the real SDK
(azure-mgmt-msi's federated_identity_credentials): the spec's shapes, its validation and limits, and their end
with the identity."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from test_emulator_arm import RG, SUB, create_identity, msi_client, raw

pytestmark = pytest.mark.integration

ISSUER = "https://token.actions.githubusercontent.com"
AUDIENCE = "api://AzureADTokenExchange"


@pytest.fixture
def env(fresh_emulator, emulator_environ):
    return emulator_environ


def credential(subject: str = "repo:org/app:ref:refs/heads/main", issuer: str = ISSUER, audiences=None) -> dict:
    return {"properties": {"issuer": issuer, "subject": subject, "audiences": audiences or [AUDIENCE]}}


def test_create_get_list_replace_and_delete(env, fresh_emulator):
    create_identity(env, "id-ci")
    credentials = msi_client(env).federated_identity_credentials
    mark = fresh_emulator.mark()
    made = credentials.create_or_update(RG, "id-ci", "github-main", credential())
    again = credentials.create_or_update(RG, "id-ci", "GITHUB-MAIN", credential("repo:org/app:environment:prod"))
    assert [r["status"] for r in fresh_emulator.requests(since=mark, service="arm")] == [201, 200]
    assert made.type == "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials"
    assert made.id == (
        f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-ci"
        "/federatedIdentityCredentials/github-main"
    )
    assert (made.issuer, made.audiences) == (ISSUER, [AUDIENCE])
    assert again.name == "github-main" and again.subject == "repo:org/app:environment:prod"
    assert credentials.get(RG, "id-ci", "github-main").subject == "repo:org/app:environment:prod"
    assert [c.name for c in credentials.list(RG, "id-ci")] == ["github-main"]
    credentials.delete(RG, "id-ci", "github-main")
    assert list(credentials.list(RG, "id-ci")) == []
    with pytest.raises(ResourceNotFoundError):
        credentials.get(RG, "id-ci", "github-main")
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    gone = raw(env, "DELETE", f"{path}/id-ci/federatedIdentityCredentials/github-main", api_version="2024-11-30")
    assert gone.status_code == 204


def test_the_credentials_go_with_their_identity(env):
    create_identity(env, "id-ci")
    client = msi_client(env)
    client.federated_identity_credentials.create_or_update(RG, "id-ci", "github-main", credential())
    client.user_assigned_identities.delete(RG, "id-ci")
    with pytest.raises(ResourceNotFoundError):
        list(client.federated_identity_credentials.list(RG, "id-ci"))
    create_identity(env, "id-ci")
    assert list(client.federated_identity_credentials.list(RG, "id-ci")) == []


def test_at_most_twenty_per_identity(env):
    create_identity(env, "id-ci")
    credentials = msi_client(env).federated_identity_credentials
    for n in range(20):
        credentials.create_or_update(RG, "id-ci", f"fic-{n}", credential(f"subject-{n}"))
    credentials.create_or_update(RG, "id-ci", "fic-0", credential("subject-0-again"))  # replacing is no 21st
    with pytest.raises(HttpResponseError) as refused:
        credentials.create_or_update(RG, "id-ci", "fic-20", credential("subject-20"))
    assert refused.value.status_code == 400 and "20 federated identity credentials" in refused.value.error.message
    assert len(list(credentials.list(RG, "id-ci"))) == 20


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("ab", credential(), "InvalidResourceName"),
        ("-github", credential(), "InvalidResourceName"),
        ("github", {}, "BadRequest"),
        ("github", credential(issuer="http://token.actions.githubusercontent.com"), "BadRequest"),
        ("github", credential(issuer=" https://issuer"), "BadRequest"),
        ("github", credential(subject=""), "BadRequest"),
        ("github", credential(subject="s" * 601), "BadRequest"),
        ("github", credential(audiences=[AUDIENCE, "api://other"]), "BadRequest"),
        ("github", {"properties": {"issuer": ISSUER, "subject": "s", "audiences": []}}, "BadRequest"),
        ("github", {"properties": {"issuer": ISSUER, "subject": "s"}}, "BadRequest"),
        ("github", credential("repo:org/app:ref:refs/heads/main"), "BadRequest"),  # the same issuer and subject
    ],
)
def test_a_refused_credential_changes_nothing(env, name, body, code):
    create_identity(env, "id-ci")
    credentials = msi_client(env).federated_identity_credentials
    credentials.create_or_update(RG, "id-ci", "existing", credential())
    with pytest.raises(HttpResponseError) as refused:
        credentials.create_or_update(RG, "id-ci", name, body)
    assert (refused.value.status_code, refused.value.error.code) == (400, code)
    assert [(c.name, c.subject) for c in credentials.list(RG, "id-ci")] == [
        ("existing", "repo:org/app:ref:refs/heads/main")
    ]


def test_an_identity_that_does_not_exist_has_no_credentials(env):
    with pytest.raises(ResourceNotFoundError) as missing:
        msi_client(env).federated_identity_credentials.create_or_update(RG, "nobody", "github", credential())
    assert missing.value.error.code == "ResourceNotFound"
