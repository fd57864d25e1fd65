"""What the server says about a role and about the groups it is to join."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provision.db.roles.flavor import Server
from provision.db.roles.request import SINGLE_ADMIN_GROUP, SINGLE_GROUP
from provision.db.roles.sql_text import rows

if TYPE_CHECKING:
    import psycopg

CLIENT_ID_RECORD = "provision: client id "  # the role comment that records a Single Server role's client id


@dataclass(frozen=True)
class Dependency:
    """Something a role owns or holds privileges on (pg_shdepend)."""

    owned: bool
    database: str | None  # None: a shared object (a database, a tablespace)
    here: bool  # in the connected database or shared, so this connection can act on it
    description: str | None  # only where this connection can see the catalogs


@dataclass(frozen=True)
class RoleState:
    name: str
    exists: bool = False
    entra: bool = False  # Single: member of azure_ad_user; Flexible: registered by pgaadauth
    can_login: bool = False
    member_of: tuple[str, ...] = ()
    connect_granted: bool = False  # an explicit CONNECT grant on the connected database
    admin_has_privileges: bool = False  # the admin may act as the role (REASSIGN/DROP OWNED need it)
    object_id: str | None = None  # Flexible: the registered object id
    principal_type: str | None = None  # Flexible: service, user, group
    administrator: bool = False  # an Entra admin of the server, which Azure's control plane manages
    verifier: str | None = None  # Single: the stored password verifier, when the admin may read it
    recorded_client_id: str | None = None  # Single: the client id provision recorded when it created the role
    dependencies: tuple[Dependency, ...] = ()

    @property
    def owned(self) -> list[Dependency]:
        return [dependency for dependency in self.dependencies if dependency.owned]


@dataclass(frozen=True)
class Reached:
    """A role that membership in a requested group reaches: the group itself or one it is (transitively)
    a member of, with what that role can do."""

    path: tuple[str, ...]  # the requested group first, this role last
    can_login: bool
    powers: tuple[str, ...]  # SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS
    grantable: bool  # the admin may grant this role (on 16+: it holds ADMIN OPTION on it)

    @property
    def group(self) -> str:
        return self.path[0]

    @property
    def role(self) -> str:
        return self.path[-1]


def read_role(conn: psycopg.Connection, server: Server, name: str) -> RoleState:
    found = rows(conn, "role_state", "role", {"role": name})
    if not found:
        return RoleState(name)
    (row,) = found
    member_of = tuple(row["member_of"])
    dependencies = tuple(
        Dependency(dep["owned"], dep["database"], dep["here"], dep["object"])
        for dep in rows(conn, "role_state", "dependencies", {"oid": row["oid"]})
    )
    common = {
        "exists": True,
        "can_login": row["can_login"],
        "member_of": member_of,
        "connect_granted": row["connect_granted"],
        "admin_has_privileges": row["admin_has_privileges"],
        "dependencies": dependencies,
    }
    if server.flavor == "flexible":
        principals = rows(conn, "role_state", "principal", {"role": name})
        principal = principals[0] if principals else {}
        return RoleState(
            name,
            entra=bool(principal),
            object_id=principal.get("objectid"),
            principal_type=principal.get("principaltype"),
            administrator=bool(principal.get("isadmin")),
            **common,
        )
    verifier = None
    if server.reads_verifiers:
        (stored,) = rows(conn, "role_state", "verifier", {"role": name})
        verifier = stored["rolpassword"]
    description = row["description"] or ""
    return RoleState(
        name,
        entra=SINGLE_GROUP in member_of,
        verifier=verifier,
        recorded_client_id=description.removeprefix(CLIENT_ID_RECORD)
        if description.startswith(CLIENT_ID_RECORD)
        else None,
        administrator=SINGLE_ADMIN_GROUP in member_of,
        **common,
    )


def read_groups(conn: psycopg.Connection, groups: tuple[str, ...]) -> list[Reached]:
    """Every role the named groups reach, themselves included; a group that does not exist reaches nothing."""
    if not groups:
        return []
    return [
        Reached(tuple(row["path"]), row["can_login"], tuple(row["powers"]), row["grantable"])
        for row in rows(conn, "role_state", "groups", {"roles": list(groups)})
    ]


def entra_admins(conn: psycopg.Connection, server: Server) -> frozenset[str]:
    """Flexible Server's Entra administrators (pgaadauth's isadmin). Single Server's are the members of
    azure_ad_admin, which read_groups reaches."""
    if server.flavor != "flexible":
        return frozenset()
    return frozenset(row["rolname"] for row in rows(conn, "principals", "flexible") if row.get("isadmin"))
