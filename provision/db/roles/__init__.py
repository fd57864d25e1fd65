"""The PostgreSQL role a managed identity logs in as, on Azure Database for PostgreSQL Single and
Flexible Server.

A command detects the flavor (flavor), reads the role and the groups it is to join (state), plans
Steps from what was asked (request) and what is there (planning, pure), and runs them in one bounded,
locked transaction (commands). All SQL text lives in the package provision.sql (sql_text loads it)."""

from provision.db.roles.commands import create_role, drop_role, list_roles, show_role
from provision.db.roles.request import IdentityIds, RoleRequest, refuse_admin_name, require_ids

__all__ = [
    "IdentityIds",
    "RoleRequest",
    "create_role",
    "drop_role",
    "list_roles",
    "refuse_admin_name",
    "require_ids",
    "show_role",
]
