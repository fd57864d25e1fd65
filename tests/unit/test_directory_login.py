"""Entra's sign-in endpoints of the emulator on their own (no server): the CI service principal's client
credentials flow and Entra's answers to what is wrong in it; the request log's masking of client secrets; and the
tool's choice to skip MSAL's instance discovery for an authority host of the user's own."""

from __future__ import annotations

from email.message import Message
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from provision.azure.credentials import validates_authority
from provision.db.roles.planning import entra_refusal
from provision.emulator import recording, seed
from provision.emulator.arm.world import World
from provision.emulator.http import Reply, Request
from provision.emulator.keys import Authority
from provision.emulator.login import LoginService
from provision.errors import Conflict, NotFound

TOKEN_PATH = f"/{seed.TENANT_ID}/oauth2/v2.0/token"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> LoginService:
    authority = Authority.load_or_create(tmp_path_factory.mktemp("login"))
    return LoginService(authority, World(operation_seconds=0, token_lifetime=3600))


def ask(service: LoginService, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
    headers = Message()
    headers["Host"] = "127.0.0.1:4444"
    body = urlencode(form).encode() if form is not None else b""
    return service.handle(Request(method, path, {}, headers, body), None)


def token_form(service: LoginService, **changes: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": seed.CI_CLIENT_ID,
        "client_secret": service.ci_secret,
        "scope": seed.ARM_AUDIENCE + ".default",
    }
    return {**form, **changes}


def test_client_credentials_give_a_token_for_the_service_principal(service: LoginService) -> None:
    reply = ask(service, "POST", TOKEN_PATH, token_form(service))
    assert reply.status == 200
    assert (reply.body["token_type"], reply.body["expires_in"]) == ("Bearer", 3600)
    # The audience is the scope's resource, as azure-identity names it (the scope without /.default).
    claims = service.authority.verify_token(reply.body["access_token"], (seed.ARM_AUDIENCE.rstrip("/"),))
    assert (claims["appid"], claims["oid"]) == (seed.CI_CLIENT_ID, seed.CI_PRINCIPAL_ID)


def test_the_openid_configuration_points_msal_at_this_host(service: LoginService) -> None:
    reply = ask(service, "GET", f"/{seed.TENANT_ID}/v2.0/.well-known/openid-configuration")
    base = f"https://127.0.0.1:4444/{seed.TENANT_ID}"
    assert reply.status == 200
    assert reply.body["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert reply.body["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    keys = ask(service, "GET", f"/{seed.TENANT_ID}/discovery/v2.0/keys").body["keys"]
    token = ask(service, "POST", TOKEN_PATH, token_form(service)).body["access_token"]
    assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in keys}


@pytest.mark.parametrize(
    ("changes", "status", "error", "code"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
        ({"client_id": "00000000-0000-0000-0000-000000000001"}, 400, "unauthorized_client", 700016),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"scope": seed.ARM_AUDIENCE}, 400, "invalid_scope", 1002012),
        ({"scope": "https://vault.azure.net/.default"}, 400, "invalid_resource", 500011),
    ],
)
def test_what_is_wrong_in_a_token_request_gets_entras_answer(
    service: LoginService, changes: dict[str, str], status: int, error: str, code: int
) -> None:
    reply = ask(service, "POST", TOKEN_PATH, token_form(service, **changes))
    assert (reply.status, reply.body["error"], reply.body["error_codes"]) == (status, error, [code])
    assert reply.body["error_description"].startswith(f"AADSTS{code}: ")
    assert "access_token" not in reply.body


def test_another_tenant_is_not_found(service: LoginService) -> None:
    reply = ask(service, "POST", "/contoso.onmicrosoft.com/oauth2/v2.0/token", token_form(service))
    assert (reply.status, reply.body["error_codes"]) == (400, [90002])


def test_the_request_log_masks_client_secrets_in_forms() -> None:
    form = "grant_type=client_credentials&client_id=abc&client_secret=s3cr%2Bt&scope=x"
    assert recording.masked(form) == "grant_type=client_credentials&client_id=abc&client_secret=<redacted>&scope=x"
    assert recording.masked({"body": "client_assertion=eyJ.x"}) == {"body": "client_assertion=<redacted>"}
    assert recording.masked("my_client_secret=kept") == "my_client_secret=kept"  # another field


@pytest.mark.parametrize(
    ("authority_host", "validates"),
    [
        (None, True),
        ("", True),
        ("https://login.microsoftonline.com", True),
        ("login.chinacloudapi.cn", True),
        ("https://LOGIN.MICROSOFTONLINE.US/", True),
        ("https://127.0.0.1:4444", False),
        ("https://adfs.local.azurestack.external", False),
        ("https://login.microsoftonline.com.evil.example", False),
    ],
)
def test_instance_discovery_is_for_microsofts_authority_hosts(authority_host: str | None, validates: bool) -> None:
    assert validates_authority(authority_host) is validates


OID = "0b6f1a52-3c1e-4d7a-9f35-6a2e8c4d1b90"


def test_entras_answers_about_an_object_id_read_in_plain_words() -> None:
    unknown = entra_refusal(f"Could not validate AAD user {OID} because its name is not found in the tenant.", OID)
    assert isinstance(unknown, NotFound)
    assert f"tenant has no object with id {OID} (a client id is not an object id)" in unknown.message
    assert unknown.hint and "provision identity show" in unknown.hint and "Nothing was changed" in unknown.hint
    message = "incorrect object type provided for principal, given object type: 'service', actual object type: 'user'"
    wrong: Any = entra_refusal(message, OID)
    assert isinstance(wrong, Conflict)
    assert f"object id {OID} is not a service principal" in wrong.message and message in wrong.message
    assert entra_refusal("division by zero", OID) is None
