"""`provision check`: the walkthrough's C# program made into a doctor.

It takes the same two steps (a token from the metadata service, a connection with the token as the
password, `SELECT version()`) and, when one fails, names the step and the most likely cause with
the evidence for it: what the metadata service or the server said, and the token's claims."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provision.azure import imds
from provision.cloud import CLOUDS, Cloud
from provision.db.target import Target, open_connection
from provision.logs import redact
from provision.naming import argument, on_command_line

log = logging.getLogger(__name__)

TOKEN_STEP = "Getting access token from Azure Instance Metadata service..."
CONNECT_STEP = "Opening connection using access token..."
STEP_NAMES = {"token": "getting an access token", "connect": "opening a connection with the access token"}

# Azure Database for PostgreSQL host names per cloud (Single and Flexible Server share them).
SERVER_DOMAINS = {
    ".postgres.database.azure.com": "AzureCloud",
    ".postgres.database.chinacloudapi.cn": "AzureChinaCloud",
    ".postgres.database.usgovcloudapi.net": "AzureUSGovernment",
}

# What libpq and the server say, by cause (FIREWALL, DROPPED and tls_problem serve the admin's login
# too). Single Server's gateway asks for <username@hostname>.
_SINGLE_SERVER_USER = re.compile(r"username@hostname|user@server|<username@", re.IGNORECASE)
# A session that the server or the network dropped speaks of SSL too ("SSL SYSCALL error: EOF
# detected", "SSL error: unexpected eof while reading"): that is no TLS trust problem.
DROPPED = re.compile(
    r"closed the connection unexpectedly|SSL connection has been closed unexpectedly|SSL SYSCALL error"
    r"|unexpected eof|EOF detected|connection reset by peer",
    re.IGNORECASE,
)
_TLS = re.compile(r"\bSSL\b|\bTLS\b|certificate", re.IGNORECASE)
_UNREACHABLE = re.compile(
    r"connection refused|failed to resolve host|could not translate host name|timeout expired|timed out"
    r"|no route to host|network is unreachable",
    re.IGNORECASE,
)
FIREWALL = re.compile(r"no pg_hba\.conf entry", re.IGNORECASE)
_DATABASE_MISSING = re.compile(r'database "[^"]*" does not exist', re.IGNORECASE)
_AUTHENTICATION = re.compile(r"authentication failed|access token|\btoken\b", re.IGNORECASE)
_EXPIRED = re.compile(r"expired", re.IGNORECASE)
_AUDIENCE = re.compile(r"audience", re.IGNORECASE)
_WANTED_RESOURCE = re.compile(r'resource "([^"]+)"')
# Flexible Server's words for a role registered for another object, or as a user or group (see the
# emulator's gateway for where they were seen).
_OID_MISMATCH = re.compile(r"oid mismatch for role\[", re.IGNORECASE)
_APP_TOKEN_FOR_USER = re.compile(r"cannot generate AAD_AUTH_TOKENTYPE_APP_USER tokens", re.IGNORECASE)


def tls_problem(message: str) -> bool:
    """Whether libpq's message is about TLS itself (trust, host name, a server without TLS), not a dropped session."""
    return bool(_TLS.search(message)) and not DROPPED.search(message)


@dataclass(frozen=True)
class Diagnosis:
    step: str  # token | connect
    cause: str  # a stable code, e.g. imds_unreachable, token_rejected, tls
    summary: str  # what is wrong, in one line
    evidence: dict[str, str]  # what shows it: label -> value
    hint: str  # what to do

    def __post_init__(self) -> None:
        # What servers and libraries said goes out as it came, except anything shaped like a secret.
        object.__setattr__(self, "summary", redact(self.summary))
        object.__setattr__(self, "evidence", {label: redact(value) for label, value in self.evidence.items()})

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "cause": self.cause,
            "message": self.summary,
            "evidence": self.evidence,
            "hint": self.hint,
        }


@dataclass
class CheckReport:
    target: Target
    client_id: str | None
    cloud: Cloud
    claims: imds.TokenClaims | None = None
    server_version: str | None = None
    diagnosis: Diagnosis | None = None

    @property
    def connected(self) -> bool:
        return self.server_version is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "host": self.target.host,
            "port": self.target.port,
            "database": self.target.database,
            "user": self.target.user,
            "sslmode": self.target.sslmode,
            "clientId": self.client_id,
            "resource": self.cloud.database_resource,
            "claims": self.claims.as_dict() if self.claims else None,
            "serverVersion": self.server_version,
            "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
        }


def check(
    target: Target, client_id: str | None, cloud: Cloud, on_step: Callable[[str], None] = lambda step: None
) -> CheckReport:
    """Get a token, connect with it and ask for the server's version; diagnose the step that fails."""
    import psycopg

    report = CheckReport(target, client_id, cloud)
    on_step(TOKEN_STEP)
    try:
        token = imds.access_token(cloud.database_resource, client_id)
    except imds.TokenUnavailable as error:
        report.diagnosis = diagnose_token(error, client_id, cloud)
        return report
    report.claims = imds.decode_claims(token.token)
    if report.claims:
        log.info("token claims: %s", report.claims.as_dict())
    on_step(CONNECT_STEP)
    try:
        with open_connection(target, token.token) as connection:
            row = connection.execute("SELECT version()").fetchone()
    except psycopg.Error as error:
        report.diagnosis = diagnose_connection(error, target, report.claims, cloud)
        return report
    report.server_version = str(row[0]) if row else ""
    return report


def diagnose_token(error: imds.TokenUnavailable, client_id: str | None, cloud: Cloud) -> Diagnosis:
    evidence = {
        "metadata endpoint": imds.endpoint(),
        "identity": f"client id {client_id}" if client_id else "system-assigned",
        "resource": cloud.database_resource,
        "message": error.detail,
    }
    hint = error.hint or ""
    if error.cause == "resource_unknown":
        hint = (
            f"The token resource comes from {argument('cloud')} (now {cloud.name}); pick the server's cloud: "
            + ", ".join(known.name for known in CLOUDS.values())
        )
    return Diagnosis("token", error.cause, error.message, evidence, hint)


def diagnose_connection(
    error: Exception, target: Target, claims: imds.TokenClaims | None, cloud: Cloud, now: float | None = None
) -> Diagnosis:
    """The most likely reason a connection with a token failed, from libpq's message and the claims."""
    said = _server_message(str(error))
    evidence = {"message": said, "server": f"{target.host}:{target.port}", "user": target.user}
    now = time.time() if now is None else now
    role = target.user.rpartition("@")[0] or target.user

    def found(cause: str, summary: str, hint: str, *extra: tuple[str, str | None]) -> Diagnosis:
        evidence.update((label, value) for label, value in extra if value)
        return Diagnosis("connect", cause, summary, evidence, hint)

    if _UNREACHABLE.search(said):
        return found(
            "server_unreachable",
            f"no PostgreSQL server answered at {target.host}:{target.port}",
            f"Check {argument('host')} and {argument('port')}, and that the server's networking (firewall rules,"
            " private endpoint, virtual network) lets this VM in.",
        )
    if FIREWALL.search(said):
        return found(
            "firewall",
            "the server's firewall does not let this machine in",
            "Add a firewall rule for this VM's outbound address, or reach the server through its virtual network.",
        )
    if DROPPED.search(said):
        return found(
            "connection_dropped",
            "the server closed the connection before the login finished",
            "A server restart, a failover or a network device dropped the session: try again. If it keeps"
            " happening, check the server's state and its connection limits.",
        )
    if tls_problem(said):
        return found(
            "tls",
            "the TLS connection to the server failed",
            _tls_hint(said, target),
            ("sslmode", target.sslmode),
            ("sslrootcert", target.trust_store),
        )
    if _SINGLE_SERVER_USER.search(said):
        return found(
            "single_server_user",
            f"Single Server wants the user as ROLE@SERVERNAME, not {target.user!r}",
            f"Pass {argument('user', target.user + '@' + (_server_name(target.host) or 'SERVERNAME'))}.",
        )
    if _DATABASE_MISSING.search(said):
        return found(
            "database_missing",
            f"the login worked, but there is no database {target.database!r}",
            f"Pass {argument('database')} with an existing database (every server has postgres).",
        )
    oid = claims.oid if claims and claims.oid else "OID"
    remap = _role_command("create", target, role, ("object-id", oid), ("replace", None))
    if _OID_MISMATCH.search(said):
        return found(
            "oid_mismatch",
            f"role {role!r} is mapped to another Entra object than this token's identity (oid {oid})",
            f"Use the identity the role was made for ({argument('client_id')}), or see its object id with"
            f" {_role_command('show', target, role)} and map the role to this identity with {remap}.",
            *_claim_evidence(claims),
        )
    if _APP_TOKEN_FOR_USER.search(said):
        return found(
            "token_type",
            f"role {role!r} is registered as a user or group, and a managed identity's token is a service"
            " principal's (app) token",
            f"Register the role as a service principal: {remap} (provision registers roles as 'service').",
            *_claim_evidence(claims),
        )
    if not _AUTHENTICATION.search(said):
        return found(
            "connection_failed",
            "the server refused the connection",
            "The message above is what libpq or the server reported.",
            *_claim_evidence(claims),
        )
    expires = claims.exp if claims else None
    if _EXPIRED.search(said) or (expires is not None and expires <= now):
        return found(
            "token_expired",
            "the access token had expired" + (f" at {_utc(expires)}" if expires is not None else ""),
            "Metadata service tokens are valid for about 24 hours, so an expired token means this machine's"
            " clock is wrong (check NTP) or a token was kept too long.",
            ("token expires", _utc(expires) if expires is not None else None),
            ("this machine's clock", _utc(now)),
        )
    audience = _audience_problem(said, target, claims, cloud)
    if audience:
        return found(
            "audience_mismatch",
            audience,
            _cloud_hint(said, cloud),
            *_claim_evidence(claims),
            ("expected audience", cloud.database_resource),
        )
    appid, oid = (claims.appid, claims.oid) if claims and claims.appid and claims.oid else ("APPID", "OID")
    hint = (
        f"The role {role!r} must exist and be mapped to this identity: compare the token's oid (Flexible Server)"
        f" or appid (Single Server) with {_role_command('show', target, role)}"
        " (on Single Server it shows the client id provision recorded; the password itself cannot be read back)."
        " To map the role to this identity: "
        + _role_command("create", target, role, ("client-id", appid), ("object-id", oid), ("replace", None))
        + "."
    )
    server = _server_name(target.host)
    if server and "@" not in target.user:
        hint += f" On a Single Server the user is ROLE@SERVERNAME: {argument('user', f'{target.user}@{server}')}."
    return found(
        "token_rejected",
        f"the server rejected the token for {target.user!r}: the role is missing or mapped to another identity",
        hint,
        *_claim_evidence(claims),
    )


def _server_message(text: str) -> str:
    """libpq's message without the 'connection failed: connection to server at ... failed:' preamble."""
    message = re.sub(r"^connection failed:\s*", "", text.strip())
    message = re.sub(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed:\s*', "", message)
    return " ".join(message.split())


def _claim_evidence(claims: imds.TokenClaims | None) -> list[tuple[str, str | None]]:
    if claims is None:
        return [("token", "not a JWT: its claims cannot be read")]
    return [
        ("token appid", claims.appid),
        ("token oid", claims.oid),
        ("token aud", claims.aud),
        ("token expires", _utc(claims.exp) if claims.exp is not None else None),
    ]


def _audience_problem(said: str, target: Target, claims: imds.TokenClaims | None, cloud: Cloud) -> str | None:
    audience = claims.aud if claims else None
    server_cloud = _server_cloud(target.host)
    if server_cloud and server_cloud != cloud.name:
        return f"the server is in {server_cloud}, but the token is for {cloud.name} ({audience or '?'})"
    if audience and audience.rstrip("/") != cloud.database_resource.rstrip("/"):
        return f"the token is for {audience}, not for {cloud.name}'s databases ({cloud.database_resource})"
    if _AUDIENCE.search(said):
        wanted = _WANTED_RESOURCE.search(said)
        wants = f"; it wants tokens for {wanted[1]}" if wanted else ""
        return f"the server does not accept the token's audience {audience or '?'}{wants}"
    return None


def _cloud_hint(said: str, cloud: Cloud) -> str:
    wanted = _WANTED_RESOURCE.search(said)
    owner = next(
        (known.name for known in CLOUDS.values() if wanted and known.database_resource == wanted[1].rstrip("/")), None
    )
    if owner and owner != cloud.name:
        return f"Pass {argument('cloud', owner)} (now {cloud.name}): the token resource follows the cloud."
    return f"Pick the server's cloud with {argument('cloud')} (now {cloud.name}); the token resource follows it."


def _server_cloud(host: str) -> str | None:
    lowered = host.lower().rstrip(".")
    return next((name for domain, name in SERVER_DOMAINS.items() if lowered.endswith(domain)), None)


def _server_name(host: str) -> str | None:
    return host.split(".", 1)[0] if _server_cloud(host) else None


def _tls_hint(said: str, target: Target) -> str:
    if "SSL connection is required" in said:
        return f"The server takes TLS connections only: use {argument('sslmode', 'verify-full')} (the default)."
    if "does not support SSL" in said:
        return f"The server offers no TLS. Azure servers always do: check {argument('host')} and {argument('port')}."
    if "root certificate file" in said:
        return (
            f"{target.trust_store} ({argument('sslrootcert')}) cannot be read: pass the CA certificate file of"
            " the server."
        )
    return (
        f"The server's certificate does not verify against {target.trust_store or 'the trusted CAs'}, or its name"
        f" is not {argument('host')}: this may not be the server you meant. Use the server's full host name, and"
        f" {argument('sslrootcert')} with the CA that signed its certificate if it is not a public one (Azure's"
        " chain to DigiCert Global Root G2 and Microsoft RSA Root Certificate Authority 2017, in the system store)."
    )


def _role_command(verb: str, target: Target, role: str, *options: tuple[str, str | None]) -> str:
    """The `provision role` command the server's Entra admin runs to see or fix a role: its whole command
    line from the CLI; from the library, whose caller passes no options, the command and the values."""
    values = [
        ("host", target.host),
        *([("port", str(target.port))] if target.port != 5432 else []),
        ("admin-user", "ADMIN"),
        ("name", role),
        *options,
    ]
    if on_command_line():
        line = " ".join(f"--{option}" if value is None else f"--{option} {value}" for option, value in values)
        return f"`provision role {verb} {line}`"
    return (
        f"`provision role {verb}` ("
        + ", ".join(option if value is None else f"{option} {value}" for option, value in values)
        + ")"
    )


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
