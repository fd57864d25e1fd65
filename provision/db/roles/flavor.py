"""Which Azure flavor answers, as which admin, and what that admin may do: one query."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provision.db.roles.sql_text import rows
from provision.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("provision.db")

FLAVORS = ("single", "flexible")
EVIDENCE = {"single": "role azure_ad_user", "flexible": "function pgaadauth_create_principal_with_oid"}


@dataclass(frozen=True)
class Server:
    flavor: str
    detected_by: str  # what told the flavor apart, for the output
    admin: str
    database: str
    reads_verifiers: bool  # superuser: may read pg_authid (never on Azure)
    grants_connect: bool  # the admin may grant CONNECT on this database
    public_connect: bool  # PUBLIC has CONNECT on this database

    def fields(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "detectedBy": self.detected_by, "database": self.database}


def detect(conn: psycopg.Connection, wanted: str) -> Server:
    """The flavor, from one query: Flexible has pgaadauth_create_principal_with_oid, Single has azure_ad_user."""
    (row,) = rows(conn, "detect", "server")
    present = [flavor for flavor in FLAVORS if row[flavor]]
    if wanted == "auto":
        if len(present) == len(FLAVORS):
            raise InvalidInput(
                f"this server has both the {EVIDENCE['single']} (Single Server) and the {EVIDENCE['flexible']}"
                " (Flexible Server): choose one with --flavor"
            )
        if not present:
            raise NotFound(
                f"this server has neither the {EVIDENCE['flexible']} (Flexible Server) nor the"
                f" {EVIDENCE['single']} (Single Server)",
                hint="Is Microsoft Entra authentication enabled on the server, and is --admin-user its Entra"
                " administrator? On Flexible Server, connect to the postgres database (--database postgres).",
            )
        flavor, detected_by = present[0], f"found {EVIDENCE[present[0]]}"
    elif wanted in present:
        flavor, detected_by = wanted, f"--flavor {wanted} ({EVIDENCE[wanted]} present)"
    else:
        raise NotFound(f"--flavor {wanted}: this server has no {EVIDENCE[wanted]}")
    log.info("flavor %s: %s", flavor, detected_by)
    return Server(
        flavor,
        detected_by,
        row["admin"],
        row["database"],
        row["reads_verifiers"],
        row["grants_connect"],
        row["public_connect"],
    )
