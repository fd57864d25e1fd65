"""Managed identity access tokens on an Azure VM, from the Instance Metadata Service (IMDS).

azure-identity's defaults wait 5-13 s (and up to minutes on a silent endpoint) before giving up when
there is no metadata service, which is every machine that is not an Azure VM. The credential here
uses short timeouts and one retry, so off Azure a token request fails within about 2 s.

Tokens are cached in the process per (identity or credential, resource) and reused until 5 minutes
before they expire: a process that opens many connections
asks IMDS once. Any azure-identity TokenCredential can stand in for the VM's identity (`credential=`),
with its own cache entries. A token is a secret: it is returned to the caller and never logged, and
its repr hides it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provision.errors import CredentialError, InvalidInput

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

IMDS_ENDPOINT = "http://169.254.169.254"
# Where azure-identity and MSAL send IMDS requests when set (AKS pod identity, the local emulator).
ENDPOINT_VARIABLE = "AZURE_POD_IDENTITY_AUTHORITY_HOST"

# IMDS is a link-local address: a connection either opens at once or never. One retry covers a
# dropped packet; a read timeout is not retried, since a second wait would double the delay.
CREDENTIAL_SETTINGS: dict[str, Any] = {
    "connection_timeout": 1.0,
    "read_timeout": 2.0,
    "retry_total": 1,
    "retry_read": 0,
    "retry_backoff_factor": 0.2,
}

# Reuse a cached token only while it has at least this long to live (MSAL uses the same margin).
MIN_VALIDITY = 300.0

# "... Token request error: (invalid_request) Identity not found", as azure-identity words IMDS's 400.
_TOKEN_REQUEST_ERROR = re.compile(r"Token request error: \((?P<code>[^)]*)\)\s*(?P<description>.*)", re.DOTALL)


@dataclass(frozen=True)
class ManagedIdentityToken:
    """An access token and what it is for. `token` is the secret; it is left out of the repr."""

    token: str = field(repr=False)
    expires_on: int  # epoch seconds
    obtained_at: float  # epoch seconds
    resource: str
    client_id: str | None  # None: the VM's system-assigned identity, or a token from a credential

    @property
    def lifetime(self) -> float:
        """How long the token was valid for when IMDS issued it."""
        return self.expires_on - self.obtained_at

    def remaining(self) -> float:
        return self.expires_on - time.time()


@dataclass(frozen=True)
class TokenClaims:
    """The claims that say who a token is for and what it may reach (read, not verified)."""

    aud: str | None
    appid: str | None  # the identity's client id
    oid: str | None  # the identity's object (principal) id
    tid: str | None
    exp: int | None
    xms_mirid: str | None  # the identity's resource id
    # A user's names, in tokens for people (az login) rather than managed identities.
    upn: str | None = None
    preferred_username: str | None = None
    unique_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if value is not None}


class TokenUnavailable(CredentialError):
    """IMDS gave no token. `cause` is a stable code: imds_unreachable, imds_throttled, identity_not_found,
    identity_ambiguous, resource_unknown or imds_error; `detail` is what the metadata service or the
    network said."""

    def __init__(self, message: str, *, cause: str, detail: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.cause = cause
        self.detail = detail


def resource_url(value: str, option: str = "--resource") -> str:
    """A token resource (an audience such as https://ossrdbms-aad.database.windows.net), not a scope."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]+", value):
        raise InvalidInput(
            f"{option} {value!r}: expected a resource URL such as https://ossrdbms-aad.database.windows.net"
        )
    if value.rstrip("/").endswith("/.default"):
        raise InvalidInput(f"{option} {value!r}: expected a resource, not a scope: leave out /.default")
    return value


def endpoint() -> str:
    return os.environ.get(ENDPOINT_VARIABLE, IMDS_ENDPOINT).strip("/")


def request_token(resource: str, client_id: str | None = None) -> ManagedIdentityToken:
    """Ask IMDS for a new token (no cache). Raises TokenUnavailable."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    scope = resource + "/.default"  # azure-identity strips "/.default" again: IMDS sees the resource as given
    log.info("requesting a token for %s from %s (%s)", resource, endpoint(), _describe_identity(client_id))
    obtained_at = time.time()
    # azure-identity hands IMDS's answer to MSAL, which keeps only the body: the status codes are seen
    # here, through azure-core's per-response hook, so that a 429 can be told apart from a refusal.
    statuses: list[int] = []
    # A new credential per request: its MSAL cache would hand back a token we decided to replace.
    try:
        with ManagedIdentityCredential(
            client_id=client_id,
            raw_response_hook=lambda response: statuses.append(response.http_response.status_code),
            **CREDENTIAL_SETTINGS,
        ) as credential:
            access = credential.get_token(scope)
    except ClientAuthenticationError as error:
        raise _unavailable(error, resource, client_id, statuses[-1] if statuses else None) from error
    log.info("got a token for %s, valid for %d s", resource, access.expires_on - obtained_at)
    return ManagedIdentityToken(access.token, int(access.expires_on), obtained_at, resource, client_id)


def request_credential_token(credential: TokenCredential, resource: str) -> ManagedIdentityToken:
    """Ask an azure-identity credential for a token (it may answer from its own cache). Raises
    CredentialError."""
    from azure.core.exceptions import ClientAuthenticationError

    log.info("requesting a token for %s from %s", resource, type(credential).__name__)
    obtained_at = time.time()
    try:
        access = credential.get_token(resource + "/.default")
    except ClientAuthenticationError as error:
        raise CredentialError(
            f"{type(credential).__name__} gave no token for {resource}: {_first_line(error.message or str(error))}",
            hint="Check that the credential can sign in here (for DefaultAzureCredential: `az login`,"
            " AZURE_CLIENT_ID with a secret or a federated token, or a managed identity).",
        ) from error
    log.info("got a token for %s, valid for %d s", resource, access.expires_on - obtained_at)
    return ManagedIdentityToken(access.token, int(access.expires_on), obtained_at, resource, None)


class TokenCache:
    """Tokens per (identity or credential, resource), reused while they have `min_validity` seconds to live.

    One lock per entry, held while the token is fetched: threads asking for the same token at once (a
    pool opening) make one request, and a slow credential does not hold up another identity."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[Hashable, str], ManagedIdentityToken] = {}
        # The credentials the keys name, kept alive so that their id() is not reused by another object.
        self._credentials: dict[int, TokenCredential] = {}
        self._locks: dict[tuple[Hashable, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(
        self,
        resource: str,
        client_id: str | None = None,
        min_validity: float = MIN_VALIDITY,
        credential: TokenCredential | None = None,
    ) -> ManagedIdentityToken:
        key = self._key(resource, client_id, credential)
        cached = self._tokens.get(key)
        if cached is not None and cached.remaining() >= min_validity:
            return cached
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.remaining() >= min_validity:
                return cached
            if credential is None:
                token = request_token(resource, client_id)
            else:
                token = request_credential_token(credential, resource)
            self._tokens[key] = token
            return token

    def peek(
        self, resource: str, client_id: str | None, min_validity: float, credential: TokenCredential | None
    ) -> ManagedIdentityToken | None:
        """The cached token if it is fresh, without waiting for a lock (for the event loop)."""
        cached = self._tokens.get(self._key(resource, client_id, credential))
        return cached if cached is not None and cached.remaining() >= min_validity else None

    def _key(self, resource: str, client_id: str | None, credential: TokenCredential | None) -> tuple[Hashable, str]:
        if credential is None:
            return ("imds", client_id.lower() if client_id else None), resource
        self._credentials.setdefault(id(credential), credential)
        return ("credential", id(credential)), resource

    def _lock(self, key: tuple[Hashable, str]) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())


_cache = TokenCache()


def access_token(
    resource: str,
    client_id: str | None = None,
    min_validity: float = MIN_VALIDITY,
    credential: TokenCredential | None = None,
) -> ManagedIdentityToken:
    """A token for `resource` from this process's cache, or a new one when the cached one is too old.

    `credential` (any azure-identity TokenCredential) gives the token; without one it comes from IMDS,
    where `client_id` picks a user-assigned identity and None the VM's system-assigned identity."""
    return _cache.get(resource, client_id, min_validity, credential)


async def access_token_async(
    resource: str,
    client_id: str | None = None,
    min_validity: float = MIN_VALIDITY,
    credential: TokenCredential | None = None,
) -> ManagedIdentityToken:
    """`access_token` for coroutines: a fresh cached token at once, otherwise fetched in a worker thread so
    the event loop keeps running. The cache is the sync side's: many tasks at once make one request."""
    cached = _cache.peek(resource, client_id, min_validity, credential)
    if cached is not None:
        return cached
    return await asyncio.to_thread(_cache.get, resource, client_id, min_validity, credential)


def decode_claims(token: str) -> TokenClaims | None:
    """Read a token's claims without verifying its signature (the server does that); None if the
    token is not a JWT."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return TokenClaims(
        aud=claims.get("aud"),
        appid=claims.get("appid"),
        oid=claims.get("oid"),
        tid=claims.get("tid"),
        exp=int(exp) if isinstance(exp, (int, float)) else None,
        xms_mirid=claims.get("xms_mirid"),
        upn=claims.get("upn"),
        preferred_username=claims.get("preferred_username"),
        unique_name=claims.get("unique_name"),
    )


def _describe_identity(client_id: str | None) -> str:
    return f"managed identity with client id {client_id}" if client_id else "system-assigned identity"


def _unavailable(error: Exception, resource: str, client_id: str | None, status: int | None) -> TokenUnavailable:
    from azure.core.exceptions import (
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    where = endpoint()
    network_error = error.__cause__
    if isinstance(network_error, (ServiceRequestError, ServiceResponseError)):
        if isinstance(network_error, ServiceRequestTimeoutError):
            detail = f"no connection within {CREDENTIAL_SETTINGS['connection_timeout']:g} s"
        elif isinstance(network_error, ServiceResponseTimeoutError):
            detail = f"connected, but no answer within {CREDENTIAL_SETTINGS['read_timeout']:g} s"
        else:
            errno = re.search(r"\[Errno -?\d+\][^'\"]*", str(network_error))
            detail = errno[0].strip() if errno else _first_line(str(network_error))
        return TokenUnavailable(
            f"the Azure Instance Metadata Service did not answer at {where}",
            cause="imds_unreachable",
            detail=detail,
            hint="Managed identity tokens come from the metadata service of an Azure VM or scale set instance."
            " This machine is not one, or a firewall or proxy blocks 169.254.169.254.",
        )
    match = _TOKEN_REQUEST_ERROR.search(str(error))
    code, description = (match["code"], match["description"].strip()) if match else ("", _first_line(str(error)))
    detail = f"({code}) {description}" if code else description
    if status == 429:
        # "429 Too many requests: IMDS Throttle limit reached. Retry with Exponential Backoff." (Microsoft Learn,
        # "How to use managed identities for Azure resources on an Azure VM to acquire an access token",
        # Error handling). azure-identity words it "no response from the IMDS endpoint", which it is not.
        return TokenUnavailable(
            "the metadata service is throttling requests (429); try again in a moment",
            cause="imds_throttled",
            detail=f"HTTP 429 from {where}",
            hint="IMDS limits how many token requests a VM may make per second; provision asks once per process"
            " and identity, so other processes on this VM are asking at the same time.",
        )
    if code == "invalid_request" and "identity not found" in description.lower():
        if client_id:
            return TokenUnavailable(
                f"no managed identity with client id {client_id} is attached to this VM",
                cause="identity_not_found",
                detail=detail,
                hint="Check the client id (`provision identity show -g RG -n NAME`) and attach the identity"
                " to the VM (`provision identity assign -g RG -n NAME --vm VM`).",
            )
        return TokenUnavailable(
            "this VM has no system-assigned managed identity",
            cause="identity_not_found",
            detail=detail,
            hint="Pass --client-id with the client id of a user-assigned identity attached to this VM.",
        )
    if code == "invalid_request" and "multiple user assigned identities" in description.lower():
        return TokenUnavailable(
            "this VM has several user-assigned identities and no system-assigned one: say which to use",
            cause="identity_ambiguous",
            detail=detail,
            hint="Pass --client-id with the client id of one of the VM's identities.",
        )
    if code == "invalid_resource":
        return TokenUnavailable(
            f"the metadata service issues no token for {resource}",
            cause="resource_unknown",
            detail=detail,
            hint="The database resource depends on the Azure cloud: pick the server's cloud with --cloud.",
        )
    return TokenUnavailable(
        f"the Azure Instance Metadata Service at {where} returned no token for the {_describe_identity(client_id)}",
        cause="imds_error",
        detail=detail,
        hint="Retry in a minute; the metadata service can be briefly unavailable while the VM's identities change.",
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
