"""Connecting as the server's Microsoft Entra administrator.

The password is an access token for the selected cloud's database resource, from the same credential
chain as Resource Manager (`admin_client_id` picks a managed identity), or PGPASSWORD when it is set.
It reaches libpq as a keyword argument: never in argv, a conninfo string, a log line or a message."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from provision.cloud import Cloud
from provision.db.doctor import FIREWALL, tls_problem
from provision.db.target import Target, open_connection
from provision.errors import DatabaseError, Forbidden, ProvisionError
from provision.logs import redact

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("provision.db")

# Phrases in libpq's and Azure's messages that mean the server refused the credentials (a failed
# connection carries no SQLSTATE, only text).
_REFUSED_LOGIN = ("authentication failed", "token", "invalid username")


def admin_password(cloud: Cloud, admin_client_id: str | None) -> tuple[str, str]:
    """The administrator's password and, for messages, where it came from."""
    password = os.environ.get("PGPASSWORD")
    if password:
        return password, "PGPASSWORD"
    from provision.azure.credentials import default_credential, token_for

    credential = default_credential(managed_identity_client_id=admin_client_id)
    token = token_for(credential, cloud.database_scope, "the database administrator")
    return token, f"an access token for {cloud.database_resource}"


@contextlib.contextmanager
def connect(target: Target, cloud: Cloud, admin_client_id: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection as the administrator (commands open their own transaction), closed on exit."""
    import psycopg

    password, source = admin_password(cloud, admin_client_id)
    log.info("connecting to %s with %s", target.describe(), source)
    try:
        connection = open_connection(target, password, autocommit=True)
    except psycopg.Error as error:
        raise connection_error(str(error), target, password, source) from None
    with connection:
        yield connection


def connection_error(message: str, target: Target, password: str, source: str) -> ProvisionError:
    """A failed connection as a message that says what to check, with the password nowhere in it."""
    text = redact(message, password)
    text = text.removeprefix("connection failed: ").strip()
    if FIREWALL.search(text):
        return DatabaseError(
            f"{target.host}:{target.port} does not let this machine in: {text}",
            hint="Add a firewall rule on the server for this machine's outbound address, or reach it through its"
            " virtual network.",
        )
    if any(phrase in text.lower() for phrase in _REFUSED_LOGIN):
        return Forbidden(
            f"{target.host}:{target.port} refused the administrator login {target.user!r}: {text}",
            hint=f"The password was {source}. --admin-user must be the server's Microsoft Entra administrator"
            " (Single Server: name@servername), and the token must be for this server's cloud (--cloud)"
            " and tenant.",
        )
    hint = None
    if tls_problem(text):
        hint = "Check --sslmode and --sslrootcert (the CA that signed the server certificate)."
    return DatabaseError(f"could not connect to {target.host}:{target.port} as {target.user!r}: {text}", hint=hint)
