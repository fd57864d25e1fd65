"""Where and how to connect: the libpq parameters every command shares, validated up front, and the
one place that opens a connection with them."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision import deadline, validate
from provision.errors import InvalidInput
from provision.naming import argument

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds for one connection attempt, within what is left of the command's budget
# TCP keepalives: a server that vanishes mid-session (failover, a dropped NAT entry) is noticed
# after about idle + interval * count = 60 s instead of the kernel's two hours, and an idle session
# outlives Azure Load Balancer's default 4-minute idle timeout, after which it drops flows silently
# (learn.microsoft.com/azure/load-balancer/load-balancer-tcp-reset).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
# "If GSSAPI encryption is possible, that will be used in preference to SSL encryption, regardless of the
# value of sslmode" (PostgreSQL's libpq docs, sslmode): on a machine with a Kerberos ticket, a libpq built
# with GSSAPI (the system's psql, psycopg on the system's libpq) would send the token to a server whose
# certificate was never checked. Azure's servers offer no GSSAPI encryption: turning it off loses nothing.
NO_GSSAPI_ENCRYPTION = {"gssencmode": "disable"}


@dataclass(frozen=True)
class Target:
    """`sslrootcert` is the CA file as given (None: PGSSLROOTCERT, then the system's roots); `trust_store`
    is the file libpq verifies the server with (None with --sslmode require and no CA given)."""

    host: str
    user: str
    port: int = 5432
    database: str = "postgres"
    sslmode: str = "verify-full"
    sslrootcert: str | None = None
    trust_store: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        validate.host(self.host)
        validate.port(self.port)
        validate.sslmode(self.sslmode)
        if not self.user:
            raise InvalidInput(f"{argument('user')}: a user name cannot be empty")
        if not self.database or "\x00" in self.database:
            raise InvalidInput(f"{argument('database', repr(self.database))}: expected a database name")
        object.__setattr__(self, "trust_store", trust_store_for(self.sslmode, self.sslrootcert))

    @property
    def unverified_warning(self) -> str | None:
        """What an impostor could do under a weaker --sslmode than verify-full, or None when the server is verified."""
        if self.sslmode == "verify-full":
            return None
        gap = (
            "the server's certificate is not verified"
            if self.sslmode == "require"
            else "the server's host name is not checked, so any server with a certificate from a trusted CA passes"
        )
        return (
            f"{argument('sslmode', self.sslmode)}: {gap}. A server posing as {self.host} would receive the password:"
            " an access token is a bearer credential that every server in the tenant accepts until it expires."
            f" Use {argument('sslmode', 'verify-full')} (the default)."
        )

    def connect_kwargs(self, password: str) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect. The password travels here, never in a conninfo string."""
        budget = deadline.current()
        budget.check(f"connecting to {self.describe()}")
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": password,
            "sslmode": self.sslmode,
            # libpq counts whole seconds (at least 2); 0 would mean no limit at all.
            "connect_timeout": max(2, math.ceil(budget.cap(CONNECT_TIMEOUT))),
            "application_name": "provision",
            **NO_GSSAPI_ENCRYPTION,
            **KEEPALIVES,
        }
        if self.trust_store:
            kwargs["sslrootcert"] = self.trust_store
        return kwargs

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def open_connection(target: Target, password: str, **kw: Any) -> psycopg.Connection[Any]:
    """psycopg.connect with the target's parameters (`kw` adds to them or overrides them); the password
    goes as a keyword, never inside a conninfo string."""
    import psycopg

    warn_if_unverified(target)
    log.info("connecting to %s (sslmode=%s)", target.describe(), target.sslmode)
    try:
        return psycopg.connect(**{**target.connect_kwargs(password), **kw})
    except psycopg.OperationalError:
        # connect_timeout was cut to what was left of the budget: then the budget is what ran out.
        deadline.current().check(f"connecting to {target.host}:{target.port}")
        raise


def warn_if_unverified(target: Target) -> None:
    if target.unverified_warning:
        log.warning("%s", target.unverified_warning)


def system_trust_store() -> str | None:
    """The system's CA bundle (SSL_CERT_FILE, else OpenSSL's default file: Debian's ca-certificates.crt),
    else certifi's; both hold the roots Azure Database for PostgreSQL chains to (DigiCert Global Root G2,
    Microsoft RSA Root Certificate Authority 2017).

    A file, not libpq's `sslrootcert=system`: psycopg-binary's own OpenSSL looks for the system store in
    a directory of its build that does not exist on the machines it runs on, and psql before 16 does not
    know `system`."""
    import ssl

    cafile = ssl.get_default_verify_paths().cafile  # None when the file does not exist
    if cafile:
        return cafile
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


def trust_store_for(sslmode: str, sslrootcert: str | None) -> str | None:
    """The CA file libpq verifies the server with (None: sslmode require and no CA given); InvalidInput
    when there is none to verify with, or the file named does not exist."""
    given = sslrootcert or os.environ.get("PGSSLROOTCERT") or None
    if given == "system" or (given is None and sslmode != "require"):
        store = system_trust_store()
        if store is None:
            raise InvalidInput(
                f"{argument('sslmode', sslmode)}: this machine has no CA bundle to verify the server with;"
                f" pass {argument('sslrootcert')} (or PGSSLROOTCERT) with the CA file"
                " (for Azure: DigiCert Global Root G2)"
            )
        return store
    if given is not None and not Path(given).is_file():
        source = argument("sslrootcert", repr(given)) if given == sslrootcert else f"PGSSLROOTCERT {given!r}"
        raise InvalidInput(f"{source}: no such file (expected the CA certificate of the server)")
    return given
