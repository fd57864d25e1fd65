"""The emulated world's fixed facts: one tenant, one subscription, the VM the tool runs on, and the
operator identity (the VM's system-assigned identity), which may call Resource Manager and is the
Entra admin of the emulated database servers."""

from __future__ import annotations

import re

from provision.emulator.errors import InvalidSetting

# Every emulated service listens on one of these, never on an address another machine could reach.
LOOPBACK_HOSTS = ("127.0.0.1", "::1")


def loopback(host: str) -> str:
    if host not in LOOPBACK_HOSTS:
        raise InvalidSetting(
            f"--host {host}: the local Azure stack listens on loopback only ({' or '.join(LOOPBACK_HOSTS)})"
        )
    return host


TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "00000000-1111-2222-3333-444444444444"
LOCATION = "westeurope"
RESOURCE_GROUP = "myResourceGroup"
# Where a platform team keeps identities it shares: the VM's operator may hold roles on one and not another.
SHARED_RESOURCE_GROUP = "sharedIdentities"
VM_NAME = "myVM"
VMSS_NAME = "myScaleSet"

# The system-assigned identity of myVM: the operator who runs the tool.
OPERATOR_CLIENT_ID = "5c3a7f0e-2b8d-4e61-9a1f-0d4c6e8b2a17"
OPERATOR_PRINCIPAL_ID = "9e1b4d27-6c3f-4a85-b0d2-7f5e1c9a3b64"

# Entra objects of the tenant besides the managed identities' service principals: a user (the name Azure's
# docs create a role for: pgaadauth_create_principal('mary@contoso.com', false, false)), a group, and the
# service principal a CI pipeline signs in as with a client secret.
USER_NAME = "mary@contoso.com"
USER_PRINCIPAL_ID = "3f6d2a91-7b4e-4c08-a5d1-8e2b9c7f0a43"
GROUP_NAME = "pg-admins"
GROUP_PRINCIPAL_ID = "b71c5e08-2d9a-4f36-8c4b-1a0e7d3f9b25"
CI_NAME = "provision-ci"
CI_CLIENT_ID = "6a0d8c3e-4f1b-4e97-b2a5-0c9e7d1f3b58"
CI_PRINCIPAL_ID = "d24e9b70-5a3c-4b18-9f6e-7c1a0b8d2e94"

# A user-assigned identity that myVM already has before the walkthrough starts.
EXISTING_IDENTITY_NAME = "existingIdentity"

# The walkthrough's and the README's server names; `emulator start --single-name/--flexible-name` picks others.
SINGLE_SERVER = "mydemoserver"
FLEXIBLE_SERVER = "myflex"
DATABASE_ADMIN = "aadadmin"
# Azure's public cloud names a server NAME.postgres.database.azure.com (both flavors).
SERVER_DOMAIN = "postgres.database.azure.com"
# The REST API's serverName: 3-63 characters, letters and digits in hyphen-separated runs
# (learn.microsoft.com/rest/api/postgresql/servers/create); DNS keeps it lowercase.
_SERVER_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def server_name(option: str, name: str) -> str:
    if not (3 <= len(name) <= 63 and _SERVER_NAME.fullmatch(name)):
        raise InvalidSetting(
            f"{option} {name!r}: a server name is 3-63 lowercase letters, digits and hyphens,"
            " not starting or ending with a hyphen"
        )
    return name


def host_name(server: str) -> str:
    return f"{server}.{SERVER_DOMAIN}"


ARM_AUDIENCE = "https://management.azure.com/"
DATABASE_AUDIENCE = "https://ossrdbms-aad.database.windows.net"
# The resources Entra issues tokens for, per cloud: Resource Manager (also under its older name,
# az's default audience) and Azure Database for PostgreSQL. The emulator's own table, so that a wrong
# entry in the tool's cloud table shows up as a refused token instead of being mirrored; values as in
# azure-cli's azure/cli/core/cloud.py (`az cloud show`: endpoints.resourceManager, ossrdbmsResourceId).
CLOUD_RESOURCES = {
    "AzureCloud": (ARM_AUDIENCE, "https://management.core.windows.net/", DATABASE_AUDIENCE),
    "AzureChinaCloud": (
        "https://management.chinacloudapi.cn/",
        "https://management.core.chinacloudapi.cn/",
        "https://ossrdbms-aad.database.chinacloudapi.cn",
    ),
    "AzureUSGovernment": (
        "https://management.usgovcloudapi.net/",
        "https://management.core.usgovcloudapi.net/",
        "https://ossrdbms-aad.database.usgovcloudapi.net",
    ),
}
ISSUER = f"https://sts.windows.net/{TENANT_ID}/"
