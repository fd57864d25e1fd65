"""The emulated Resource Manager, driven by the real SDK clients (azure-mgmt-msi, azure-mgmt-compute) with
tokens from the emulated Instance Metadata Service, and by raw HTTPS where the wire matters."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
import requests
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from cryptography.hazmat.primitives.asymmetric import rsa

from provision.emulator import seed
from provision.emulator.keys import Authority

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
SUB = seed.SUBSCRIPTION_ID
VM_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{seed.VM_NAME}"
IDENTITIES_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"


class StaticToken:
    """A credential that always presents the same token (to see what the emulator does with it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def env(fresh_emulator, emulator_environ):
    return emulator_environ


def msi_client(env, credential=None, **kwargs) -> ManagedServiceIdentityClient:
    return ManagedServiceIdentityClient(
        credential or ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"], **kwargs
    )


def compute_client(env, credential=None, **kwargs) -> ComputeManagementClient:
    kwargs.setdefault("polling_interval", 0.05)
    return ComputeManagementClient(
        credential or ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"], **kwargs
    )


def create_identity(env, name: str) -> str:
    return msi_client(env).user_assigned_identities.create_or_update(RG, name, {"location": seed.LOCATION}).id


def user_ids(machine) -> list[str]:
    return sorted(k.lower() for k in (machine.identity.user_assigned_identities or {}))


def attach(identity_id: str) -> dict:
    return {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {identity_id: {}}}}


def arm_token() -> str:
    return ManagedIdentityCredential().get_token("https://management.azure.com/.default").token


def raw(env, method: str, path: str, body=None, headers=None, api_version="2026-04-01") -> requests.Response:
    """One HTTPS request with the operator's token, as the SDK would send it."""
    return requests.request(
        method,
        env["PROVISION_ARM_ENDPOINT"] + path,
        params={"api-version": api_version},
        json=body,
        headers={"Authorization": f"Bearer {arm_token()}", **(headers or {})},
        timeout=30,
    )


# -- user-assigned identities ----------------------------------------------------------------------


def test_put_answers_201_then_200_with_the_same_ids(env, fresh_emulator):
    client = msi_client(env)
    mark = fresh_emulator.mark()
    first = client.user_assigned_identities.create_or_update(
        RG, "id-app", {"location": "westeurope", "tags": {"a": "b"}}
    )
    again = client.user_assigned_identities.create_or_update(
        RG, "id-app", {"location": "westeurope", "tags": {"a": "b"}}
    )
    assert [r["status"] for r in fresh_emulator.requests(since=mark, service="arm")] == [201, 200]
    assert (again.client_id, again.principal_id) == (first.client_id, first.principal_id)
    assert first.tenant_id == seed.TENANT_ID
    assert first.tags == {"a": "b"}
    # Like Azure: lower-case `resourcegroups` in the id, whatever casing the request used.
    assert (
        first.id
        == f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-app"
    )


def test_get_list_and_delete(env):
    client = msi_client(env)
    client.user_assigned_identities.create_or_update(RG, "id-app", {"location": "westeurope"})
    assert client.user_assigned_identities.get("MYRESOURCEGROUP", "ID-APP").name == "id-app"
    names = sorted(i.name for i in client.user_assigned_identities.list_by_resource_group(RG))
    assert names == ["existingIdentity", "id-app"]
    assert raw(env, "DELETE", f"{IDENTITIES_PATH}/id-app", api_version="2024-11-30").status_code == 200
    assert raw(env, "DELETE", f"{IDENTITIES_PATH}/id-app", api_version="2024-11-30").status_code == 204
    with pytest.raises(ResourceNotFoundError) as missing:
        client.user_assigned_identities.get(RG, "id-app")
    assert missing.value.error.code == "ResourceNotFound"


def test_missing_resource_group_and_subscription(env):
    with pytest.raises(ResourceNotFoundError) as no_group:
        msi_client(env).user_assigned_identities.get("otherGroup", "x")
    assert no_group.value.error.code == "ResourceGroupNotFound"
    other = ManagedServiceIdentityClient(
        ManagedIdentityCredential(), "11111111-2222-3333-4444-555555555555", base_url=env["PROVISION_ARM_ENDPOINT"]
    )
    with pytest.raises(ResourceNotFoundError) as no_subscription:
        other.user_assigned_identities.get(RG, "x")
    assert no_subscription.value.error.code == "SubscriptionNotFound"


def test_resource_group_get_and_error_shapes(env):
    group = raw(env, "GET", f"/subscriptions/{SUB}/resourcegroups/myresourcegroup", api_version="2021-04-01")
    assert group.status_code == 200 and group.json()["name"] == RG
    no_version = requests.get(
        env["PROVISION_ARM_ENDPOINT"] + VM_PATH, headers={"Authorization": f"Bearer {arm_token()}"}
    )
    assert (no_version.status_code, no_version.json()["error"]["code"]) == (400, "MissingApiVersionParameter")
    unknown = raw(env, "GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/x")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "InvalidResourceType")
    no_location = raw(env, "PUT", f"{IDENTITIES_PATH}/id-app", body={}, api_version="2024-11-30")
    assert (no_location.status_code, no_location.json()["error"]["code"]) == (400, "LocationRequired")


def test_an_api_version_the_type_does_not_offer_gets_400_and_changes_nothing(env, fresh_emulator):
    """Checked per resource type before the provider sees the request: a compute version is no identity version."""
    refused = raw(env, "PUT", f"{IDENTITIES_PATH}/id-app", body={"location": seed.LOCATION}, api_version="2026-04-01")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "NoRegisteredProviderFound")
    assert (
        "for type 'userAssignedIdentities'. The supported api-versions are '2015-08-31-preview, "
        in (refused.json()["error"]["message"])
    )
    with pytest.raises(ResourceNotFoundError):
        msi_client(env).user_assigned_identities.get(RG, "id-app")
    vm = raw(env, "PATCH", VM_PATH, body={"tags": {"a": "b"}}, api_version="1999-01-01")
    assert (vm.status_code, vm.json()["error"]["code"]) == (400, "NoRegisteredProviderFound")
    assert fresh_emulator.admin("GET", f"machine?kind=virtualMachines&group={RG}&name={seed.VM_NAME}")["tags"] == {}
    group = raw(env, "GET", f"/subscriptions/{SUB}/resourcegroups/{RG}", api_version="2024-11-30")
    assert (group.status_code, group.json()["error"]["code"]) == (400, "InvalidApiVersionParameter")


# -- virtual machines and scale sets ------------------------------------------------------------------


def test_vm_get_has_an_etag_and_the_seed_identities(env):
    vm = compute_client(env).virtual_machines.get(RG, seed.VM_NAME)
    assert vm.etag == '"1"'
    assert vm.identity.type == "SystemAssigned, UserAssigned"
    assert vm.identity.principal_id == seed.OPERATOR_PRINCIPAL_ID
    # The VM lists the identity as it was attached (`resourceGroups`), unlike the identity's own id.
    assert list(vm.identity.user_assigned_identities) == [f"{IDENTITIES_PATH}/{seed.EXISTING_IDENTITY_NAME}"]


def test_patch_merges_and_keeps_the_system_assigned_identity(env):
    identity_id = create_identity(env, "id-app")
    client = compute_client(env)
    vm = client.virtual_machines.get(RG, seed.VM_NAME)
    updated = client.virtual_machines.begin_update(
        RG, seed.VM_NAME, attach(identity_id), etag=vm.etag, match_condition=MatchConditions.IfNotModified
    ).result()
    assert updated.identity.principal_id == seed.OPERATOR_PRINCIPAL_ID
    assert user_ids(updated) == sorted(
        [f"{IDENTITIES_PATH}/{seed.EXISTING_IDENTITY_NAME}".lower(), identity_id.lower()]
    )
    assert updated.provisioning_state == "Succeeded"
    assert updated.etag == '"2"'


def test_null_removes_one_identity(env):
    client = compute_client(env)
    existing = f"{IDENTITIES_PATH}/{seed.EXISTING_IDENTITY_NAME}"
    body = {"identity": {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {existing: None}}}
    with pytest.raises(HttpResponseError) as refused:  # nothing would be left for UserAssigned
        client.virtual_machines.begin_update(RG, seed.VM_NAME, body).result()
    assert refused.value.status_code == 400
    identity_id = create_identity(env, "id-app")
    client.virtual_machines.begin_update(RG, seed.VM_NAME, attach(identity_id)).result()
    vm = client.virtual_machines.begin_update(RG, seed.VM_NAME, body).result()
    assert user_ids(vm) == [identity_id.lower()]
    vm = client.virtual_machines.begin_update(
        RG, seed.VM_NAME, {"identity": {"type": "SystemAssigned", "userAssignedIdentities": None}}
    ).result()
    assert vm.identity.type == "SystemAssigned" and not vm.identity.user_assigned_identities


def test_type_user_assigned_drops_the_system_assigned_identity(env):
    identity_id = create_identity(env, "id-app")
    body = {"identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}}
    vm = compute_client(env).virtual_machines.begin_update(RG, seed.VM_NAME, body).result()
    assert vm.identity.type == "UserAssigned"
    assert vm.identity.principal_id is None
    assert len(user_ids(vm)) == 2


def test_stale_etag_gets_412_and_changes_nothing(env):
    client = compute_client(env)
    vm = client.virtual_machines.get(RG, seed.VM_NAME)
    client.virtual_machines.begin_update(RG, seed.VM_NAME, {"tags": {"owner": "someone"}}).result()
    with pytest.raises(ResourceModifiedError) as stale:
        client.virtual_machines.begin_update(
            RG,
            seed.VM_NAME,
            {"identity": {"type": "None"}},
            etag=vm.etag,
            match_condition=MatchConditions.IfNotModified,
        )
    assert stale.value.error.code == "PreconditionFailed"
    assert client.virtual_machines.get(RG, seed.VM_NAME).identity.type == "SystemAssigned, UserAssigned"


def test_unknown_identity_gets_400_failed_identity_operation(env):
    client = compute_client(env)
    with pytest.raises(HttpResponseError) as refused:
        client.virtual_machines.begin_update(RG, seed.VM_NAME, attach(f"{IDENTITIES_PATH}/nobody"))
    assert (refused.value.status_code, refused.value.error.code) == (400, "FailedIdentityOperation")
    assert client.virtual_machines.get(RG, seed.VM_NAME).etag == '"1"'


def test_patch_starts_an_operation_without_retry_after(env):
    first = raw(env, "PATCH", VM_PATH, body={"tags": {"a": "b"}})
    assert first.status_code == 200
    assert first.json()["properties"]["provisioningState"] == "Updating"
    assert "Retry-After" not in first.headers
    status_url = first.headers["Azure-AsyncOperation"]
    assert status_url.startswith(env["PROVISION_ARM_ENDPOINT"] + f"/subscriptions/{SUB}/providers/Microsoft.Compute/")
    headers = {"Authorization": f"Bearer {arm_token()}"}
    assert requests.get(status_url, headers=headers, timeout=30).json()["status"] == "InProgress"
    # Someone else's update while this one runs is refused, like Compute does.
    second = raw(env, "PATCH", VM_PATH, body={"tags": {"c": "d"}})
    assert second.status_code == 409
    deadline = time.monotonic() + 30
    while (status := requests.get(status_url, headers=headers, timeout=30).json())["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["status"] == "Succeeded" and "endTime" in status


def test_sdk_polls_the_async_operation_then_reads_the_vm(env, fresh_emulator):
    client = compute_client(env)
    mark = fresh_emulator.mark()
    poller = client.virtual_machines.begin_update(RG, seed.VM_NAME, {"tags": {"a": "b"}})
    assert poller.status() == "InProgress"
    assert poller.result().provisioning_state == "Succeeded"
    sent = [(r["method"], r["path"]) for r in fresh_emulator.requests(since=mark, service="arm")]
    assert sent[0] == ("PATCH", VM_PATH)
    polls = sent[1:-1]
    assert polls and all(method == "GET" and "/locations/westeurope/operations/" in path for method, path in polls)
    assert sent[-1] == ("GET", VM_PATH)


def test_scale_set(env):
    client = compute_client(env)
    scale_set = client.virtual_machine_scale_sets.get(RG, seed.VMSS_NAME)
    assert scale_set.upgrade_policy.mode == "Manual"
    assert scale_set.identity is None
    identity_id = create_identity(env, "id-app")
    body = {"identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}}
    updated = client.virtual_machine_scale_sets.begin_update(
        RG, seed.VMSS_NAME, body, etag=scale_set.etag, match_condition=MatchConditions.IfNotModified
    ).result()
    assert updated.identity.type == "UserAssigned"
    assert user_ids(updated) == [identity_id.lower()]


def test_encryption_identity_blocks_removal(env):
    existing = f"{IDENTITIES_PATH}/{seed.EXISTING_IDENTITY_NAME}"
    client = compute_client(env)
    encryption = {"securityProfile": {"encryptionIdentity": {"userAssignedIdentityResourceId": existing}}}
    vm = client.virtual_machines.begin_update(RG, seed.VM_NAME, {"properties": encryption}).result()
    assert vm.security_profile.encryption_identity.user_assigned_identity_resource_id == existing
    with pytest.raises(HttpResponseError) as refused:
        client.virtual_machines.begin_update(RG, seed.VM_NAME, {"identity": {"type": "SystemAssigned"}})
    assert refused.value.status_code == 400 and "encryptionIdentity" in refused.value.message


# -- authentication ---------------------------------------------------------------------------------


def foreign_token() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"aud": seed.ARM_AUDIENCE, "iss": seed.ISSUER, "nbf": now, "exp": now + 600, "oid": "x", "appid": "y"}
    return jwt.encode(claims, key, algorithm="RS256")


def operator_token(directory: Path, audience: str, lifetime: int = 600) -> str:
    operator = {
        "client_id": seed.OPERATOR_CLIENT_ID,
        "principal_id": seed.OPERATOR_PRINCIPAL_ID,
        "resource_id": VM_PATH,
    }
    return Authority.load_or_create(directory).mint_token(audience, operator, lifetime)[0]


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda d: "not-a-jwt", "InvalidAuthenticationToken"),
        (lambda d: foreign_token(), "InvalidAuthenticationToken"),
        (lambda d: operator_token(d, seed.ARM_AUDIENCE, lifetime=-60), "ExpiredAuthenticationToken"),
        (lambda d: operator_token(d, seed.DATABASE_AUDIENCE), "InvalidAuthenticationTokenAudience"),
    ],
    ids=["malformed", "foreign-signature", "expired", "wrong-audience"],
)
def test_bad_tokens_get_401(env, fresh_emulator, make_token, code):
    client = compute_client(env, credential=StaticToken(make_token(fresh_emulator.directory)), retry_total=0)
    with pytest.raises(ClientAuthenticationError) as refused:
        client.virtual_machines.get(RG, seed.VM_NAME)
    assert refused.value.status_code == 401
    assert refused.value.error.code == code


def test_missing_authorization_gets_401_with_a_challenge(env):
    response = requests.get(env["PROVISION_ARM_ENDPOINT"] + VM_PATH, params={"api-version": "2026-04-01"}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("audience", [seed.ARM_AUDIENCE, seed.ARM_AUDIENCE.rstrip("/")])
def test_both_spellings_of_the_audience_are_accepted(env, fresh_emulator, audience):
    token = operator_token(fresh_emulator.directory, audience)
    assert compute_client(env, credential=StaticToken(token)).virtual_machines.get(RG, seed.VM_NAME).name == "myVM"


def test_default_azure_credential_reaches_arm_through_the_emulated_imds(env):
    credential = DefaultAzureCredential(exclude_cli_credential=True, exclude_developer_cli_credential=True)
    assert compute_client(env, credential=credential).virtual_machines.get(RG, seed.VM_NAME).name == "myVM"


def test_the_request_log_redacts_tokens(env, fresh_emulator):
    mark = fresh_emulator.mark()
    compute_client(env).virtual_machines.get(RG, seed.VM_NAME)
    (entry,) = fresh_emulator.requests(since=mark, service="arm")
    assert entry["headers"]["Authorization"] == "<redacted>"
    assert entry["query"] == {"api-version": "2026-04-01"}
    assert (entry["method"], entry["path"], entry["status"], entry["body"]) == ("GET", VM_PATH, 200, None)
    assert "eyJ" not in (fresh_emulator.directory / "requests.jsonl").read_text()


# -- faults ---------------------------------------------------------------------------------------


def statuses(emulator, mark: int) -> list[int | None]:
    return [r["status"] for r in emulator.requests(since=mark, service="arm")]


def test_latency(env, fresh_emulator):
    client = compute_client(env)
    client.virtual_machines.get(RG, seed.VM_NAME)  # the token is fetched before the clock starts
    fresh_emulator.fault("latency", f"*/virtualMachines/{seed.VM_NAME}", "GET", seconds=0.3)
    started = time.monotonic()
    client.virtual_machines.get(RG, seed.VM_NAME)
    assert time.monotonic() - started >= 0.3


def test_throttle_answers_429_with_retry_after_then_the_sdk_succeeds(env, fresh_emulator):
    fresh_emulator.fault("throttle", "*/virtualMachines/*", "GET", retry_after=7)
    response = raw(env, "GET", VM_PATH)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert response.json()["error"]["code"] == "TooManyRequests"
    fresh_emulator.fault("throttle", "*/virtualMachines/*", "GET", retry_after=0)
    mark = fresh_emulator.mark()
    assert compute_client(env).virtual_machines.get(RG, seed.VM_NAME).name == "myVM"
    assert statuses(fresh_emulator, mark) == [429, 200]


def test_server_error_counts_down(env, fresh_emulator):
    fresh_emulator.fault("server_error", "*/virtualMachines/*", count=2)
    client = compute_client(env, retry_total=0)
    for _ in range(2):
        with pytest.raises(HttpResponseError) as failed:
            client.virtual_machines.get(RG, seed.VM_NAME)
        assert failed.value.status_code == 500
    assert fresh_emulator.faults() == []
    assert client.virtual_machines.get(RG, seed.VM_NAME).name == "myVM"


def test_conflict(env, fresh_emulator):
    fresh_emulator.fault("conflict", "*/virtualMachines/*", "PATCH")
    with pytest.raises(ResourceExistsError) as conflict:
        compute_client(env).virtual_machines.begin_update(RG, seed.VM_NAME, {"identity": {"type": "None"}})
    assert (conflict.value.status_code, conflict.value.error.code) == (409, "AnotherOperationInProgress")
    assert compute_client(env).virtual_machines.get(RG, seed.VM_NAME).etag == '"1"'


def test_failed_operation_keeps_the_earlier_identities(env, fresh_emulator):
    client = compute_client(env)
    before = user_ids(client.virtual_machines.get(RG, seed.VM_NAME))
    identity_id = create_identity(env, "id-app")
    fresh_emulator.fault("operation_failed", "*/virtualMachines/*", "PATCH")
    with pytest.raises(HttpResponseError) as failed:
        client.virtual_machines.begin_update(RG, seed.VM_NAME, attach(identity_id)).result()
    assert "InternalExecutionError" in str(failed.value)
    vm = client.virtual_machines.get(RG, seed.VM_NAME)
    assert user_ids(vm) == before
    assert vm.provisioning_state == "Failed"


def test_dropped_connection(env, fresh_emulator):
    fresh_emulator.fault("drop", "*/virtualMachines/*", "GET")
    mark = fresh_emulator.mark()
    with pytest.raises(ServiceResponseError):
        compute_client(env, retry_total=0).virtual_machines.get(RG, seed.VM_NAME)
    assert statuses(fresh_emulator, mark) == [None]
    fresh_emulator.fault("drop", "*/virtualMachines/*", "GET")
    assert compute_client(env).virtual_machines.get(RG, seed.VM_NAME).name == "myVM"


def test_concurrent_change_between_read_and_write(env, fresh_emulator):
    other = create_identity(env, "id-other")
    mine = create_identity(env, "id-mine")
    client = compute_client(env)
    vm = client.virtual_machines.get(RG, seed.VM_NAME)
    fresh_emulator.fault("concurrent_change", "*/virtualMachines/*", "PATCH", identity=other)
    with pytest.raises(ResourceModifiedError):
        client.virtual_machines.begin_update(
            RG, seed.VM_NAME, attach(mine), etag=vm.etag, match_condition=MatchConditions.IfNotModified
        )
    vm = client.virtual_machines.get(RG, seed.VM_NAME)
    assert other.lower() in user_ids(vm) and vm.etag == '"2"'


def test_retry_after_on_the_operation_status_is_honoured(env, fresh_emulator):
    fresh_emulator.fault("retry_after", "*/operations/*", "GET", retry_after=1)
    mark = fresh_emulator.mark()
    started = time.monotonic()
    compute_client(env).virtual_machines.begin_update(RG, seed.VM_NAME, {"tags": {"a": "b"}}).result()
    assert time.monotonic() - started >= 1
    assert [r["fault"] for r in fresh_emulator.requests(since=mark, service="arm")].count("retry_after") == 1


def test_fault_on_imds(env, fresh_emulator):
    fresh_emulator.fault("server_error", "/metadata/identity/oauth2/token", service="imds")
    mark = fresh_emulator.mark()
    assert ManagedIdentityCredential(retry_backoff_factor=0).get_token("https://management.azure.com/.default").token
    assert [r["status"] for r in fresh_emulator.requests(since=mark, service="imds")] == [500, 200]
    assert fresh_emulator.token_requests(since=mark) == 2


def test_admin_refuses_bad_faults_and_settings(fresh_emulator):
    with pytest.raises(AssertionError, match="InvalidFault"):
        fresh_emulator.fault("meteor")
    with pytest.raises(AssertionError, match="InvalidFault"):
        fresh_emulator.fault("latency", colour="red")
    with pytest.raises(AssertionError, match="token_lifetime must be > 0"):
        fresh_emulator.set_token_lifetime(0)
    with pytest.raises(AssertionError, match="NoSuchAdminRoute"):
        fresh_emulator.admin("GET", "nothing")


def test_reset_brings_back_the_seed_and_clears_faults(env, fresh_emulator):
    create_identity(env, "id-app")
    compute_client(env).virtual_machines.begin_update(RG, seed.VM_NAME, {"identity": {"type": "None"}}).result()
    fresh_emulator.fault("server_error", count=None)
    fresh_emulator.set_operation_seconds(3)
    fresh_emulator.reset()
    assert fresh_emulator.faults() == []
    assert fresh_emulator.admin("GET", "settings")["operation_seconds"] == 0.5
    vm = compute_client(env).virtual_machines.get(RG, seed.VM_NAME)
    assert vm.etag == '"1"' and vm.identity.type == "SystemAssigned, UserAssigned"
    assert [i.name for i in msi_client(env).user_assigned_identities.list_by_resource_group(RG)] == ["existingIdentity"]
