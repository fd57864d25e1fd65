"""Where access tokens come from.

Resource Manager and the database admin use azure-identity's DefaultAzureCredential (environment
service principal, workload identity in CI, managed identity, Azure CLI login), never an interactive
flow. A token is a secret: it is returned to the caller, never logged."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from provision.errors import CredentialError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.identity import DefaultAzureCredential


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
