"""Azure Database for PostgreSQL flexible servers: their Microsoft Entra authentication and Entra admins.

Read, decide, apply, as for identities and machines. The decisions (`plan_entra`, `plan_admin_add`,
`plan_admin_remove`) are pure functions of the server as read; applying is one PATCH of
`properties.authConfig` or one PUT or DELETE of `administrators/{objectId}`, each a long-running
operation (202 with Azure-AsyncOperation) polled adaptively within the command's time budget."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.azure.arm import ROLE_TO_READ, AdaptivePolling, Arm, errors_explained, is_absent
from provision.errors import Conflict, Forbidden, Interrupted, InvalidInput, NotFound, OutcomeUnknown, TimedOut
from provision.plan import Action, Result

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

API_VERSION = "2026-10-01"  # azure-mgmt-postgresqlflexibleservers' default, shown in --dry-run
PROVIDER_PATH = "providers/Microsoft.DBforPostgreSQL/flexibleServers"
ROLE_TO_CHANGE = "Contributor on the flexible server (Microsoft.DBforPostgreSQL/flexibleServers/write)"
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal")
# The REST API's serverName: 3-63 characters, letters and digits in hyphen-separated runs (Servers - Update,
# learn.microsoft.com/rest/api/postgresql/servers/update).
_SERVER_NAME = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")

Waiter = Callable[[float], None] | None
# The resource type says the flavor. Single Server (Microsoft.DBforPostgreSQL/servers) was retired on 2025-03-28
# (techcommunity.microsoft.com, "Retiring Azure Database for PostgreSQL Single Server in 2025", 3783783),
# so only flexible servers are named through Resource Manager.
FLAVOR_OF_TYPE = {"microsoft.dbforpostgresql/flexibleservers": "flexible"}


def server_name(value: str, option: str = "--name") -> str:
    if not (3 <= len(value) <= 63 and _SERVER_NAME.fullmatch(value)):
        raise InvalidInput(
            f"{option} {value!r}: a server name has 3-63 letters, digits and hyphens,"
            " and does not start or end with a hyphen"
        )
    return value.lower()


@dataclass(frozen=True)
class EntraAdmin:
    object_id: str
    principal_name: str
    principal_type: str
    tenant_id: str | None = None

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> EntraAdmin:
        properties = body.get("properties") or {}
        return cls(
            str(properties.get("objectId") or body.get("id", "").rsplit("/", 1)[-1]).lower(),
            str(properties.get("principalName") or body.get("name")),
            str(properties.get("principalType")),
            properties.get("tenantId"),
        )

    def fields(self) -> dict[str, Any]:
        return {
            "objectId": self.object_id,
            "principalName": self.principal_name,
            "principalType": self.principal_type,
            "tenantId": self.tenant_id,
        }


@dataclass(frozen=True)
class FlexibleServer:
    id: str
    name: str
    type: str
    resource_group: str
    fqdn: str | None
    version: str | None
    state: str | None
    entra_auth: str | None
    password_auth: str | None
    tenant_id: str | None
    admins: tuple[EntraAdmin, ...]

    @classmethod
    def from_wire(cls, resource_group: str, body: dict[str, Any], admins: tuple[EntraAdmin, ...]) -> FlexibleServer:
        properties = body.get("properties") or {}
        auth = properties.get("authConfig") or {}
        return cls(
            id=str(body.get("id")),
            name=str(body.get("name")),
            type=str(body.get("type")),
            resource_group=resource_group,
            fqdn=properties.get("fullyQualifiedDomainName"),
            version=properties.get("version"),
            state=properties.get("state"),
            entra_auth=auth.get("activeDirectoryAuth"),
            password_auth=auth.get("passwordAuth"),
            tenant_id=auth.get("tenantId"),
            admins=admins,
        )

    def admin(self, object_id: str) -> EntraAdmin | None:
        return next((a for a in self.admins if a.object_id == object_id.lower()), None)

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "fullyQualifiedDomainName": self.fqdn,
            "version": self.version,
            "state": self.state,
            "authConfig": {
                "activeDirectoryAuth": self.entra_auth,
                "passwordAuth": self.password_auth,
                "tenantId": self.tenant_id,
            },
            "entraAdmins": [admin.fields() for admin in self.admins],
        }


def _path(arm: Arm, resource_group: str, name: str) -> str:
    return f"/subscriptions/{arm.subscription}/resourceGroups/{resource_group}/{PROVIDER_PATH}/{name}"


def _subject(resource_group: str, name: str) -> str:
    return f"flexible server {name} in resource group {resource_group}"


def read_server(client: PostgreSQLManagementClient, arm: Arm, resource_group: str, name: str) -> FlexibleServer:
    """The server and its Entra admins, or NotFound."""
    from azure.core.exceptions import ResourceNotFoundError

    with errors_explained(_subject(resource_group, name), arm, resource_group, ROLE_TO_READ):
        try:
            body = client.servers.get(resource_group, name).as_dict()
        except ResourceNotFoundError as error:
            if not is_absent(error):
                raise
            raise NotFound(
                f"{_subject(resource_group, name)} was not found in subscription {arm.subscription}",
                hint="Flexible servers of the subscription: az postgres flexible-server list -o table",
            ) from None
        admins = tuple(
            EntraAdmin.from_wire(admin.as_dict())
            for admin in client.administrators_microsoft_entra.list_by_server(resource_group, name)
        )
    return FlexibleServer.from_wire(resource_group, body, admins)


@dataclass(frozen=True)
class AdminLogin:
    """How the signed-in principal logs in to a server as its Entra admin."""

    host: str
    flavor: str
    user: str  # the admin's principal name: its login name


# -- decisions ------------------------------------------------------------------------------------------


def require_entra(server: FlexibleServer) -> None:
    """Conflict when the server refuses Entra logins: its admins could not log in."""
    if server.entra_auth != "Enabled":
        raise Conflict(
            f"server {server.name} has Microsoft Entra authentication disabled: its Entra admins could not log in",
            hint=f"Enable it first: provision server entra enable -g {server.resource_group} -n {server.name}",
        )


def admin_login_of(server: FlexibleServer, me: EntraAdmin) -> AdminLogin:
    """The host, flavor and login name for `me` on the server, or Forbidden naming its admins when `me` is
    not one of them."""
    flavor = FLAVOR_OF_TYPE.get(server.type.lower())
    if flavor is None or not server.fqdn:
        raise NotFound(f"{server.id} is a {server.type} with no host name to connect to")
    require_entra(server)
    admin = server.admin(me.object_id)
    if admin is None:
        names = ", ".join(f"{a.principal_name} ({a.principal_type})" for a in server.admins) or "none"
        raise Forbidden(
            f"the signed-in principal {me.principal_name} ({me.object_id}) is not an Entra admin of server"
            f" {server.name}; its Entra admins: {names}",
            hint="Sign in as one of them, or make this principal an admin:"
            f" provision server admin add -g {server.resource_group} -n {server.name} --me",
        )
    return AdminLogin(server.fqdn, flavor, admin.principal_name)


def plan_entra(server: FlexibleServer, disable_password: bool) -> dict[str, str] | None:
    """The authConfig to PATCH so that Entra authentication is on (and password authentication off when
    asked), or None when the server already is so. Password authentication is never turned back on."""
    wanted = {"activeDirectoryAuth": "Enabled"}
    if disable_password:
        wanted["passwordAuth"] = "Disabled"
    current = {"activeDirectoryAuth": server.entra_auth, "passwordAuth": server.password_auth}
    if all(current[key] == value for key, value in wanted.items()):
        return None
    return wanted


def plan_admin_add(server: FlexibleServer, wanted: EntraAdmin, any_name: bool = False) -> str:
    """noop, create, or update (same object id, another name or type). With `any_name` (--me, whose name
    is only derived from its token) an admin of the same object id is enough."""
    current = server.admin(wanted.object_id)
    if current is None:
        return "create"
    if any_name:
        return "noop"
    same = current.principal_name == wanted.principal_name and current.principal_type == wanted.principal_type
    return "noop" if same else "update"


def plan_admin_remove(server: FlexibleServer, object_id: str) -> EntraAdmin | None:
    """The admin to remove, or None when it is not one. The last admin of a server whose password
    authentication is off is kept: removing it would leave nobody able to log in as an admin."""
    current = server.admin(object_id)
    if current is not None and len(server.admins) == 1 and server.password_auth == "Disabled":
        raise Conflict(
            f"{current.principal_name} is the only Entra admin of server {server.name}, whose password"
            " authentication is disabled: removing it would leave no admin able to log in",
            hint="Add another admin first (provision server admin add).",
        )
    return current


# -- steps ----------------------------------------------------------------------------------------------


def show(client: PostgreSQLManagementClient, arm: Arm, resource_group: str, name: str) -> Result:
    result = Result()
    result.fields.update(read_server(client, arm, resource_group, name).fields())
    return result


def list_admins(client: PostgreSQLManagementClient, arm: Arm, resource_group: str, name: str) -> Result:
    found = read_server(client, arm, resource_group, name)
    result = Result()
    result.fields.update({"name": found.name, "entraAdmins": [admin.fields() for admin in found.admins]})
    return result


Write = tuple[str, Callable[[Any], Any]]  # what is being done, for messages; how to send it, given the polling


def _converge(
    client: PostgreSQLManagementClient,
    arm: Arm,
    resource_group: str,
    name: str,
    decide: Callable[[FlexibleServer], tuple[Action, Write | None]],
    dry_run: bool,
    on_wait: Waiter,
) -> Result:
    """Read the server, decide, send the write (unless a dry run) and wait for it, then read it again."""
    result = Result(dry_run=dry_run)
    server = read_server(client, arm, resource_group, name)
    action, write = decide(server)
    result.add(action)
    if write is not None and not dry_run:
        doing, begin = write
        _await(arm, resource_group, name, doing, begin, on_wait)
        server = read_server(client, arm, resource_group, name)
    result.fields.update(server.fields())
    return result


def enable_entra(
    client: PostgreSQLManagementClient,
    arm: Arm,
    resource_group: str,
    name: str,
    disable_password: bool,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    def decide(server: FlexibleServer) -> tuple[Action, Write | None]:
        wanted = plan_entra(server, disable_password)
        target = f"server {server.name}"
        if wanted is None:
            return Action("noop", target, "authentication is already as asked"), None
        body: Any = {"properties": {"authConfig": wanted}}  # the SDK types bodies as TypedDicts
        request = {"method": "PATCH", "url": arm.url(_path(arm, resource_group, name), API_VERSION), "body": body}
        reason = (
            "Microsoft Entra authentication is off"
            if server.entra_auth != "Enabled"
            else "password authentication is on"
        )
        return Action("update", target, reason, request), (
            f"updating server {name}",
            lambda polling: client.servers.begin_update(resource_group, name, body, polling=polling),
        )

    return _converge(client, arm, resource_group, name, decide, dry_run, on_wait)


def add_admin(
    client: PostgreSQLManagementClient,
    arm: Arm,
    resource_group: str,
    name: str,
    admin: EntraAdmin,
    dry_run: bool,
    on_wait: Waiter = None,
    any_name: bool = False,
) -> Result:
    def decide(server: FlexibleServer) -> tuple[Action, Write | None]:
        require_entra(server)
        verb = plan_admin_add(server, admin, any_name)
        target = f"Entra admin {admin.principal_name} ({admin.object_id})"
        if verb == "noop":
            return Action("noop", target, "already an admin of the server"), None
        body: Any = {
            "properties": {
                "principalName": admin.principal_name,
                "principalType": admin.principal_type,
                "tenantId": admin.tenant_id or server.tenant_id,
            }
        }
        url = arm.url(f"{_path(arm, resource_group, name)}/administrators/{admin.object_id}", API_VERSION)
        reason = "not an admin" if verb == "create" else "an admin under another name or type"
        return Action(verb, target, reason, {"method": "PUT", "url": url, "body": body}), (
            f"adding the Entra admin {admin.principal_name} to server {name}",
            lambda polling: client.administrators_microsoft_entra.begin_create_or_update(
                resource_group, name, admin.object_id, body, polling=polling
            ),
        )

    return _converge(client, arm, resource_group, name, decide, dry_run, on_wait)


def remove_admin(
    client: PostgreSQLManagementClient,
    arm: Arm,
    resource_group: str,
    name: str,
    object_id: str,
    dry_run: bool,
    on_wait: Waiter = None,
) -> Result:
    def decide(server: FlexibleServer) -> tuple[Action, Write | None]:
        current = plan_admin_remove(server, object_id)
        if current is None:
            return Action("noop", f"Entra admin {object_id}", "not an admin of the server"), None
        url = arm.url(f"{_path(arm, resource_group, name)}/administrators/{current.object_id}", API_VERSION)
        target = f"Entra admin {current.principal_name} ({current.object_id})"
        return Action("delete", target, "an admin of the server", {"method": "DELETE", "url": url}), (
            f"removing the Entra admin {current.principal_name} from server {name}",
            lambda polling: client.administrators_microsoft_entra.begin_delete(
                resource_group, name, current.object_id, polling=polling
            ),
        )

    return _converge(client, arm, resource_group, name, decide, dry_run, on_wait)


def _await(arm: Arm, resource_group: str, name: str, doing: str, begin: Callable[[Any], Any], on_wait: Waiter) -> None:
    """Send one write and wait for its long-running operation. A refusal or a failed operation is the error
    errors_explained makes of Azure's answer; once the write was sent, anything that leaves its result unread
    is OutcomeUnknown; Ctrl-C or SIGTERM meanwhile re-raises Interrupted with `during` set."""
    from azure.core.exceptions import AzureError as SdkError
    from azure.core.exceptions import HttpResponseError, ServiceResponseError
    from azure.core.polling.base_polling import OperationFailed

    def unknown(why: str, hint: str | None = None) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"{doing} was sent, but its result could not be read ({why}): the change may have been made;"
            " running the command again shows whether it was, and finishes it if not",
            hint=hint,
        )

    with errors_explained(_subject(resource_group, name), arm, resource_group, ROLE_TO_CHANGE):
        try:
            poller = begin(AdaptivePolling(on_wait, f"waiting for {doing} to finish", arm.polls))
        except ServiceResponseError as error:
            raise unknown(f"no answer came: {error}") from None
        except Interrupted as interrupted:
            interrupted.during = doing
            raise
        try:
            poller.result()
        except HttpResponseError as error:
            if isinstance(error.__cause__, OperationFailed):
                raise
            raise unknown(f"reading the operation's status failed: {error.status_code or error}") from None
        except SdkError as error:
            raise unknown(f"reading the operation's status failed: {error}") from None
        except TimedOut as timed_out:
            raise unknown(timed_out.message, timed_out.hint) from None
        except Interrupted as interrupted:
            interrupted.during = doing
            raise


def signed_in_admin(arm: Arm) -> EntraAdmin:
    """The principal the Resource Manager credential signs in as, from its token's claims (oid; upn for a
    user, appid for an application or managed identity), as an admin to add. The token is never shown."""
    from provision.azure.imds import decode_claims

    claims = decode_claims(arm.credential.get_token(arm.scope).token)
    if claims is None or not claims.oid:
        raise NotFound("the signed-in principal's token carries no object id (oid claim)")
    user = claims.upn or claims.unique_name
    if user:
        return EntraAdmin(claims.oid.lower(), user, "User", claims.tid)
    if not claims.appid:
        raise NotFound("the signed-in principal's token names neither a user (upn) nor an application (appid)")
    return EntraAdmin(claims.oid.lower(), claims.appid, "ServicePrincipal", claims.tid)


def admin_login(client: PostgreSQLManagementClient, arm: Arm, resource_group: str, name: str) -> AdminLogin:
    """How the principal Resource Manager signs in as logs in to the server as its Entra admin: one read of
    the server and its admins."""
    return admin_login_of(read_server(client, arm, resource_group, name), signed_in_admin(arm))
