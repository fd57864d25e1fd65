"""Managed identity access tokens on an Azure VM, from the Instance Metadata Service (IMDS).

azure-identity's defaults wait 5-13 s (and up to minutes on a silent endpoint) before giving up when
there is no metadata service, which is every machine that is not an Azure VM. The credential here
uses short timeouts and one connection retry, so off Azure a token request fails within about 2 s.

A metadata service that answers but cannot serve yet is asked again, as Microsoft's guidance says
(404, 410, 429 and 5xx, with exponential backoff), and so is "Identity not found" during the first
IDENTITY_NOT_FOUND_WINDOW seconds: a freshly attached identity takes a while to reach IMDS, but a
mistyped client id must not keep the caller waiting long. Every retry is logged, and all of them fit
in the command's --timeout (a library caller without one: LIBRARY_RETRY_LIMIT).

Tokens are cached in the process per (identity or credential, resource) and reused until 5 minutes
before they expire: a process that opens many connections asks IMDS once. Any azure-identity
credential can stand in for the VM's identity (`credential=`), with its own cache entries: a
TokenCredential, or for coroutines an AsyncTokenCredential (azure.identity.aio), awaited on the event
loop. A token is a secret: it is returned to the caller and never logged, and its repr hides it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from provision import deadline
from provision.errors import CredentialError, InvalidInput
from provision.naming import argument

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger(__name__)

IMDS_ENDPOINT = "http://169.254.169.254"
# Where azure-identity and MSAL send IMDS requests when set (AKS pod identity, the local emulator).
ENDPOINT_VARIABLE = "AZURE_POD_IDENTITY_AUTHORITY_HOST"

# IMDS is a link-local address: a connection either opens at once or never. One retry covers a
# dropped packet; a read timeout is not retried, since a second wait would double the delay. Answers
# are not retried by azure-core (retry_status 0; azure-identity's ImdsRetryPolicy would wait up to 75 s
# for a 410, unlogged and blind to --timeout): request_token retries them itself.
CREDENTIAL_SETTINGS: dict[str, Any] = {
    "connection_timeout": 1.0,
    "read_timeout": 2.0,
    "retry_total": 1,
    "retry_read": 0,
    "retry_status": 0,
    "retry_backoff_factor": 0.2,
}

# Microsoft Learn, "How to use managed identities for Azure resources on an Azure VM to acquire an access
# token", Error handling and Retry guidance: retry 404 (IMDS endpoint is updating), 410 (IMDS is going through
# updates, available again within 70 s), 429 (throttle limit reached) and 5xx (after at least 1 s), with
# exponential backoff; other 4xx are not retried.
RETRIED_STATUSES = frozenset({404, 410, 429, *range(500, 600)})
FIRST_RETRY_DELAY = 1.0  # then 2, 4, 8, 16 s
MAX_RETRY_DELAY = 16.0
# A command retries within its --timeout, but not past the longest documented outage (a 410's 70 s).
RETRY_LIMIT = 75.0
# A library caller has no command budget: retries end within psycopg_pool's 30 s wait for a connection.
LIBRARY_RETRY_LIMIT = 30.0
# "Identity not found" is also what IMDS answers for a while after an identity is attached (Azure's
# aad-pod-identity measured 10-20 s on VMs: https://azure.github.io/aad-pod-identity/docs/best-practices),
# and for a wrong client id: it is retried for this long only.
IDENTITY_NOT_FOUND_WINDOW = 10.0

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
    """IMDS gave no token. `cause` is a stable code: imds_unreachable, imds_throttled, imds_updating,
    identity_not_found, identity_ambiguous, resource_unknown or imds_error; `detail` is what the metadata
    service or the network said; `status` the HTTP status of its last answer (None: no answer), and
    `retry_after` the seconds that answer asked to wait, if it did."""

    def __init__(
        self,
        message: str,
        *,
        cause: str,
        detail: str,
        hint: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.cause = cause
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


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
    """Ask IMDS for a new token (no cache), again while it answers that it cannot serve yet (see
    retry_delay). Raises TokenUnavailable, or TimedOut when the command's budget is spent."""
    budget = deadline.current() if deadline.current().bounded else deadline.Deadline(LIBRARY_RETRY_LIMIT)
    limit = min(RETRY_LIMIT, budget.remaining())
    log.info("requesting a token for %s from %s (%s)", resource, endpoint(), _describe_identity(client_id))
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return _request_once(resource, client_id, budget)
        except TokenUnavailable as failure:
            elapsed = time.monotonic() - started
            delay = retry_delay(failure, attempt, elapsed, limit)
            if delay is None:
                if attempt > 1:
                    log.warning("the metadata service gave no token in %d attempts over %.0f s", attempt, elapsed)
                raise
            log.warning("%s; asking again in %.1f s", _retry_reason(failure, client_id), delay)
            budget.sleep(delay, "waiting to ask the metadata service for a token again")
            attempt += 1


def retry_delay(failure: TokenUnavailable, attempt: int, elapsed: float, limit: float) -> float | None:
    """How long to wait before asking again after `attempt` failed attempts, the first `elapsed` seconds
    ago; None: give up. A longer Retry-After is honoured; the retries end `limit` seconds after the first attempt,
    and for "Identity not found" IDENTITY_NOT_FOUND_WINDOW seconds after it."""
    backoff = min(FIRST_RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY)
    if failure.status in RETRIED_STATUSES:
        # A Retry-After may lengthen a wait, never shorten it: "Retry-After: 0" must not turn into a hammering.
        delay = (
            backoff if failure.retry_after is None else min(max(failure.retry_after, backoff), deadline.MAX_SINGLE_WAIT)
        )
    elif failure.cause == "identity_not_found" and elapsed < IDENTITY_NOT_FOUND_WINDOW:
        delay = min(backoff, IDENTITY_NOT_FOUND_WINDOW - elapsed)
    else:
        return None
    return delay if elapsed + delay <= limit else None


def _request_once(resource: str, client_id: str | None, budget: deadline.Deadline) -> ManagedIdentityToken:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ManagedIdentityCredential

    budget.check("waiting for the metadata service")
    settings = {
        **CREDENTIAL_SETTINGS,
        "connection_timeout": budget.cap(CREDENTIAL_SETTINGS["connection_timeout"]),
        "read_timeout": budget.cap(CREDENTIAL_SETTINGS["read_timeout"]),
    }
    scope = resource + "/.default"  # azure-identity strips "/.default" again: IMDS sees the resource as given
    obtained_at = time.time()
    # azure-identity hands IMDS's answer to MSAL, which keeps only the body: the status codes (and a
    # Retry-After) are seen here, through azure-core's per-response hook, so that a 429 or a 410 can be
    # told apart from a refusal.
    responses: list[Any] = []
    # A new credential per request: its MSAL cache would hand back a token we decided to replace, and its
    # MSAL client would answer a repeated request after a 429 or 5xx from its throttling cache.
    try:
        with ManagedIdentityCredential(
            client_id=client_id,
            raw_response_hook=lambda response: responses.append(response.http_response),
            **settings,
        ) as credential:
            access = credential.get_token(scope)
    except ClientAuthenticationError as error:
        raise _unavailable(error, resource, client_id, responses[-1] if responses else None, settings) from error
    log.info("got a token for %s, valid for %d s", resource, access.expires_on - obtained_at)
    return ManagedIdentityToken(access.token, int(access.expires_on), obtained_at, resource, client_id)


def is_async_credential(credential: object) -> bool:
    """An AsyncTokenCredential (azure.identity.aio): its get_token is a coroutine function."""
    return inspect.iscoroutinefunction(getattr(credential, "get_token", None))


def request_credential_token(credential: TokenCredential, resource: str) -> ManagedIdentityToken:
    """Ask an azure-identity credential for a token (it may answer from its own cache). Raises
    CredentialError."""
    obtained_at = time.time()
    with _credential_errors(credential, resource):
        access = credential.get_token(resource + "/.default")
    return _credential_token(access, obtained_at, resource)


async def request_async_credential_token(credential: AsyncTokenCredential, resource: str) -> ManagedIdentityToken:
    """`request_credential_token` for an AsyncTokenCredential, awaited on the running loop."""
    obtained_at = time.time()
    with _credential_errors(credential, resource):
        access = await credential.get_token(resource + "/.default")
    return _credential_token(access, obtained_at, resource)


@contextmanager
def _credential_errors(credential: object, resource: str) -> Iterator[None]:
    from azure.core.exceptions import ClientAuthenticationError

    log.info("requesting a token for %s from %s", resource, type(credential).__name__)
    try:
        yield
    except ClientAuthenticationError as error:
        raise CredentialError(
            f"{type(credential).__name__} gave no token for {resource}: {_first_line(error.message or str(error))}",
            hint="Check that the credential can sign in here (for DefaultAzureCredential: `az login`,"
            " AZURE_CLIENT_ID with a secret or a federated token, or a managed identity).",
        ) from error


def _credential_token(access: Any, obtained_at: float, resource: str) -> ManagedIdentityToken:
    log.info("got a token for %s, valid for %d s", resource, access.expires_on - obtained_at)
    return ManagedIdentityToken(access.token, int(access.expires_on), obtained_at, resource, None)


class TokenCache:
    """Tokens per (identity or credential, resource), reused while they have `min_validity` seconds to live.

    One lock per entry, held while the token is fetched: threads asking for the same token at once (a
    pool opening) make one request, and a slow credential does not hold up another identity. An
    AsyncTokenCredential's tasks wait on an asyncio lock of their event loop instead."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[Hashable, str], ManagedIdentityToken] = {}
        # The credentials the keys name, kept alive so that their id() is not reused by another object.
        self._credentials: dict[int, TokenCredential | AsyncTokenCredential] = {}
        self._locks: dict[tuple[Hashable, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # An asyncio lock belongs to one event loop, and asyncio.run makes a new loop each time.
        self._async_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[Hashable, str], asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

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

    async def get_async(
        self,
        resource: str,
        client_id: str | None = None,
        min_validity: float = MIN_VALIDITY,
        credential: TokenCredential | AsyncTokenCredential | None = None,
    ) -> ManagedIdentityToken:
        """`get` for coroutines: a fresh cached token at once; else an AsyncTokenCredential is awaited on the
        loop, and IMDS or a sync credential is waited for in a worker thread, so the loop keeps running."""
        key = self._key(resource, client_id, credential)
        cached = self._tokens.get(key)
        if cached is not None and cached.remaining() >= min_validity:
            return cached
        if not is_async_credential(credential):
            sync_credential = cast("TokenCredential | None", credential)
            return await asyncio.to_thread(self.get, resource, client_id, min_validity, sync_credential)
        async with self._async_lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.remaining() >= min_validity:
                return cached
            token = await request_async_credential_token(cast("AsyncTokenCredential", credential), resource)
            self._tokens[key] = token
            return token

    def _key(
        self, resource: str, client_id: str | None, credential: TokenCredential | AsyncTokenCredential | None
    ) -> tuple[Hashable, str]:
        if credential is None:
            return ("imds", client_id.lower() if client_id else None), resource
        self._credentials.setdefault(id(credential), credential)
        return ("credential", id(credential)), resource

    def _lock(self, key: tuple[Hashable, str]) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def _async_lock(self, key: tuple[Hashable, str]) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._locks_lock:
            return self._async_locks.setdefault(loop, {}).setdefault(key, asyncio.Lock())


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
    credential: TokenCredential | AsyncTokenCredential | None = None,
) -> ManagedIdentityToken:
    """`access_token` for coroutines, with an AsyncTokenCredential or any source `access_token` takes; the
    event loop never waits on the network. The cache is the sync side's: many tasks at once make one request."""
    return await _cache.get_async(resource, client_id, min_validity, credential)


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


def _retry_reason(failure: TokenUnavailable, client_id: str | None) -> str:
    if failure.cause == "identity_not_found":
        return f"the metadata service does not serve the {_describe_identity(client_id)} (yet?)"
    return f"the metadata service answered {failure.status} ({failure.message})"


def _unavailable(
    error: Exception, resource: str, client_id: str | None, response: Any, settings: dict[str, Any]
) -> TokenUnavailable:
    from azure.core.exceptions import (
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    where = endpoint()
    network_error = error.__cause__
    if response is None and isinstance(network_error, (ServiceRequestError, ServiceResponseError)):
        if isinstance(network_error, ServiceRequestTimeoutError):
            detail = f"no connection within {settings['connection_timeout']:g} s"
        elif isinstance(network_error, ServiceResponseTimeoutError):
            detail = f"connected, but no answer within {settings['read_timeout']:g} s"
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
    status = response.status_code if response is not None else None
    retry_after = _seconds(response.headers.get("Retry-After")) if response is not None else None
    answered: dict[str, Any] = {"status": status, "retry_after": retry_after}
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
            **answered,
        )
    if status == 410:
        # "410: IMDS is going through updates; IMDS will be available within 70 seconds" (the same page).
        return TokenUnavailable(
            "the metadata service is being updated (410); try again in a minute",
            cause="imds_updating",
            detail=f"HTTP 410 from {where}: {detail}",
            hint="Azure updates a VM's metadata service now and then; it answers again within 70 seconds.",
            **answered,
        )
    # Said after a wrong client id, and for a while after the identity is attached (IDENTITY_NOT_FOUND_WINDOW).
    just_attached = " If it was attached in the last minute, the metadata service may not serve it yet: try again."
    if code == "invalid_request" and "identity not found" in description.lower():
        if client_id:
            return TokenUnavailable(
                f"no managed identity with client id {client_id} is attached to this VM",
                cause="identity_not_found",
                detail=detail,
                hint="Check the client id (`provision identity show -g RG -n NAME`) and attach the identity"
                " to the VM (`provision identity assign`)." + just_attached,
                **answered,
            )
        return TokenUnavailable(
            "this VM has no system-assigned managed identity",
            cause="identity_not_found",
            detail=detail,
            hint=f"Pass {argument('client_id')} with the client id of a user-assigned identity attached to this VM."
            + just_attached,
            **answered,
        )
    if code == "invalid_request" and "multiple user assigned identities" in description.lower():
        return TokenUnavailable(
            "this VM has several user-assigned identities and no system-assigned one: say which to use",
            cause="identity_ambiguous",
            detail=detail,
            hint=f"Pass {argument('client_id')} with the client id of one of the VM's identities.",
            **answered,
        )
    if code == "invalid_resource":
        return TokenUnavailable(
            f"the metadata service issues no token for {resource}",
            cause="resource_unknown",
            detail=detail,
            hint=f"The database resource depends on the Azure cloud: pick the server's cloud with {argument('cloud')}.",
            **answered,
        )
    return TokenUnavailable(
        f"the Azure Instance Metadata Service at {where} returned no token for the {_describe_identity(client_id)}",
        cause="imds_error",
        detail=detail,
        hint="Retry in a minute; the metadata service can be briefly unavailable while the VM's identities change.",
        **answered,
    )


def _seconds(value: str | None) -> float | None:
    """A Retry-After in seconds; None for anything else (an HTTP date falls back to the backoff)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
