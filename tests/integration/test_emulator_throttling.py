"""The emulated Resource Manager throttles like Azure: a token bucket per subscription (or tenant), per principal
and per operation type, answered with Azure's 429 and Retry-After; limits set small through the settings route."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import requests
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.mgmt.msi import ManagedServiceIdentityClient
from test_directory_ci import ci_secret

from provision.emulator import seed

pytestmark = pytest.mark.integration

SUB = seed.SUBSCRIPTION_ID
ARM_SCOPE = "https://management.azure.com/.default"
IDENTITIES = (
    f"/subscriptions/{SUB}/resourceGroups/{seed.RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity"
    "/userAssignedIdentities"
)
EXISTING = f"{IDENTITIES}/{seed.EXISTING_IDENTITY_NAME}"
API_VERSION = "2023-01-31"
AZURE_LIMITS = {
    "reads": {"bucket": 250, "refill": 25.0},
    "writes": {"bucket": 200, "refill": 10.0},
    "deletes": {"bucket": 200, "refill": 10.0},
}


@pytest.fixture
def env(fresh_emulator: Any, emulator_environ: dict[str, str]) -> Any:
    yield emulator_environ
    fresh_emulator.reset()  # Azure's limits again for the tests after these


def operator_token() -> str:
    return ManagedIdentityCredential().get_token(ARM_SCOPE).token


def ci_token(emulator: Any) -> str:
    credential = ClientSecretCredential(
        emulator.env["PROVISION_TENANT_ID"],
        emulator.env["PROVISION_CI_CLIENT_ID"],
        ci_secret(emulator),
        authority=emulator.env["PROVISION_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    return credential.get_token(ARM_SCOPE).token


def call(
    env: dict[str, str], method: str, path: str, token: str, body: Any = None, api_version: str = API_VERSION
) -> requests.Response:
    return requests.request(
        method,
        env["PROVISION_ARM_ENDPOINT"] + path,
        params={"api-version": api_version},
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def limit(emulator: Any, **limits: dict[str, float]) -> None:
    emulator.admin("PATCH", "settings", {"rateLimits": limits})


def oid(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["oid"])


def expected_message(kind: str, scope: str, scope_id: str, actor: str, seconds: int) -> str:
    return (
        f"Number of '{kind}' requests for {scope} '{scope_id}' actor '{actor}' exceeded. Please try again after"
        f" '{seconds}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for"
        " additional information."
    )


def test_reads_beyond_the_bucket_get_azures_429_and_are_not_served(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, reads={"bucket": 3, "refill": 0.01})
    mark = fresh_emulator.mark()
    answers = [call(env, "GET", EXISTING, token) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ms-ratelimit-remaining-subscription-reads"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "100"  # one token at 0.01 a second
    assert refused.json() == {
        "error": {
            "code": "SubscriptionRequestsThrottled",
            "message": expected_message("read", "subscription", SUB, oid(token), 100),
        }
    }
    assert "name" not in refused.text  # not the identity
    assert [(r["method"], r["status"]) for r in fresh_emulator.requests(since=mark, service="arm")] == [
        ("GET", 200),
        ("GET", 200),
        ("GET", 200),
        ("GET", 429),
    ]


def test_a_throttled_write_changes_nothing_and_deletes_have_their_own_bucket(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, writes={"bucket": 1, "refill": 0.01}, deletes={"bucket": 1, "refill": 0.01})
    created = call(env, "PUT", f"{IDENTITIES}/first", token, {"location": seed.LOCATION})
    assert created.status_code == 201
    assert created.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    refused = call(env, "PUT", f"{IDENTITIES}/second", token, {"location": seed.LOCATION})
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == expected_message("write", "subscription", SUB, oid(token), 100)
    assert call(env, "GET", f"{IDENTITIES}/second", token).status_code == 404  # never created
    deleted = call(env, "DELETE", f"{IDENTITIES}/first", token)
    assert deleted.status_code == 200
    assert deleted.headers["x-ms-ratelimit-remaining-subscription-deletes"] == "0"
    assert "x-ms-ratelimit-remaining-subscription-writes" not in deleted.headers
    refused_delete = call(env, "DELETE", EXISTING, token)
    assert refused_delete.status_code == 429
    assert "'delete' requests" in refused_delete.json()["error"]["message"]
    assert call(env, "GET", EXISTING, token).status_code == 200  # still there; reads have a bucket of their own


def test_posts_count_as_writes(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, writes={"bucket": 1, "refill": 0.01})
    assert call(env, "PUT", f"{IDENTITIES}/first", token, {"location": seed.LOCATION}).status_code == 201
    posted = call(env, "POST", f"{IDENTITIES}/first", token)
    assert posted.status_code == 429 and "'write' requests" in posted.json()["error"]["message"]


def test_another_principal_has_a_bucket_of_its_own(env: Any, fresh_emulator: Any) -> None:
    mine, theirs = operator_token(), ci_token(fresh_emulator)
    limit(fresh_emulator, reads={"bucket": 1, "refill": 0.01})
    assert call(env, "GET", EXISTING, mine).status_code == 200
    assert call(env, "GET", EXISTING, mine).status_code == 429
    first = call(env, "GET", EXISTING, theirs)
    assert first.status_code == 200, first.text
    again = call(env, "GET", EXISTING, theirs)
    assert again.status_code == 429
    assert oid(theirs) == seed.CI_PRINCIPAL_ID and f"actor '{seed.CI_PRINCIPAL_ID}'" in again.json()["error"]["message"]


def test_tenant_requests_have_their_own_bucket_and_code(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, reads={"bucket": 1, "refill": 0.01})
    listed = call(env, "GET", "/subscriptions", token, api_version="2022-12-01")
    assert listed.status_code == 200
    assert listed.headers["x-ms-ratelimit-remaining-tenant-reads"] == "0"
    refused = call(env, "GET", "/tenants", token, api_version="2022-12-01")
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "code": "TenantRequestsThrottled",
        "message": expected_message("read", "tenant", seed.TENANT_ID, oid(token), 100),
    }
    assert call(env, "GET", EXISTING, token).status_code == 200  # the subscription's bucket is another


def test_metadata_and_admin_routes_take_no_token(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, reads={"bucket": 1, "refill": 0.01})
    for _ in range(3):
        metadata = env["PROVISION_ARM_ENDPOINT"] + "/metadata/endpoints?api-version=2022-09-01"
        assert requests.get(metadata, timeout=30).status_code == 200
        fresh_emulator.admin("GET", "settings")
    assert call(env, "GET", EXISTING, token).status_code == 200


def test_refill_brings_tokens_back(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, reads={"bucket": 1, "refill": 2})
    assert call(env, "GET", EXISTING, token).status_code == 200
    refused = call(env, "GET", EXISTING, token)
    assert refused.status_code == 429
    time.sleep(int(refused.headers["Retry-After"]))
    assert call(env, "GET", EXISTING, token).status_code == 200


def test_reset_restores_azures_limits_and_fills_the_buckets(env: Any, fresh_emulator: Any) -> None:
    token = operator_token()
    limit(fresh_emulator, reads={"bucket": 1, "refill": 0.01})
    assert fresh_emulator.admin("GET", "settings")["rateLimits"]["reads"] == {"bucket": 1, "refill": 0.01}
    call(env, "GET", EXISTING, token)
    assert call(env, "GET", EXISTING, token).status_code == 429
    fresh_emulator.reset()
    assert fresh_emulator.admin("GET", "settings")["rateLimits"] == AZURE_LIMITS
    assert call(env, "GET", EXISTING, token).headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"


def test_the_sdk_gets_through_a_throttle_by_honouring_retry_after(env: Any, fresh_emulator: Any) -> None:
    client = ManagedServiceIdentityClient(ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"])
    limit(fresh_emulator, reads={"bucket": 1, "refill": 1})
    mark = fresh_emulator.mark()
    names = [client.user_assigned_identities.get(seed.RESOURCE_GROUP, seed.EXISTING_IDENTITY_NAME).name for _ in "ab"]
    assert names == [seed.EXISTING_IDENTITY_NAME] * 2
    assert [r["status"] for r in fresh_emulator.requests(since=mark, service="arm")] == [200, 429, 200]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rateLimits": {"reads": {"bucket": 0}}}, "rateLimits.reads.bucket must be a whole number >= 1"),
        ({"rateLimits": {"lists": {"bucket": 3}}}, "rateLimits is"),
        ({"rateLimits": {"reads": {"bucket": 3}}, "operation_seconds": -1}, "operation_seconds must be >= 0"),
        ({"rateLimits": {"writes": {"refill": 0}}, "token_lifetime": 60}, "rateLimits.writes.refill must be"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(fresh_emulator: Any, body: Any, message: str) -> None:
    before = fresh_emulator.admin("GET", "settings")
    with pytest.raises(AssertionError, match=r"400 .*InvalidRequest") as refused:
        fresh_emulator.admin("PATCH", "settings", body)
    assert message in str(refused.value)
    assert fresh_emulator.admin("GET", "settings") == before
