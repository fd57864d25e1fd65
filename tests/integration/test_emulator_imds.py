"""The emulated Instance Metadata Service of myVM: azure-identity's ManagedIdentityCredential against it,
and raw HTTP where the wire shape matters."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient

from provision.emulator import seed
from provision.emulator.arm.world import EXISTING_CLIENT_ID, EXISTING_PRINCIPAL_ID
from provision.emulator.keys import Authority

pytestmark = pytest.mark.integration

RG = seed.RESOURCE_GROUP
SUB = seed.SUBSCRIPTION_ID
DATABASE_SCOPE = seed.DATABASE_AUDIENCE + "/.default"
EXISTING_ID = (
    f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
    + seed.EXISTING_IDENTITY_NAME
)


@pytest.fixture
def env(fresh_emulator, emulator_environ):
    return emulator_environ


def claims_of(token: str, directory) -> dict:
    return Authority.load_or_create(directory).verify_token(token, (seed.DATABASE_AUDIENCE,))


def token_request(env, headers=None, **params) -> requests.Response:
    return requests.get(
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/metadata/identity/oauth2/token",
        params={"api-version": "2018-02-01", **params},
        headers={"Metadata": "true"} if headers is None else headers,
        timeout=30,
    )


def compute(env, credential=None) -> ComputeManagementClient:
    return ComputeManagementClient(
        credential or ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"], polling_interval=0.05
    )


def create_identity(env, name: str):
    client = ManagedServiceIdentityClient(ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"])
    return client.user_assigned_identities.create_or_update(RG, name, {"location": seed.LOCATION})


def set_vm_identity(env, identity: dict, credential=None) -> None:
    compute(env, credential).virtual_machines.begin_update(RG, seed.VM_NAME, {"identity": identity}).result()


def test_the_answer_has_the_real_shape_with_string_numbers(env, fresh_emulator):
    response = token_request(env, resource=seed.DATABASE_AUDIENCE)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    }
    assert all(isinstance(body[k], str) for k in ("expires_in", "expires_on", "ext_expires_in", "not_before"))
    assert (body["resource"], body["token_type"], body["expires_in"]) == (seed.DATABASE_AUDIENCE, "Bearer", "86399")
    assert int(body["expires_on"]) - int(body["not_before"]) == 86399


def test_no_identity_named_gives_the_operator(env, fresh_emulator):
    token = ManagedIdentityCredential().get_token(DATABASE_SCOPE).token
    claims = claims_of(token, fresh_emulator.directory)
    assert claims["aud"] == seed.DATABASE_AUDIENCE
    assert claims["iss"] == seed.ISSUER and claims["tid"] == seed.TENANT_ID
    assert (claims["appid"], claims["oid"], claims["sub"]) == (
        seed.OPERATOR_CLIENT_ID,
        seed.OPERATOR_PRINCIPAL_ID,
        seed.OPERATOR_PRINCIPAL_ID,
    )
    assert claims["xms_mirid"].lower().endswith("/providers/microsoft.compute/virtualmachines/myvm")
    assert claims["iat"] <= claims["nbf"] < claims["exp"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


@pytest.mark.parametrize(
    "credential",
    [
        lambda: ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID),
        lambda: ManagedIdentityCredential(identity_config={"object_id": EXISTING_PRINCIPAL_ID}),
        lambda: ManagedIdentityCredential(
            identity_config={"resource_id": EXISTING_ID.replace("resourcegroups", "resourceGroups")}
        ),
    ],
    ids=["client_id", "object_id", "msi_res_id"],
)
def test_a_user_assigned_identity_is_picked_by_any_id(env, fresh_emulator, credential):
    claims = claims_of(credential().get_token(DATABASE_SCOPE).token, fresh_emulator.directory)
    assert (claims["appid"], claims["oid"], claims["xms_mirid"]) == (
        EXISTING_CLIENT_ID,
        EXISTING_PRINCIPAL_ID,
        EXISTING_ID,
    )


def test_the_token_verifies_with_the_published_jwks(env):
    token = ManagedIdentityCredential().get_token(DATABASE_SCOPE).token
    keys = requests.get(env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] + "/jwks", timeout=30).json()
    (key,) = [k for k in keys["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=seed.DATABASE_AUDIENCE)
    assert claims["appid"] == seed.OPERATOR_CLIENT_ID


def test_unknown_client_id_is_refused(env):
    unknown = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        ManagedIdentityCredential(client_id=unknown).get_token(DATABASE_SCOPE)
    response = token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=unknown)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "Identity not found"}


@pytest.mark.parametrize(
    ("headers", "params", "error"),
    [
        ({}, {"resource": seed.DATABASE_AUDIENCE}, "invalid_request"),
        ({"Metadata": "true"}, {}, "invalid_request"),
        ({"Metadata": "true"}, {"resource": "https://vault.example"}, "invalid_resource"),
        (
            {"Metadata": "true"},
            {"resource": seed.DATABASE_AUDIENCE, "client_id": "a", "object_id": "b"},
            "invalid_request",
        ),
    ],
    ids=["no-metadata-header", "no-resource", "unknown-resource", "two-selectors"],
)
def test_bad_requests_get_400(env, headers, params, error):
    response = token_request(env, headers=headers, **params)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_only_attached_identities_get_tokens(env, fresh_emulator):
    created = create_identity(env, "id-app")
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        ManagedIdentityCredential(client_id=created.client_id).get_token(DATABASE_SCOPE)
    attach = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {created.id: {}}}
    poller = compute(env).virtual_machines.begin_update(RG, seed.VM_NAME, {"identity": attach})
    # Not while the update is still running ...
    assert token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=created.client_id).status_code == 400
    poller.result()
    # ... but once it has succeeded.
    token = ManagedIdentityCredential(client_id=created.client_id).get_token(DATABASE_SCOPE).token
    claims = claims_of(token, fresh_emulator.directory)
    assert (claims["appid"], claims["oid"]) == (created.client_id, created.principal_id)
    detach = {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {created.id: None}}
    set_vm_identity(env, detach)
    assert token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=created.client_id).status_code == 400


def test_without_a_system_assigned_identity(env, fresh_emulator):
    # One user-assigned identity left: it is the default, as on a real VM. It calls Resource Manager from
    # here on, so it needs a role there, as in Azure.
    fresh_emulator.grant(EXISTING_PRINCIPAL_ID, "Contributor", f"/subscriptions/{SUB}/resourceGroups/{RG}")
    set_vm_identity(env, {"type": "UserAssigned"})
    assert token_request(env, resource=seed.DATABASE_AUDIENCE).json()["client_id"] == EXISTING_CLIENT_ID
    # Two: the request must say which.
    created = create_identity(env, "id-app")
    set_vm_identity(env, {"type": "UserAssigned", "userAssignedIdentities": {created.id: {}}})
    response = token_request(env, resource=seed.DATABASE_AUDIENCE)
    assert response.status_code == 400
    assert "Multiple user assigned identities" in response.json()["error_description"]
    # The operator's client id no longer names anything.
    operator = token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=seed.OPERATOR_CLIENT_ID)
    assert operator.json()["error_description"] == "Identity not found"
    # None at all (the operator has no token any more: someone else removes them).
    set_vm_identity(env, {"type": "None"}, ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID))
    assert token_request(env, resource=seed.DATABASE_AUDIENCE).json()["error_description"] == "Identity not found"


def test_a_deleted_identity_gets_no_token(env):
    client = ManagedServiceIdentityClient(ManagedIdentityCredential(), SUB, base_url=env["PROVISION_ARM_ENDPOINT"])
    client.user_assigned_identities.delete(RG, seed.EXISTING_IDENTITY_NAME)
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID).get_token(DATABASE_SCOPE)


def test_token_lifetime_and_request_count(env, fresh_emulator):
    fresh_emulator.set_token_lifetime(600)
    mark = fresh_emulator.mark()
    credential = ManagedIdentityCredential()
    first = credential.get_token(DATABASE_SCOPE)
    credential.get_token(DATABASE_SCOPE)  # cached by MSAL: no second request
    assert fresh_emulator.token_requests(since=mark) == 1
    claims = claims_of(first.token, fresh_emulator.directory)
    assert claims["exp"] - claims["iat"] == 600
    # Under 5 minutes left counts as expired for MSAL: every call asks again.
    fresh_emulator.set_token_lifetime(120)
    short = ManagedIdentityCredential()
    short.get_token(DATABASE_SCOPE)
    short.get_token(DATABASE_SCOPE)
    assert fresh_emulator.token_requests(since=mark) == 3


def test_the_request_log_has_imds_requests_without_tokens(env, fresh_emulator):
    mark = fresh_emulator.mark()
    ManagedIdentityCredential(client_id=EXISTING_CLIENT_ID).get_token(DATABASE_SCOPE)
    (entry,) = fresh_emulator.requests(since=mark, service="imds")
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/metadata/identity/oauth2/token", 200)
    assert entry["query"]["client_id"] == EXISTING_CLIENT_ID
    assert entry["query"]["resource"] == seed.DATABASE_AUDIENCE
    assert entry["headers"]["Metadata"] == "true"


def test_a_database_token_is_refused_by_resource_manager(env):
    token = ManagedIdentityCredential().get_token(DATABASE_SCOPE).token
    response = requests.get(
        env["PROVISION_ARM_ENDPOINT"] + f"/subscriptions/{SUB}",
        params={"api-version": "2022-12-01"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


# -- IMDS's habits: a new identity is served late; 410, 429 and 500 on demand -----------------------------


def set_identity_delay(emulator, seconds: float) -> None:
    emulator.admin("PATCH", "settings", {"imds_identity_delay": seconds})


def test_a_newly_attached_identity_is_not_found_for_the_delay(env, fresh_emulator):
    set_identity_delay(fresh_emulator, 1.5)
    created = create_identity(env, "id-late")
    set_vm_identity(env, {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {created.id: {}}})

    early = token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=created.client_id)
    # Identities attached before the update are served as ever.
    existing = token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=EXISTING_CLIENT_ID)
    time.sleep(1.5)
    late = token_request(env, resource=seed.DATABASE_AUDIENCE, client_id=created.client_id)

    assert (early.status_code, early.json()) == (
        400,
        {"error": "invalid_request", "error_description": "Identity not found"},
    )
    assert existing.status_code == 200
    assert late.status_code == 200 and late.json()["client_id"] == created.client_id


def test_the_identity_delay_is_a_setting_that_reset_clears(fresh_emulator):
    assert fresh_emulator.admin("GET", "settings")["imds_identity_delay"] == 0
    set_identity_delay(fresh_emulator, 15)
    assert fresh_emulator.admin("GET", "settings")["imds_identity_delay"] == 15
    fresh_emulator.reset()
    assert fresh_emulator.admin("GET", "settings")["imds_identity_delay"] == 0


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [("updating", 410, "service_updating"), ("throttle", 429, "too_many_requests"), ("server_error", 500, "unknown")],
)
def test_faults_answer_in_the_metadata_services_shape(env, fresh_emulator, kind, status, error):
    fresh_emulator.fault(kind, "/metadata/identity/oauth2/token", service="imds", retry_after=3)

    faulty = token_request(env, resource=seed.DATABASE_AUDIENCE)
    after = token_request(env, resource=seed.DATABASE_AUDIENCE)

    assert faulty.status_code == status
    assert set(faulty.json()) == {"error", "error_description"} and faulty.json()["error"] == error
    assert faulty.headers.get("Retry-After") == ("3" if kind == "throttle" else None)
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"imds_identity_delay": -1}, "imds_identity_delay must be >= 0"),
        ({"imds_identity_delay": "soon"}, "could not convert"),
        ({"identity_delay": 1}, "settings are operation_seconds"),
    ],
)
def test_bad_identity_delays_are_refused(fresh_emulator, body, message):
    with pytest.raises(AssertionError, match=message):
        fresh_emulator.admin("PATCH", "settings", body)
    assert fresh_emulator.admin("GET", "settings")["imds_identity_delay"] == 0


def test_the_updating_fault_is_for_the_metadata_service_only(fresh_emulator):
    with pytest.raises(AssertionError, match="InvalidFault"):
        fresh_emulator.fault("updating", service="arm")
    assert fresh_emulator.faults() == []


def test_a_burst_of_clients_is_served_at_once_not_left_in_tcp_retransmissions(env) -> None:
    # 100 tasks asking at the same moment (azure-postgresql-auth's async connections each do): every
    # connection is accepted and answered; with socketserver's 5 waiting connections, the kernel dropped
    # the rest's handshakes and they hung for minutes.
    import selectors
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(env["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    request = b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1\r\nHost: x\r\n\r\n"
    clients = [socket.socket() for _ in range(200)]
    for client in clients:
        client.setblocking(False)
        client.connect_ex((address.hostname, address.port))
    waiting = selectors.DefaultSelector()
    for client in clients:
        waiting.register(client, selectors.EVENT_WRITE)
    answered: set[socket.socket] = set()
    deadline = time.monotonic() + 10  # answered in milliseconds, or stuck for minutes
    while len(answered) < len(clients) and time.monotonic() < deadline:
        for key, events in waiting.select(timeout=1):
            client = key.fileobj
            assert isinstance(client, socket.socket)
            if events & selectors.EVENT_WRITE:
                client.sendall(request)
                waiting.modify(client, selectors.EVENT_READ)
            elif client.recv(64).startswith(b"HTTP/1."):
                answered.add(client)
                waiting.unregister(client)
    for client in clients:
        client.close()

    assert len(answered) == len(clients)
