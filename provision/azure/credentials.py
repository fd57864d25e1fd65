"""Where access tokens come from.

Resource Manager and the database admin use azure-identity's DefaultAzureCredential (environment
service principal, workload identity in CI, managed identity, Azure CLI login), never an interactive
flow. A token is a secret: it is returned to the caller, never logged."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from provision.errors import CredentialError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential, TokenRequestOptions
    from azure.identity import DefaultAzureCredential

# A cached token is used while it has this much life left: azure-core's BearerTokenCredentialPolicy asks
# for a new one 300 s before expiry, so a token handed out here is never one it would refuse.
REFRESH_MARGIN = 300


SIGN_IN_HINT = (
    "Sign in with `az login`, set AZURE_CLIENT_ID/AZURE_TENANT_ID with a secret or a federated token, or run"
    " where a managed identity is available. -vv shows each source's answer."
)


# Microsoft's Entra authority hosts (azure.identity.AzureAuthorityHosts). MSAL checks any other authority with
# login.microsoftonline.com's instance discovery, which an authority of the user's own (an Azure Stack Hub's, the
# local Azure stack's) fails, and offline cannot reach; azure-identity's remedy is disable_instance_discovery.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {"login.microsoftonline.com", "login.chinacloudapi.cn", "login.microsoftonline.us"}
)


def validates_authority(authority_host: str | None) -> bool:
    """Whether MSAL should check the authority (AZURE_AUTHORITY_HOST) against Microsoft's instance discovery:
    for Microsoft's own hosts and the default. Another host is the user's explicit choice, trusted as given."""
    if not authority_host:
        return True
    host = urlsplit(authority_host if "://" in authority_host else f"https://{authority_host}").hostname or ""
    return host.lower() in MICROSOFT_AUTHORITY_HOSTS


def default_credential(managed_identity_client_id: str | None = None) -> DefaultAzureCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
        managed_identity_client_id=managed_identity_client_id,
        disable_instance_discovery=not validates_authority(os.environ.get("AZURE_AUTHORITY_HOST")),
    )


def token_for(credential: TokenCredential, scope: str, purpose: str) -> str:
    """An access token for `scope`, or CredentialError saying which sources were tried."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        return credential.get_token(scope).token
    except ClientAuthenticationError as error:
        raise CredentialError(
            f"could not get an access token for {purpose} ({scope})",
            hint=SIGN_IN_HINT,
        ) from error


class SharedToken:
    """One token per scope for every client of a command, fetched once even when they ask at the same time.

    Each SDK client's policy keeps its own token, and the Azure CLI and developer credentials cache nothing
    (azure-identity's AzureCliCredential runs `az account get-access-token` on every call): without this,
    each client costs a fetch, and clients reading concurrently each fetch one. A request with claims or a
    tenant (a CAE challenge) goes to the credential as it is."""

    def __init__(self, credential: Any, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[tuple[str, ...], bool], AccessTokenInfo] = {}

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        options = options or {}
        if options.get("claims") or options.get("tenant_id"):
            return self._fetch(scopes, options)
        key = (scopes, bool(options.get("enable_cae")))
        with self._lock:
            token = self._tokens.get(key)
            if token is None or not self._fresh(token):
                token = self._tokens[key] = self._fetch(scopes, options)
            return token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        options: Any = {name: kwargs[name] for name in ("claims", "tenant_id", "enable_cae") if kwargs.get(name)}
        token = self.get_token_info(*scopes, options=options)
        return AccessToken(token.token, token.expires_on)

    def close(self) -> None:
        self._credential.close()

    def _fresh(self, token: AccessTokenInfo) -> bool:
        now = self._clock()
        return token.expires_on - now > REFRESH_MARGIN and (token.refresh_on is None or now < token.refresh_on)

    def _fetch(self, scopes: tuple[str, ...], options: TokenRequestOptions) -> AccessTokenInfo:
        from azure.core.credentials import AccessTokenInfo

        if hasattr(self._credential, "get_token_info"):
            return self._credential.get_token_info(*scopes, options=options)
        token = self._credential.get_token(*scopes, **options)
        return AccessTokenInfo(token.token, token.expires_on)
