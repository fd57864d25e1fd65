"""What the user asked for, checked before anything touches the database: the role's name, the
identity it maps to, and the group roles it joins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provision import validate
from provision.errors import InvalidInput

SINGLE_GROUP = "azure_ad_user"
SINGLE_ADMIN_GROUP = "azure_ad_admin"  # Single Server's Entra administrators
# Azure's own roles: azure_pg_admin holds the server admins, azuresu is Microsoft's superuser
# (learn.microsoft.com/azure/postgresql/security/security-access-control); azure_superuser is its
# Single Server name. "public" and "none" PostgreSQL itself reserves (CREATE ROLE refuses them).
AZURE_ADMIN_ROLES = frozenset({"azure_pg_admin", SINGLE_ADMIN_GROUP, "azuresu", "azure_superuser"})
RESERVED_NAMES = AZURE_ADMIN_ROLES | {SINGLE_GROUP, "public", "none"}
PREDEFINED_PREFIX = "pg_"  # PostgreSQL reserves the prefix for its predefined roles
# The predefined roles that read or write the server's files or run programs as the server's OS user
# (PostgreSQL docs, "Predefined Roles"): never granted, whatever is allowed.
OS_ROLES = frozenset({"pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"})


@dataclass(frozen=True)
class IdentityIds:
    """Which managed identity a role maps to: Single Server keys on the client id, Flexible on the object id."""

    client_id: str | None = None
    object_id: str | None = None

    def __post_init__(self) -> None:
        # Tokens carry ids in lower case: a client id stored in upper case would never match one.
        object.__setattr__(self, "client_id", validate.optional_guid(self.client_id, "--client-id"))
        object.__setattr__(self, "object_id", validate.optional_guid(self.object_id, "--object-id"))

    def fields(self) -> dict[str, Any]:
        return {"clientId": self.client_id, "objectId": self.object_id}


def require_ids(flavor: str, identity: IdentityIds) -> None:
    """InvalidInput when the flavor needs the id the user did not give."""
    if flavor == "single" and not identity.client_id:
        raise InvalidInput(
            "Single Server maps a role to the identity's client id: give --client-id,"
            " or --identity/--identity-id to read it from Resource Manager"
        )
    if flavor == "flexible" and not identity.object_id:
        raise InvalidInput(
            "Flexible Server maps a role to the identity's object (principal) id: give --object-id,"
            " or --identity/--identity-id to read it from Resource Manager"
        )


def refuse_admin_name(name: str, admin_user: str, flavor: str) -> None:
    """InvalidInput when `name` is the administrator's own role; Single Server logs it in as name@server."""
    admin_role = admin_user.rpartition("@")[0] if flavor == "single" and "@" in admin_user else admin_user
    if name in (admin_user, admin_role):
        raise InvalidInput(f"--name {name!r} is the administrator --admin-user {admin_user!r} itself")


@dataclass(frozen=True)
class RoleRequest:
    name: str
    identity: IdentityIds
    member_of: tuple[str, ...] = ()
    replace: bool = False
    allow_predefined: tuple[str, ...] = ()  # the pg_* roles --member-of may name

    def __post_init__(self) -> None:
        validate.role_name(self.name)
        if self.name in RESERVED_NAMES or self.name.startswith(PREDEFINED_PREFIX):
            raise InvalidInput(f"--name {self.name!r}: the name is reserved by Azure or PostgreSQL")
        for allowed in self.allow_predefined:
            if not allowed.startswith(PREDEFINED_PREFIX):
                raise InvalidInput(f"--allow-predefined {allowed!r}: not a predefined (pg_*) role")
            if allowed in OS_ROLES:
                raise InvalidInput(_os_role(allowed, "--allow-predefined"))
            if allowed not in self.member_of:
                raise InvalidInput(f"--allow-predefined {allowed!r}: not among the --member-of roles")
        for group in self.member_of:
            validate.role_name(group, "--member-of")
            if group in OS_ROLES:
                raise InvalidInput(_os_role(group, "--member-of"))
            if group in RESERVED_NAMES:
                raise InvalidInput(f"--member-of {group!r}: Azure's own role, never granted by provision")
            if group.startswith(PREDEFINED_PREFIX) and group not in self.allow_predefined:
                raise InvalidInput(
                    f"--member-of {group!r}: a PostgreSQL predefined role; name it with --allow-predefined"
                    f" {group} as well to grant it"
                )
        if self.name in self.member_of:
            raise InvalidInput(f"--member-of {self.name!r}: a role cannot be a member of itself")


def _os_role(group: str, option: str) -> str:
    return f"{option} {group!r}: it reaches the server's operating system; provision never grants it"
